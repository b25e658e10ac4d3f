"""A blocking facade over AsyncClient, for scripts and notebooks (one private event loop)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any, TypeVar

from seekwire.client.aio import DEFAULT_MODEL, AsyncClient, Messages
from seekwire.client.conversation import Answer, Conversation
from seekwire.v1 import account_pb2, chat_pb2, completion_pb2, model_pb2

T = TypeVar("T")


class _Loop:
    def __init__(self) -> None:
        self._runner = asyncio.Runner()

    def run(self, awaitable: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await awaitable

        return self._runner.run(wrapped())

    def iterate(self, iterator: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self.run(anext(iterator))
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                self.run(aclose())

    def close(self) -> None:
        self._runner.close()


class SyncConversation:
    def __init__(self, loop: _Loop, conversation: Conversation) -> None:
        self._loop = loop
        self.conversation = conversation

    @property
    def session_id(self) -> str:
        return self.conversation.session_id

    def send(self, content: str, *, turn_id: str | None = None) -> str:
        return self._loop.run(self.conversation.send(content, turn_id=turn_id))

    def send_tool_result(self, tool_call_id: str, content: str) -> None:
        self._loop.run(self.conversation.send_tool_result(tool_call_id, content))

    def cancel(self, turn_id: str | None = None) -> None:
        self._loop.run(self.conversation.cancel(turn_id))

    def ask(self, content: str, *, turn_id: str | None = None) -> Answer:
        return self._loop.run(self.conversation.ask(content, turn_id=turn_id))

    def collect(self, turn_id: str) -> Answer:
        return self._loop.run(self.conversation.collect(turn_id))

    def events(self) -> Iterator[chat_pb2.ConverseResponse]:
        return self._loop.iterate(aiter(self.conversation))

    def close(self) -> None:
        self._loop.run(self.conversation.close())


class Client:
    """`with Client("127.0.0.1:50051") as client: client.chat("Hello")`"""

    def __init__(self, target: str = "127.0.0.1:50051", **channel_options: Any) -> None:
        self._loop = _Loop()

        async def connect() -> AsyncClient:
            return AsyncClient.connect(target, **channel_options)

        self.aio = self._loop.run(connect())

    def close(self) -> None:
        self._loop.run(self.aio.close())
        self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def chat(self, messages: Messages, **kwargs: Any) -> chat_pb2.ChatCompletion:
        return self._loop.run(self.aio.chat(messages, **kwargs))

    def stream_chat(
        self, messages: Messages, **kwargs: Any
    ) -> Iterator[chat_pb2.ChatCompletionChunk]:
        return self._loop.iterate(self.aio.stream_chat(messages, **kwargs))

    def complete(self, prompt: str, **kwargs: Any) -> completion_pb2.Completion:
        return self._loop.run(self.aio.complete(prompt, **kwargs))

    def models(self, **kwargs: Any) -> list[model_pb2.Model]:
        return self._loop.run(self.aio.models(**kwargs))

    def balance(self, **kwargs: Any) -> account_pb2.GetBalanceResponse:
        return self._loop.run(self.aio.balance(**kwargs))

    def conversation(self, *, model: str = DEFAULT_MODEL, **kwargs: Any) -> SyncConversation:
        return SyncConversation(
            self._loop, self._loop.run(self.aio.conversation(model=model, **kwargs))
        )
