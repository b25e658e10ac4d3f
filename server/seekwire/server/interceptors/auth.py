"""Authenticates every RPC but health checks (and reflection, when set) before any work."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from seekwire.server.auth.authenticator import Authenticator
from seekwire.server.caller import Caller, set_caller
from seekwire.server.errors import GatewayError, internal
from seekwire.server.interceptors.wrapping import (
    Context,
    Streaming,
    Unary,
    WrappingInterceptor,
    abort,
)

log = logging.getLogger(__name__)
HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIX = "/grpc.reflection."


class AuthInterceptor(WrappingInterceptor):
    def __init__(self, authenticator: Authenticator, *, reflection_public: bool) -> None:
        self._authenticator = authenticator
        self._reflection_public = reflection_public

    def skips(self, method: str) -> bool:
        return method.startswith(HEALTH_PREFIX) or (
            self._reflection_public and method.startswith(REFLECTION_PREFIX)
        )

    def _admit(self, context: Context, method: str) -> Caller:
        try:
            caller = self._authenticator.authenticate(
                context.invocation_metadata() or (), context.auth_context()
            )
        except GatewayError:
            raise
        except Exception as exc:  # a bug must not leak as UNKNOWN with its message
            log.error("authentication failed unexpectedly: %s", type(exc).__name__, exc_info=exc)
            raise internal("authentication") from None
        self._authenticator.authorize(caller, method)
        set_caller(caller)
        return caller

    def wrap_unary(self, behavior: Unary, method: str, request_streaming: bool) -> Unary:
        async def handle(request: Any, context: Context) -> Any:
            try:
                self._admit(context, method)
            except GatewayError as error:
                await abort(context, error)
            return await behavior(request, context)

        return handle

    def wrap_streaming(
        self, behavior: Streaming, method: str, request_streaming: bool
    ) -> Streaming:
        async def handle(request: Any, context: Context) -> AsyncIterator[Any]:
            try:
                self._admit(context, method)
            except GatewayError as error:
                await abort(context, error)
            async for response in behavior(request, context):
                yield response

        return handle
