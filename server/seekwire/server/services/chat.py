"""ChatService: `POST /chat/completions`, unary and server-streaming."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from opentelemetry import trace

from seekwire.server.caller import current_caller
from seekwire.server.convert import from_json, request_body
from seekwire.server.services.calls import (
    Context,
    call_info,
    caller_deadline,
    report_attempts,
)
from seekwire.server.services.converse import Conversation
from seekwire.server.state.sessions import SessionStore
from seekwire.server.upstream.client import Upstream
from seekwire.server.validation import check_chat
from seekwire.v1 import chat_pb2, chat_pb2_grpc


def chat_path(request: chat_pb2.ChatCompletionRequest) -> str:
    """Prefix completion and strict tools exist only on DeepSeek's beta base (reference §1)."""
    beta = any(m.prefix for m in request.messages) or any(t.function.strict for t in request.tools)
    return "/beta/chat/completions" if beta else "/chat/completions"


class ChatService(chat_pb2_grpc.ChatServiceServicer):
    def __init__(self, upstream: Upstream, sessions: SessionStore, tracer: trace.Tracer) -> None:
        self._upstream = upstream
        self._sessions = sessions
        self._tracer = tracer

    async def CreateChatCompletion(
        self, request: chat_pb2.ChatCompletionRequest, context: Context
    ) -> chat_pb2.ChatCompletion:
        check_chat(request)
        info = call_info("chat", request.model)
        body = request_body(request, stream=False)
        data = await self._upstream.call(
            "POST", chat_path(request), body, caller_deadline(context), info
        )
        report_attempts(context, info)
        return from_json(chat_pb2.ChatCompletion, data)

    async def StreamChatCompletion(
        self, request: chat_pb2.ChatCompletionRequest, context: Context
    ) -> AsyncIterator[chat_pb2.ChatCompletionChunk]:
        check_chat(request)
        info = call_info("chat", request.model)
        body = request_body(request, stream=True)
        events = self._upstream.stream(chat_path(request), body, caller_deadline(context), info)
        async with aclosing(events):
            async for event in events:
                yield from_json(chat_pb2.ChatCompletionChunk, event)
        report_attempts(context, info)

    async def Converse(
        self, request_iterator: AsyncIterator[chat_pb2.ConverseRequest], context: Context
    ) -> AsyncIterator[chat_pb2.ConverseResponse]:
        conversation = Conversation(
            self._upstream, self._sessions, current_caller(), caller_deadline(context), self._tracer
        )
        async for event in conversation.events(request_iterator):
            yield event
