"""Gateway outcomes as gRPC statuses with google.rpc details, and the one upstream mapping table."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final, NamedTuple

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from seekwire.server.upstream.errors import UpstreamError

DOMAIN: Final = "seekwire"
_DEFAULT_RETRY_DELAY: Final = 1.0

# design.md "Errors": every upstream outcome and the gRPC code the caller sees.
UPSTREAM_CODES: Final[Mapping[str, grpc.StatusCode]] = {
    "UPSTREAM_BAD_REQUEST": grpc.StatusCode.INVALID_ARGUMENT,  # 400, 422
    "UPSTREAM_REJECTED": grpc.StatusCode.INVALID_ARGUMENT,  # other 4xx
    "UPSTREAM_AUTH": grpc.StatusCode.INTERNAL,  # 401, 403: our key, not the caller's fault
    "UPSTREAM_NOT_FOUND": grpc.StatusCode.INTERNAL,  # 404: a misconfigured base URL
    "UPSTREAM_INSUFFICIENT_BALANCE": grpc.StatusCode.FAILED_PRECONDITION,  # 402
    "UPSTREAM_RATE_LIMITED": grpc.StatusCode.RESOURCE_EXHAUSTED,  # 429
    "UPSTREAM_SERVER_ERROR": grpc.StatusCode.UNAVAILABLE,  # 500 and other 5xx
    "UPSTREAM_BAD_GATEWAY": grpc.StatusCode.UNAVAILABLE,  # 502
    "UPSTREAM_OVERLOADED": grpc.StatusCode.UNAVAILABLE,  # 503
    "UPSTREAM_GATEWAY_TIMEOUT": grpc.StatusCode.UNAVAILABLE,  # 504
    "UPSTREAM_CONNECT_FAILED": grpc.StatusCode.UNAVAILABLE,
    "UPSTREAM_CONNECT_TIMEOUT": grpc.StatusCode.UNAVAILABLE,
    "UPSTREAM_CIRCUIT_OPEN": grpc.StatusCode.UNAVAILABLE,  # every endpoint failing: shed at once
    "UPSTREAM_STREAM_CUT": grpc.StatusCode.UNAVAILABLE,
    "UPSTREAM_STREAM_ERROR": grpc.StatusCode.UNAVAILABLE,
    "UPSTREAM_EMPTY_RESPONSE": grpc.StatusCode.UNAVAILABLE,
    "UPSTREAM_BAD_RESPONSE": grpc.StatusCode.UNAVAILABLE,
    "UPSTREAM_STALLED": grpc.StatusCode.DEADLINE_EXCEEDED,
    "UPSTREAM_FIRST_BYTE_TIMEOUT": grpc.StatusCode.DEADLINE_EXCEEDED,
    "UPSTREAM_QUEUE_TIMEOUT": grpc.StatusCode.DEADLINE_EXCEEDED,
    "UPSTREAM_TIMEOUT": grpc.StatusCode.DEADLINE_EXCEEDED,
    "DEADLINE_EXCEEDED": grpc.StatusCode.DEADLINE_EXCEEDED,
}
# Where a caller may usefully come back later.
_RETRYABLE: Final = frozenset(
    {"UPSTREAM_RATE_LIMITED", "UPSTREAM_OVERLOADED", "UPSTREAM_CIRCUIT_OPEN"}
)
ATTEMPTS_HEADER: Final = "x-seekwire-attempts"  # upstream attempts a call took


class GatewayError(Exception):
    """An outcome the caller receives as a gRPC status with ErrorInfo and optional details."""

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        *,
        metadata: Mapping[str, str] | None = None,
        retry_delay: float | None = None,
        violations: Iterable[tuple[str, str]] = (),
        quota_violations: Iterable[tuple[str, str]] = (),
        trailers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.metadata = dict(metadata or {})
        self.retry_delay = retry_delay
        self.violations = list(violations)
        self.quota_violations = list(quota_violations)
        self.trailers = trailers

    def to_proto(self) -> status_pb2.Status:
        """As google.rpc.Status: what travels in-band on a Converse stream."""
        details = [
            _pack(
                error_details_pb2.ErrorInfo(
                    reason=self.reason, domain=DOMAIN, metadata=self.metadata
                )
            )
        ]
        if self.retry_delay is not None:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(self.retry_delay * 1e9))
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        if self.violations:
            bad_request = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in self.violations
                ]
            )
            details.append(_pack(bad_request))
        if self.quota_violations:
            quota = error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(subject=s, description=d)
                    for s, d in self.quota_violations
                ]
            )
            details.append(_pack(quota))
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=details)

    def to_status(self) -> RpcStatus:
        """As a grpc.Status whose trailers carry the details (grpc-status-details-bin) and, with
        a retry delay, `grpc-retry-pushback-ms`, which gRPC's native client retries obey."""
        status = rpc_status.to_status(self.to_proto())
        trailers = (*status.trailing_metadata, *self.trailers)
        if self.retry_delay is not None:
            trailers += (("grpc-retry-pushback-ms", str(int(self.retry_delay * 1000))),)
        return RpcStatus(status.code, status.details, trailers)


class RpcStatus(NamedTuple):
    """What `context.abort` takes."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def from_upstream(error: UpstreamError) -> GatewayError:
    code = UPSTREAM_CODES.get(error.reason, grpc.StatusCode.UNAVAILABLE)
    metadata: dict[str, str] = {}
    if error.http_status is not None:
        metadata["upstreamStatus"] = str(error.http_status)
    if error.trace_id:
        metadata["upstreamTraceId"] = error.trace_id
    if error.error_type:
        metadata["upstreamErrorType"] = error.error_type
    trailers: tuple[tuple[str, str], ...] = ()
    if error.attempts:
        metadata["attempts"] = str(error.attempts)
        trailers = ((ATTEMPTS_HEADER, str(error.attempts)),)
    retry_delay = None
    if error.reason in _RETRYABLE:
        retry_delay = error.retry_after if error.retry_after is not None else _DEFAULT_RETRY_DELAY
    return GatewayError(
        code,
        error.reason,
        error.message,
        metadata=metadata,
        retry_delay=retry_delay,
        trailers=trailers,
    )


def invalid_argument(violations: list[tuple[str, str]]) -> GatewayError:
    fields = ", ".join(field for field, _ in violations[:5])
    return GatewayError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        f"invalid request: {fields}" + (" ..." if len(violations) > 5 else ""),
        violations=violations,
    )


def as_gateway_error(exc: Exception) -> GatewayError | None:
    """The status for an expected failure; None for a bug."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, UpstreamError):
        return from_upstream(exc)
    return None


def internal(what: str) -> GatewayError:
    return GatewayError(grpc.StatusCode.INTERNAL, "INTERNAL_ERROR", f"internal error in {what}")
