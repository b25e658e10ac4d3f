"""Turns whatever a handler raises into a gRPC status with google.rpc details.

Innermost interceptor: handlers and the upstream layer raise GatewayError or
UpstreamError; an unexpected exception becomes INTERNAL with a generic message
(its traceback goes to the log, never to the caller).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from seekwire.server.errors import GatewayError, as_gateway_error, internal
from seekwire.server.interceptors.wrapping import (
    Context,
    Streaming,
    Unary,
    WrappingInterceptor,
    abort,
)

log = logging.getLogger(__name__)


def _as_gateway_error(exc: Exception, method: str) -> GatewayError:
    error = as_gateway_error(exc)
    if error is None:
        log.error("unhandled %s in %s", type(exc).__name__, method, exc_info=exc)
        error = internal(method.rsplit("/", 1)[-1])
    return error


class ErrorInterceptor(WrappingInterceptor):
    def wrap_unary(self, behavior: Unary, method: str, request_streaming: bool) -> Unary:
        async def handle(request: Any, context: Context) -> Any:
            try:
                return await behavior(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await abort(context, _as_gateway_error(exc, method))

        return handle

    def wrap_streaming(
        self, behavior: Streaming, method: str, request_streaming: bool
    ) -> Streaming:
        async def handle(request: Any, context: Context) -> AsyncIterator[Any]:
            try:
                async for response in behavior(request, context):
                    yield response
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await abort(context, _as_gateway_error(exc, method))

        return handle
