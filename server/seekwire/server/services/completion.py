"""CompletionService: FIM, `POST /beta/completions`, unary and server-streaming."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import grpc
from seekwire.server.convert import from_json, request_body
from seekwire.server.deadline import caller_deadline
from seekwire.server.upstream.client import Upstream
from seekwire.server.validation import check_completion
from seekwire.v1 import completion_pb2, completion_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]
FIM_PATH = "/beta/completions"


class CompletionService(completion_pb2_grpc.CompletionServiceServicer):
    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream

    async def CreateCompletion(
        self, request: completion_pb2.CompletionRequest, context: Context
    ) -> completion_pb2.Completion:
        check_completion(request)
        data = await self._upstream.call(
            "POST", FIM_PATH, request_body(request, stream=False), caller_deadline(context)
        )
        return from_json(completion_pb2.Completion, data)

    async def StreamCompletion(
        self, request: completion_pb2.CompletionRequest, context: Context
    ) -> AsyncIterator[completion_pb2.Completion]:
        check_completion(request)
        events = self._upstream.stream(
            FIM_PATH, request_body(request, stream=True), caller_deadline(context)
        )
        async with aclosing(events):
            async for event in events:
                yield from_json(completion_pb2.Completion, event)
