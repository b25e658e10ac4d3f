"""Rebuilds an RpcMethodHandler around wrapped behaviours, for all four handler kinds."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, cast

import grpc

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
# grpc's stubs type behaviours as synchronous; on a grpc.aio server they are coroutines
# (unary kinds) and async generators (streaming kinds).
Unary = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
Streaming = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]


def rewrap(
    handler: Handler,
    unary: Callable[[Unary], Unary],
    streaming: Callable[[Streaming], Streaming],
) -> Handler:
    """`unary` wraps behaviours that return one response, `streaming` those that yield many."""
    des, ser = handler.request_deserializer, handler.response_serializer
    make: Any
    behavior: Unary | Streaming
    if handler.unary_unary is not None:
        make, behavior = (
            grpc.unary_unary_rpc_method_handler,
            unary(cast(Unary, handler.unary_unary)),
        )
    elif handler.unary_stream is not None:
        make = grpc.unary_stream_rpc_method_handler
        behavior = streaming(cast(Streaming, handler.unary_stream))
    elif handler.stream_unary is not None:
        make, behavior = (
            grpc.stream_unary_rpc_method_handler,
            unary(cast(Unary, handler.stream_unary)),
        )
    elif handler.stream_stream is not None:
        make = grpc.stream_stream_rpc_method_handler
        behavior = streaming(cast(Streaming, handler.stream_stream))
    else:
        return handler
    wrapped: Handler = make(behavior, request_deserializer=des, response_serializer=ser)
    return wrapped
