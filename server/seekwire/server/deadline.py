"""The caller's deadline, on the event loop's clock, for the upstream call to honour."""

from __future__ import annotations

import asyncio

import grpc


def caller_deadline(context: grpc.aio.ServicerContext[object, object]) -> float | None:
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return asyncio.get_running_loop().time() + remaining
