"""What every handler does with its gRPC context: derive the upstream deadline, report attempts."""

from __future__ import annotations

import asyncio
from typing import Any, TypeAlias

import grpc

from seekwire.server.errors import ATTEMPTS_HEADER
from seekwire.server.telemetry.record import current_record
from seekwire.server.upstream.client import CallInfo

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


def caller_deadline(context: Context) -> float | None:
    """The caller's deadline on the event loop's clock, for the upstream call to honour."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return asyncio.get_running_loop().time() + remaining


def call_info(operation: str, model: str = "") -> CallInfo:
    """Describes an upstream call for telemetry, under the RPC's span."""
    record = current_record()
    return CallInfo(operation, model, record.otel_context if record is not None else None)


def report_attempts(context: Context, info: CallInfo) -> None:
    """Tells the caller (trailers) and the RPC's record how many upstream attempts it took."""
    context.set_trailing_metadata(((ATTEMPTS_HEADER, str(info.attempts)),))
    record = current_record()
    if record is not None:
        record.attempts = info.attempts
