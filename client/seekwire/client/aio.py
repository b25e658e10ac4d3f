"""The async client: typed helpers over the generated stubs, errors as SeekwireError."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc
from google.protobuf import json_format

from seekwire.client.channel import create_channel
from seekwire.client.conversation import Conversation
from seekwire.client.errors import from_rpc_error
from seekwire.v1 import (
    account_pb2,
    account_pb2_grpc,
    chat_pb2,
    chat_pb2_grpc,
    completion_pb2,
    completion_pb2_grpc,
    model_pb2,
    model_pb2_grpc,
)

DEFAULT_MODEL = "deepseek-v4-flash"
Messages = str | Sequence[Mapping[str, Any]]


def chat_request(
    messages: Messages, *, model: str, system: str | None, options: Mapping[str, Any]
) -> chat_pb2.ChatCompletionRequest:
    """A request from DeepSeek-style arguments: `messages` is a prompt or a list of message
    dicts; `options` are any other DeepSeek request fields (thinking, temperature, tools...)."""
    listed = (
        [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)
    )
    if system is not None:
        listed.insert(0, {"role": "system", "content": system})
    body = {"model": model, "messages": listed, **options}
    return json_format.ParseDict(body, chat_pb2.ChatCompletionRequest())


@asynccontextmanager
async def _mapped_errors() -> AsyncIterator[None]:
    try:
        yield
    except grpc.aio.AioRpcError as error:
        raise from_rpc_error(error) from None


class AsyncClient:
    """`async with AsyncClient.connect("127.0.0.1:50051") as client: ...`"""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self._chat = chat_pb2_grpc.ChatServiceStub(channel)
        self._completion = completion_pb2_grpc.CompletionServiceStub(channel)
        self._models = model_pb2_grpc.ModelServiceStub(channel)
        self._account = account_pb2_grpc.AccountServiceStub(channel)

    @classmethod
    def connect(cls, target: str = "127.0.0.1:50051", **channel_options: Any) -> AsyncClient:
        """Options are those of create_channel (api_key, bearer_token, tls, certificates...)."""
        return cls(create_channel(target, **channel_options))

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def chat(
        self,
        messages: Messages,
        *,
        model: str = DEFAULT_MODEL,
        system: str | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> chat_pb2.ChatCompletion:
        request = chat_request(messages, model=model, system=system, options=options)
        async with _mapped_errors():
            response: chat_pb2.ChatCompletion = await self._chat.CreateChatCompletion(
                request, timeout=timeout
            )
            return response

    async def stream_chat(
        self,
        messages: Messages,
        *,
        model: str = DEFAULT_MODEL,
        system: str | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> AsyncIterator[chat_pb2.ChatCompletionChunk]:
        """Chunks as DeepSeek streams them; usage is on the chunk with finish_reason."""
        request = chat_request(messages, model=model, system=system, options=options)
        call = self._chat.StreamChatCompletion(request, timeout=timeout)
        try:
            async with _mapped_errors():
                async for chunk in call:
                    yield chunk
        finally:
            call.cancel()  # a no-op once the stream ended; closes it when the caller stops early

    async def complete(
        self,
        prompt: str,
        *,
        suffix: str | None = None,
        model: str = DEFAULT_MODEL,
        timeout: float | None = None,
        **options: Any,
    ) -> completion_pb2.Completion:
        """Fill-in-the-middle: the text between `prompt` and `suffix`."""
        body = {"model": model, "prompt": prompt, **options}
        if suffix is not None:
            body["suffix"] = suffix
        request = json_format.ParseDict(body, completion_pb2.CompletionRequest())
        async with _mapped_errors():
            response: completion_pb2.Completion = await self._completion.CreateCompletion(
                request, timeout=timeout
            )
            return response

    async def models(self, *, timeout: float | None = None) -> list[model_pb2.Model]:
        async with _mapped_errors():
            response = await self._models.ListModels(model_pb2.ListModelsRequest(), timeout=timeout)
        return list(response.data)

    async def balance(self, *, timeout: float | None = None) -> account_pb2.GetBalanceResponse:
        async with _mapped_errors():
            response: account_pb2.GetBalanceResponse = await self._account.GetBalance(
                account_pb2.GetBalanceRequest(), timeout=timeout
            )
            return response

    async def conversation(
        self,
        *,
        model: str = DEFAULT_MODEL,
        system: str | None = None,
        session_id: str | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> Conversation:
        """Opens a Converse stream. `system` is sent only for a new session (a resumed one
        already has it); `options` are DeepSeek request fields applied to every turn."""
        body: dict[str, Any] = {"model": model, **options}
        if session_id is not None:
            body["session_id"] = session_id
        elif system is not None:
            body["messages"] = [{"role": "system", "content": system}]
        start = json_format.ParseDict(body, chat_pb2.ConverseStart())
        conversation = Conversation(self._chat.Converse(timeout=timeout))
        async with _mapped_errors():
            await conversation.open(start)
        return conversation
