"""What DeepSeek's streams really do: keep-alives, queues, stalls, cuts; and callers who leave."""

from __future__ import annotations

import asyncio

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


async def collect(
    stack: Stack, request: chat_pb2.ChatCompletionRequest
) -> tuple[list[chat_pb2.ChatCompletionChunk], grpc.aio.AioRpcError | None]:
    chunks: list[chat_pb2.ChatCompletionChunk] = []
    try:
        async for chunk in stack.chat.StreamChatCompletion(request):
            chunks.append(chunk)
    except grpc.aio.AioRpcError as error:
        return chunks, error
    return chunks, None


async def test_keepalive_lines_are_tolerated(stack: Stack) -> None:
    stack.fake.push(Behavior(keepalives=5), Behavior(keepalives=5))
    chunks, error = await collect(stack, chat_request())
    assert error is None
    assert chunks[-1].usage.total_tokens > 0
    answer = await stack.chat.CreateChatCompletion(chat_request())
    assert answer.choices[0].message.content == "".join(c.choices[0].delta.content for c in chunks)


async def test_openai_style_usage_chunk_is_passed_on(stack: Stack) -> None:
    stack.fake.push(Behavior(usage_chunk=True))
    chunks, error = await collect(stack, chat_request())
    assert error is None
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert not chunks[-2].HasField("usage")
    assert len(chunks[-1].choices) == 0
    assert chunks[-1].usage.completion_tokens == 12


@pytest.mark.parametrize("finish", ["length", "content_filter", "insufficient_system_resource"])
async def test_finish_reasons_pass_through(stack: Stack, finish: str) -> None:
    stack.fake.push(Behavior(finish_reason=finish))
    chunks, error = await collect(stack, chat_request())
    assert error is None
    assert chunks[-1].choices[0].finish_reason == finish


async def test_cut_stream_is_unavailable_after_the_chunks_sent(stack: Stack) -> None:
    stack.fake.push(Behavior(cut_after=4))
    chunks, error = await collect(stack, chat_request())
    assert len(chunks) == 4
    assert error is not None
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert rich_details(error)["ErrorInfo"].reason == "UPSTREAM_STREAM_CUT"


async def test_stream_ending_without_done_is_a_cut(stack: Stack) -> None:
    stack.fake.push(Behavior(no_done=True))
    chunks, error = await collect(stack, chat_request())
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert error is not None
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert rich_details(error)["ErrorInfo"].reason == "UPSTREAM_STREAM_CUT"


async def test_cut_unary_body_is_unavailable(stack: Stack) -> None:
    stack.fake.push(Behavior(cut_after=1))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.chat.CreateChatCompletion(chat_request())
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert rich_details(caught.value)["ErrorInfo"].reason == "UPSTREAM_STREAM_CUT"


async def test_stall_mid_stream_times_out_and_closes_upstream(make_stack: StackFactory) -> None:
    stack = await make_stack(retry_max_attempts=1, idle_timeout=0.3)
    stack.fake.push(Behavior(stall_after=3))
    chunks, error = await collect(stack, chat_request())
    assert len(chunks) == 3
    assert error is not None
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert rich_details(error)["ErrorInfo"].reason == "UPSTREAM_STALLED"
    record = stack.fake.requests[-1]
    await asyncio.wait_for(record.ended.wait(), 5)
    assert record.disconnected


async def test_keepalives_do_not_extend_a_stall_forever(make_stack: StackFactory) -> None:
    stack = await make_stack(retry_max_attempts=1, idle_timeout=0.4)
    stack.fake.push(Behavior(stall_after=2, stall_keepalive=0.05))
    chunks, error = await collect(stack, chat_request())
    assert len(chunks) == 2
    assert error is not None
    assert rich_details(error)["ErrorInfo"].reason == "UPSTREAM_STALLED"


async def test_queue_of_keepalives_is_bounded(make_stack: StackFactory) -> None:
    stack = await make_stack(retry_max_attempts=1, first_byte_timeout=5, queue_timeout=0.4)
    stack.fake.push(Behavior(keepalives=1000, keepalive_interval=0.05))
    chunks, error = await collect(stack, chat_request())
    assert chunks == []
    assert error is not None
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert rich_details(error)["ErrorInfo"].reason == "UPSTREAM_QUEUE_TIMEOUT"


async def test_silence_before_the_first_byte(make_stack: StackFactory) -> None:
    stack = await make_stack(retry_max_attempts=1, first_byte_timeout=0.3)
    stack.fake.push(Behavior(keepalives=2, stall_after=0), Behavior(stall_after=0))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.chat.CreateChatCompletion(chat_request())
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert rich_details(caught.value)["ErrorInfo"].reason == "UPSTREAM_FIRST_BYTE_TIMEOUT"
    chunks, error = await collect(stack, chat_request())
    assert chunks == []
    assert error is not None
    assert rich_details(error)["ErrorInfo"].reason == "UPSTREAM_FIRST_BYTE_TIMEOUT"


async def test_caller_cancel_closes_the_upstream_request(stack: Stack) -> None:
    stack.fake.push(Behavior(tokens=500, token_delay=0.02))
    call = stack.chat.StreamChatCompletion(chat_request())
    for _ in range(3):
        await call.read()
    call.cancel()
    record = stack.fake.requests[-1]
    await asyncio.wait_for(record.ended.wait(), 5)
    assert record.disconnected
    assert not record.completed
    assert record.events_sent < 100


async def test_caller_deadline_closes_the_upstream_stream(stack: Stack) -> None:
    stack.fake.push(Behavior(tokens=500, token_delay=0.02))
    chunks: list[chat_pb2.ChatCompletionChunk] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for chunk in stack.chat.StreamChatCompletion(chat_request(), timeout=0.5):
            chunks.append(chunk)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0 < len(chunks) < 100
    record = stack.fake.requests[-1]
    await asyncio.wait_for(record.ended.wait(), 5)
    assert record.disconnected


async def test_caller_deadline_bounds_a_queued_unary_call(stack: Stack) -> None:
    stack.fake.push(Behavior(delay=10))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.chat.CreateChatCompletion(chat_request(), timeout=0.4)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    record = stack.fake.requests[-1]
    await asyncio.wait_for(record.ended.wait(), 5)
    assert record.disconnected
    assert loop.time() - started < 5
