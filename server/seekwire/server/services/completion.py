"""CompletionService: FIM, `POST /beta/completions`, unary and server-streaming."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from seekwire.server.convert import from_json, request_body
from seekwire.server.services.calls import (
    Context,
    call_info,
    caller_deadline,
    report_attempts,
)
from seekwire.server.upstream.client import Upstream
from seekwire.server.validation import check_completion
from seekwire.v1 import completion_pb2, completion_pb2_grpc

FIM_PATH = "/beta/completions"


class CompletionService(completion_pb2_grpc.CompletionServiceServicer):
    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream

    async def CreateCompletion(
        self, request: completion_pb2.CompletionRequest, context: Context
    ) -> completion_pb2.Completion:
        check_completion(request)
        info = call_info("text_completion", request.model)
        body = request_body(request, stream=False)
        data = await self._upstream.call("POST", FIM_PATH, body, caller_deadline(context), info)
        report_attempts(context, info)
        return from_json(completion_pb2.Completion, data)

    async def StreamCompletion(
        self, request: completion_pb2.CompletionRequest, context: Context
    ) -> AsyncIterator[completion_pb2.Completion]:
        check_completion(request)
        info = call_info("text_completion", request.model)
        body = request_body(request, stream=True)
        events = self._upstream.stream(FIM_PATH, body, caller_deadline(context), info)
        async with aclosing(events):
            async for event in events:
                yield from_json(completion_pb2.Completion, event)
        report_attempts(context, info)
