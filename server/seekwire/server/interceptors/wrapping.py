"""Layers that wrap every handler kind once per method, not once per call, and the one gRPC
interceptor that applies them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeAlias, cast

import grpc

from seekwire.server.errors import GatewayError
from seekwire.server.telemetry.record import current_record

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
# grpc's stubs type behaviours as synchronous; on a grpc.aio server they are coroutines
# (unary kinds) and async generators (streaming kinds).
Unary = Callable[[Any, Context], Awaitable[Any]]
Streaming = Callable[[Any, Context], AsyncIterator[Any]]


def rewrap(
    handler: Handler,
    unary: Callable[[Unary, bool], Unary],
    streaming: Callable[[Streaming, bool], Streaming],
) -> Handler:
    """`unary` wraps behaviours that return one response, `streaming` those that yield many;
    both are told whether the behaviour takes a stream of requests."""
    des, ser = handler.request_deserializer, handler.response_serializer
    make: Any
    behavior: Unary | Streaming
    if handler.unary_unary is not None:
        make = grpc.unary_unary_rpc_method_handler
        behavior = unary(cast(Unary, handler.unary_unary), False)
    elif handler.unary_stream is not None:
        make = grpc.unary_stream_rpc_method_handler
        behavior = streaming(cast(Streaming, handler.unary_stream), False)
    elif handler.stream_unary is not None:
        make = grpc.stream_unary_rpc_method_handler
        behavior = unary(cast(Unary, handler.stream_unary), True)
    elif handler.stream_stream is not None:
        make = grpc.stream_stream_rpc_method_handler
        behavior = streaming(cast(Streaming, handler.stream_stream), True)
    else:
        return handler
    wrapped: Handler = make(behavior, request_deserializer=des, response_serializer=ser)
    return wrapped


async def abort(context: Context, error: GatewayError) -> None:
    """Ends the RPC with the error's status and details; raises grpc.aio.AbortError."""
    record = current_record()
    if record is not None:
        record.code, record.reason = error.code.name, error.reason
        record.limit = error.metadata.get("limit", "") if error.reason == "RATE_LIMITED" else ""
        if error.reason == "REQUEST_EXCEEDS_LIMIT":
            record.limit = "request_size"
    status = error.to_status()
    await context.abort(status.code, status.details, status.trailing_metadata)


class WrappingInterceptor:
    """Subclasses say how to wrap a unary and a streaming behaviour of `method`;
    `request_streaming` tells whether the behaviour's first argument is a request iterator.
    A `Chain` applies them."""

    skip: frozenset[str] = frozenset()  # method names left unwrapped

    def wrap_unary(self, behavior: Unary, method: str, request_streaming: bool) -> Unary:
        raise NotImplementedError

    def wrap_streaming(
        self, behavior: Streaming, method: str, request_streaming: bool
    ) -> Streaming:
        raise NotImplementedError

    def skips(self, method: str) -> bool:
        return method in self.skip


def _rewrap_in(layer: WrappingInterceptor, handler: Handler, method: str) -> Handler:
    return rewrap(
        handler,
        lambda b, rs: layer.wrap_unary(b, method, rs),
        lambda b, rs: layer.wrap_streaming(b, method, rs),
    )


class Chain(grpc.aio.ServerInterceptor):
    """The one gRPC interceptor: wraps each method's handler in every layer, outermost first,
    once per method. grpc.aio awaits each interceptor on every call, so one for all is cheaper
    than one per layer."""

    def __init__(self, layers: Sequence[WrappingInterceptor]) -> None:
        self._layers = tuple(layers)
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    def _wrap(self, handler: Handler, method: str) -> Handler:
        for layer in reversed(self._layers):
            if not layer.skips(method):
                handler = _rewrap_in(layer, handler, method)
        return handler

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped
