"""Failed calls as exceptions carrying the gRPC code and the decoded google.rpc details."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


class SeekwireError(Exception):
    """A call that did not succeed.

    `reason` and `metadata` come from google.rpc.ErrorInfo (e.g. UPSTREAM_OVERLOADED),
    `retry_delay` from RetryInfo (seconds), `violations` from BadRequest.
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        metadata: dict[str, str] | None = None,
        retry_delay: float | None = None,
        violations: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.reason = reason
        self.metadata = metadata or {}
        self.retry_delay = retry_delay
        self.violations = violations or []

    def __str__(self) -> str:
        head = self.code.name + (f" {self.reason}" if self.reason else "")
        text = f"{head}: {self.message}"
        if self.violations:
            text += " (" + "; ".join(f"{f}: {d}" for f, d in self.violations) + ")"
        if self.retry_delay is not None:
            text += f" (retry in {self.retry_delay:g}s)"
        return text


class InvalidArgument(SeekwireError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class FailedPrecondition(SeekwireError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class NotFound(SeekwireError):
    code = grpc.StatusCode.NOT_FOUND


class Unauthenticated(SeekwireError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(SeekwireError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(SeekwireError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(SeekwireError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(SeekwireError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(SeekwireError):
    code = grpc.StatusCode.CANCELLED


class Internal(SeekwireError):
    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[SeekwireError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        FailedPrecondition,
        NotFound,
        Unauthenticated,
        PermissionDenied,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Cancelled,
        Internal,
    )
}
_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _build(code: grpc.StatusCode, message: str, details: Iterable[any_pb2.Any]) -> SeekwireError:
    fields: dict[str, Any] = {}
    for detail in details:
        info = error_details_pb2.ErrorInfo()
        retry = error_details_pb2.RetryInfo()
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(info):
            fields["reason"] = info.reason
            fields["metadata"] = dict(info.metadata)
        elif detail.Unpack(retry):
            fields["retry_delay"] = retry.retry_delay.ToNanoseconds() / 1e9
        elif detail.Unpack(bad):
            fields["violations"] = [(v.field, v.description) for v in bad.field_violations]
    cls = _BY_CODE.get(code, SeekwireError)
    return cls(message, code=code, **fields)


def from_rpc_error(error: grpc.aio.AioRpcError) -> SeekwireError:
    status = rpc_status.from_call(error)
    details = status.details if status is not None else ()
    return _build(error.code(), error.details() or "", details)


def from_status(status: status_pb2.Status) -> SeekwireError:
    """For the in-band errors of Converse."""
    return _build(_CODES.get(status.code, grpc.StatusCode.UNKNOWN), status.message, status.details)
