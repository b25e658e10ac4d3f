"""Turns whatever a handler raises into a gRPC status with google.rpc details.

Innermost interceptor: handlers and the upstream layer raise GatewayError or
UpstreamError; an unexpected exception becomes INTERNAL with a generic message
(its traceback goes to the log, never to the caller).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from seekwire.server.errors import GatewayError, as_gateway_error, internal
from seekwire.server.interceptors.wrapping import Handler, Streaming, Unary, rewrap

log = logging.getLogger(__name__)


def _as_gateway_error(exc: Exception, method: str) -> GatewayError:
    error = as_gateway_error(exc)
    if error is None:
        log.error("unhandled %s in %s", type(exc).__name__, method, exc_info=exc)
        error = internal(method.rsplit("/", 1)[-1])
    return error


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: GatewayError) -> None:
    status = error.to_status()
    await context.abort(status.code, status.details, status.trailing_metadata)


def _unary(method: str) -> Callable[[Unary], Unary]:
    def wrap(behavior: Unary) -> Unary:
        async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                return await behavior(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await _abort(context, _as_gateway_error(exc, method))

        return handle

    return wrap


def _streaming(method: str) -> Callable[[Streaming], Streaming]:
    def wrap(behavior: Streaming) -> Streaming:
        async def handle(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            try:
                async for response in behavior(request, context):
                    yield response
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await _abort(context, _as_gateway_error(exc, method))

        return handle

    return wrap


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        # Handlers are fixed per method, so each is wrapped once, not per call.
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = rewrap(handler, _unary(method), _streaming(method))
        self._wrapped[method] = (handler, wrapped)
        return wrapped
