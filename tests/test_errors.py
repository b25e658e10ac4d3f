"""design.md "Errors": every upstream outcome reaches the caller as one precise gRPC status."""

from __future__ import annotations

import socket

import grpc
import pytest

from seekwire.server.fake import Behavior
from seekwire.v1 import chat_pb2
from tests.conftest import Stack, StackFactory, rich_details
from tests.test_chat import chat_request


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    """One attempt per call: these tests map single upstream outcomes (retries: test_resilience)."""
    return await make_stack(retry_max_attempts=1)


ERROR_TABLE = [
    # HTTP status, gRPC code, ErrorInfo reason, RetryInfo expected
    (400, grpc.StatusCode.INVALID_ARGUMENT, "UPSTREAM_BAD_REQUEST", False),
    (402, grpc.StatusCode.FAILED_PRECONDITION, "UPSTREAM_INSUFFICIENT_BALANCE", False),
    (403, grpc.StatusCode.INTERNAL, "UPSTREAM_AUTH", False),
    (404, grpc.StatusCode.INTERNAL, "UPSTREAM_NOT_FOUND", False),
    (422, grpc.StatusCode.INVALID_ARGUMENT, "UPSTREAM_BAD_REQUEST", False),
    (429, grpc.StatusCode.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED", True),
    (500, grpc.StatusCode.UNAVAILABLE, "UPSTREAM_SERVER_ERROR", False),
    (502, grpc.StatusCode.UNAVAILABLE, "UPSTREAM_BAD_GATEWAY", False),
    (503, grpc.StatusCode.UNAVAILABLE, "UPSTREAM_OVERLOADED", True),
    (504, grpc.StatusCode.UNAVAILABLE, "UPSTREAM_GATEWAY_TIMEOUT", False),
]


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize(("status", "code", "reason", "retry"), ERROR_TABLE)
async def test_upstream_status_maps_to_grpc(
    stack: Stack, status: int, code: grpc.StatusCode, reason: str, retry: bool, streaming: bool
) -> None:
    stack.fake.push(Behavior(status=status))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if streaming:
            _ = [c async for c in stack.chat.StreamChatCompletion(chat_request())]
        else:
            await stack.chat.CreateChatCompletion(chat_request())
    error = caught.value
    assert error.code() == code
    details = rich_details(error)
    info = details["ErrorInfo"]
    assert info.reason == reason
    assert info.domain == "seekwire"
    assert info.metadata["upstreamStatus"] == str(status)
    assert len(info.metadata["upstreamTraceId"]) == 32
    assert ("RetryInfo" in details) == retry
    if retry:
        assert details["RetryInfo"].retry_delay.seconds == 1


async def test_deepseek_error_message_reaches_the_caller(stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.chat.CreateChatCompletion(chat_request(model="no-such-model"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "Model Not Exist"
    assert (
        rich_details(caught.value)["ErrorInfo"].metadata["upstreamErrorType"]
        == "invalid_request_error"
    )


async def test_retry_after_is_passed_on_as_retry_info(stack: Stack) -> None:
    stack.fake.push(Behavior(status=429, retry_after=7.5))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.chat.CreateChatCompletion(chat_request())
    delay = rich_details(caught.value)["RetryInfo"].retry_delay
    assert (delay.seconds, delay.nanos) == (7, 500_000_000)


async def test_rejected_upstream_key_is_internal_and_never_echoed(make_stack: StackFactory) -> None:
    stack = await make_stack(
        retry_max_attempts=1, warmup=False, deepseek_api_key="sk-wrong-key-9f3e"
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.chat.CreateChatCompletion(chat_request())
    error = caught.value
    assert error.code() == grpc.StatusCode.INTERNAL
    assert rich_details(error)["ErrorInfo"].reason == "UPSTREAM_AUTH"
    assert stack.fake.requests[-1].status == 401
    everything = error.details() + repr(error.trailing_metadata()) + repr(error.initial_metadata())
    assert "9f3e" not in everything
    assert "sk-wrong" not in everything


async def test_legacy_422_plain_text_body(stack: Stack) -> None:
    stack.fake.push(Behavior(legacy_422=True))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.chat.CreateChatCompletion(chat_request())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "missing field `messages`" in caught.value.details()


async def test_blank_200_body_is_unavailable(stack: Stack) -> None:
    stack.fake.push(Behavior(blank_body=True))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.chat.CreateChatCompletion(chat_request())
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert rich_details(caught.value)["ErrorInfo"].reason == "UPSTREAM_EMPTY_RESPONSE"


async def test_error_event_inside_the_stream(stack: Stack) -> None:
    stack.fake.push(Behavior(error_after=3))
    received: list[chat_pb2.ChatCompletionChunk] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for chunk in stack.chat.StreamChatCompletion(chat_request()):
            received.append(chunk)
    assert len(received) == 3
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert rich_details(caught.value)["ErrorInfo"].reason == "UPSTREAM_STREAM_ERROR"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_connection_refused_is_unavailable(make_stack: StackFactory) -> None:
    stack = await make_stack(
        retry_max_attempts=1, deepseek_base_url=f"http://127.0.0.1:{_closed_port()}"
    )
    for call in (
        stack.chat.CreateChatCompletion(chat_request()),
        stack.chat.StreamChatCompletion(chat_request()).read(),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert rich_details(caught.value)["ErrorInfo"].reason == "UPSTREAM_CONNECT_FAILED"


async def test_errors_on_models_and_balance(stack: Stack) -> None:
    from seekwire.v1 import account_pb2, model_pb2

    stack.fake.push(
        Behavior(status=503, path="/models"), Behavior(status=402, path="/user/balance")
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.models.ListModels(model_pb2.ListModelsRequest())
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.account.GetBalance(account_pb2.GetBalanceRequest())
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_an_infinite_retry_after_is_ignored(stack: Stack) -> None:
    stack.fake.push(Behavior(status=429, retry_after=float("inf")))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.chat.CreateChatCompletion(chat_request())
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert rich_details(caught.value)["RetryInfo"].retry_delay.seconds == 1


async def test_errors_inside_a_stream_never_carry_the_upstream_key(stack: Stack) -> None:
    from tests.conftest import UPSTREAM_KEY

    stack.fake.push(Behavior(error_after=1, message=f"key {UPSTREAM_KEY} is throttled"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stack.chat.StreamChatCompletion(chat_request()):
            pass
    assert UPSTREAM_KEY not in caught.value.details()
    assert "[redacted]" in caught.value.details()
