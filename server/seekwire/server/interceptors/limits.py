"""Admits each RPC under its caller's rate limits and settles token estimates with real usage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from seekwire.server.caller import current_caller
from seekwire.server.convert import usage_of
from seekwire.server.errors import GatewayError
from seekwire.server.interceptors.auth import HEALTH_PREFIX, REFLECTION_PREFIX
from seekwire.server.interceptors.wrapping import (
    Context,
    Streaming,
    Unary,
    WrappingInterceptor,
    abort,
)
from seekwire.server.limits import Admission, RateLimits, estimate_request, set_current_limits


class LimitsInterceptor(WrappingInterceptor):
    def __init__(self, limits: RateLimits) -> None:
        self._limits = limits

    def skips(self, method: str) -> bool:
        return method.startswith((HEALTH_PREFIX, REFLECTION_PREFIX))

    async def _admit(self, request: Any) -> Admission:
        """`request` is None for request-streaming RPCs: the stream takes a concurrency slot,
        and Converse meters each turn's request and tokens itself."""
        set_current_limits(self._limits)
        caller = current_caller()
        if request is None:
            return await self._limits.admit(caller, None, None, request=False)
        model = getattr(request, "model", None)
        # Requests that name a model are chat or FIM: their prompt is estimated and metered.
        estimate = estimate_request(request) if model is not None else None
        return await self._limits.admit(caller, model, estimate)

    def wrap_unary(self, behavior: Unary, method: str, request_streaming: bool) -> Unary:
        async def handle(request: Any, context: Context) -> Any:
            try:
                admission = await self._admit(None if request_streaming else request)
            except GatewayError as error:
                await abort(context, error)
            try:
                response = await behavior(request, context)
                usage = usage_of(response)
                if usage is not None:
                    await admission.settle(usage.total_tokens)
                return response
            finally:
                await admission.release()

        return handle

    def wrap_streaming(
        self, behavior: Streaming, method: str, request_streaming: bool
    ) -> Streaming:
        async def handle(request: Any, context: Context) -> AsyncIterator[Any]:
            try:
                admission = await self._admit(None if request_streaming else request)
            except GatewayError as error:
                await abort(context, error)
            try:
                async for response in behavior(request, context):
                    # Converse settles each turn itself.
                    usage = None if request_streaming else usage_of(response)
                    if usage is not None:
                        await admission.settle(usage.total_tokens)
                    yield response
            finally:
                await admission.release()

        return handle
