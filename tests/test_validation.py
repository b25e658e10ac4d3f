"""Requests that cannot succeed fail locally, before any upstream call, with BadRequest details."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from seekwire.v1 import completion_pb2
from tests.conftest import Stack, rich_details
from tests.test_chat import chat_request

USER = [{"role": "user", "content": "hi"}]

INVALID_CHAT: list[tuple[dict[str, Any], str]] = [
    ({"messages": []}, "messages"),
    ({"model": ""}, "model"),
    ({"messages": [{"content": "no role"}]}, "messages[0].role"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"messages": [*USER, {"role": "tool", "content": "18C"}]}, "messages[1].tool_call_id"),
    ({"temperature": 2.5}, "temperature"),
    ({"top_p": -0.1}, "top_p"),
    ({"frequency_penalty": 3}, "frequency_penalty"),
    ({"presence_penalty": -3}, "presence_penalty"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"stop": [str(i) for i in range(17)]}, "stop"),
    ({"stop": 5}, "stop"),
    (
        {"tools": [{"type": "function", "function": {"name": "has space"}}]},
        "tools[0].function.name",
    ),
    ({"tool_choice": 3}, "tool_choice"),
    ({"tool_choice": {"type": "function"}}, "tool_choice.function.name"),
    ({"user_id": "not ok!"}, "user_id"),
]


@pytest.mark.parametrize(("fields", "violation"), INVALID_CHAT, ids=[v for _, v in INVALID_CHAT])
@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
async def test_invalid_chat_is_refused_locally(
    stack: Stack, fields: dict[str, Any], violation: str, streaming: bool
) -> None:
    request = chat_request(**fields)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if streaming:
            await stack.chat.StreamChatCompletion(request).read()
        else:
            await stack.chat.CreateChatCompletion(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = rich_details(caught.value)
    assert details["ErrorInfo"].reason == "INVALID_REQUEST"
    assert violation in [v.field for v in details["BadRequest"].field_violations]
    assert stack.fake.requests == []


async def test_all_violations_are_reported_at_once(stack: Stack) -> None:
    request = chat_request(model="", temperature=9, messages=[{"role": "x", "content": "y"}])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.chat.CreateChatCompletion(request)
    fields = {v.field for v in rich_details(caught.value)["BadRequest"].field_violations}
    assert fields == {"model", "temperature", "messages[0].role"}


async def test_unknown_model_is_deepseeks_to_reject(stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.chat.CreateChatCompletion(chat_request(model="deepseek-v9-ultra"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rich_details(caught.value)["ErrorInfo"].reason == "UPSTREAM_BAD_REQUEST"
    assert len(stack.fake.requests) == 1


@pytest.mark.parametrize(
    ("request_fields", "violation"),
    [
        ({"model": "deepseek-v4-flash"}, "prompt"),
        ({"model": "", "prompt": "x"}, "model"),
        ({"model": "m", "prompt": "x", "logprobs": 21}, "logprobs"),
        ({"model": "m", "prompt": "x", "temperature": -1}, "temperature"),
    ],
)
async def test_invalid_fim_is_refused_locally(
    stack: Stack, request_fields: dict[str, Any], violation: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.completion.CreateCompletion(completion_pb2.CompletionRequest(**request_fields))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation in [v.field for v in rich_details(caught.value)["BadRequest"].field_violations]
    assert stack.fake.requests == []
