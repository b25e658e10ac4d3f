"""What every handler does with its gRPC context: derive the upstream deadline, report attempts."""

from __future__ import annotations

import asyncio
from typing import Any, TypeAlias

import grpc

from seekwire.server.errors import ATTEMPTS_HEADER
from seekwire.server.upstream.client import CallInfo

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


def caller_deadline(context: Context) -> float | None:
    """The caller's deadline on the event loop's clock, for the upstream call to honour."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return asyncio.get_running_loop().time() + remaining


def report_attempts(context: Context, info: CallInfo) -> None:
    """Tells the caller (trailers) how many upstream attempts its call took."""
    context.set_trailing_metadata(((ATTEMPTS_HEADER, str(info.attempts)),))
