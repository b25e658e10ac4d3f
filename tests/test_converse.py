"""Converse over a real server and the fake: history, tools, cancel, errors, resume, isolation."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2

from seekwire.v1 import chat_pb2
from tests.conftest import Stack, StackFactory, eventually
from tests.test_chat import TOOLS

Call = Any  # grpc.aio.StreamStreamCall


def start(**fields: Any) -> chat_pb2.ConverseRequest:
    body: dict[str, Any] = {"model": "deepseek-v4-flash", "thinking": {"type": "disabled"}}
    body.update(fields)
    return chat_pb2.ConverseRequest(start=json_format.ParseDict(body, chat_pb2.ConverseStart()))


def say(content: str, turn_id: str | None = None) -> chat_pb2.ConverseRequest:
    return chat_pb2.ConverseRequest(
        user_message=chat_pb2.ConverseUserMessage(content=content, turn_id=turn_id)
    )


async def open_conversation(
    stack: Stack, **fields: Any
) -> tuple[Call, chat_pb2.ConverseSessionStarted]:
    call = stack.chat.Converse()
    await call.write(start(**fields))
    first = await call.read()
    assert first.WhichOneof("event") == "session_started"
    return call, first.session_started


async def turn(call: Call) -> tuple[list[chat_pb2.ConverseResponse], chat_pb2.ConverseResponse]:
    """Events of one turn, up to and including its turn_end or error."""
    events = []
    while True:
        event = await call.read()
        assert event is not grpc.aio.EOF, "stream ended mid-turn"
        if event.WhichOneof("event") in ("turn_end", "error"):
            return events, event
        events.append(event)


def text(events: list[chat_pb2.ConverseResponse]) -> str:
    return "".join(e.chunk.content for e in events)


def reason(error: chat_pb2.ConverseError) -> str:
    info = error_details_pb2.ErrorInfo()
    for detail in error.status.details:
        if detail.Unpack(info):
            return info.reason
    raise AssertionError("no ErrorInfo")


async def test_multi_turn_history_goes_upstream(stack: Stack) -> None:
    call, started = await open_conversation(
        stack, messages=[{"role": "system", "content": "Be brief."}]
    )
    assert started.session_id.startswith("ses_")
    assert started.resumed_messages == 0
    await call.write(say("Hi there"))
    events, end = await turn(call)
    first_answer = text(events)
    assert first_answer.startswith("Sure, here is")
    assert end.turn_end.turn_id == "turn-1"
    assert end.turn_end.finish_reason == "stop"
    assert end.turn_end.usage.total_tokens > 0
    assert all(e.chunk.turn_id == "turn-1" for e in events)
    await call.write(say("And again", turn_id="mine"))
    events, end = await turn(call)
    assert end.turn_end.turn_id == "mine"
    assert stack.fake.requests[-1].body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": first_answer},
        {"role": "user", "content": "And again"},
    ]
    # DeepSeek cached the shared prefix of turn 1.
    assert end.turn_end.usage.prompt_cache_hit_tokens > 0
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK


async def test_thinking_tool_round_trip_passes_reasoning_back(stack: Stack) -> None:
    call, _ = await open_conversation(stack, thinking={"type": "enabled"}, tools=TOOLS)
    await call.write(say("Weather in Paris?"))
    events, end = await turn(call)
    reasoning = "".join(e.chunk.reasoning_content for e in events)
    assert reasoning.startswith("The user wants")
    assert end.turn_end.finish_reason == "tool_calls"
    (tool_call,) = end.turn_end.tool_calls
    assert tool_call.function.arguments == '{"location": "fake"}'
    await call.write(
        chat_pb2.ConverseRequest(
            tool_result=chat_pb2.ConverseToolResult(tool_call_id=tool_call.id, content="21C")
        )
    )
    events, end = await turn(call)
    assert end.turn_end.turn_id == "turn-1"
    assert end.turn_end.finish_reason == "stop"
    assert text(events)
    sent = stack.fake.requests[-1].body["messages"]
    assert sent[1]["role"] == "assistant"
    assert sent[1]["reasoning_content"] == reasoning
    assert sent[1]["tool_calls"][0]["id"] == tool_call.id
    assert sent[2] == {"role": "tool", "content": "21C", "tool_call_id": tool_call.id}


async def test_cancel_stops_the_turn_and_the_stream_goes_on(stack: Stack) -> None:
    call, _ = await open_conversation(stack)
    await call.write(say("[fake tokens=500 token_delay=0.02] long answer"))
    for _ in range(3):
        assert (await call.read()).WhichOneof("event") == "chunk"
    await call.write(chat_pb2.ConverseRequest(cancel=chat_pb2.ConverseCancel()))
    _, end = await turn(call)
    assert end.error.turn_id == "turn-1"
    assert end.error.status.code == grpc.StatusCode.CANCELLED.value[0]
    assert reason(end.error) == "TURN_CANCELLED"
    record = stack.fake.requests[-1]
    await asyncio.wait_for(record.ended.wait(), 5)
    assert record.disconnected
    await call.write(say("Short one"))
    _, end = await turn(call)
    assert end.turn_end.finish_reason == "stop"
    # The cancelled turn is not sent upstream as if it had been answered.
    assert stack.fake.requests[-1].body["messages"] == [{"role": "user", "content": "Short one"}]


async def test_cancel_of_a_queued_turn(stack: Stack) -> None:
    call, _ = await open_conversation(stack)
    await call.write(say("[fake tokens=20 token_delay=0.01] first", turn_id="a"))
    await call.write(say("second", turn_id="b"))
    await call.write(chat_pb2.ConverseRequest(cancel=chat_pb2.ConverseCancel(turn_id="b")))
    _, end = await turn(call)
    assert end.turn_end.turn_id == "a"
    _, end = await turn(call)
    assert end.error.turn_id == "b"
    assert reason(end.error) == "TURN_CANCELLED"
    assert len(stack.fake.requests) == 1


async def test_failed_turn_is_in_band_and_the_stream_survives(stack: Stack) -> None:
    call, _ = await open_conversation(stack)
    await call.write(say("[fake status=503 retry_after=0.01] hi"))
    _, end = await turn(call)
    assert end.error.turn_id == "turn-1"
    assert end.error.status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert reason(end.error) == "UPSTREAM_OVERLOADED"
    await call.write(say("[fake cut_after=3] hi"))
    events, end = await turn(call)
    assert len(events) == 2  # role chunk carried nothing; then two content chunks
    assert reason(end.error) == "UPSTREAM_STREAM_CUT"
    await call.write(say("hello"))
    _, end = await turn(call)
    assert end.turn_end.finish_reason == "stop"
    assert stack.fake.requests[-1].body["messages"] == [{"role": "user", "content": "hello"}]


async def test_turn_validation_errors_are_in_band(stack: Stack) -> None:
    call, _ = await open_conversation(stack, tools=TOOLS)
    await call.write(say(""))
    _, end = await turn(call)
    assert end.error.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    await call.write(say("Weather?"))
    _, end = await turn(call)
    assert end.turn_end.finish_reason == "tool_calls"
    await call.write(say("never mind"))
    _, end = await turn(call)
    assert reason(end.error) == "TOOL_RESULTS_PENDING"
    await call.write(
        chat_pb2.ConverseRequest(
            tool_result=chat_pb2.ConverseToolResult(tool_call_id="nope", content="x")
        )
    )
    _, end = await turn(call)
    assert end.error.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


async def test_resume_by_session_id(stack: Stack) -> None:
    call, started = await open_conversation(stack, messages=[{"role": "system", "content": "S"}])
    await call.write(say("one"))
    events, _ = await turn(call)
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF
    again, resumed = await open_conversation(stack, session_id=started.session_id)
    assert resumed.session_id == started.session_id
    assert resumed.resumed_messages == 3
    await again.write(say("two"))
    await turn(again)
    assert stack.fake.requests[-1].body["messages"] == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": text(events)},
        {"role": "user", "content": "two"},
    ]


async def test_unknown_session_fails_the_stream(stack: Stack) -> None:
    call = stack.chat.Converse()
    await call.write(start(session_id="ses_nope"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("first", "second", "code"),
    [
        (say("hi"), None, grpc.StatusCode.INVALID_ARGUMENT),
        (start(), start(), grpc.StatusCode.INVALID_ARGUMENT),
        (start(), chat_pb2.ConverseRequest(), grpc.StatusCode.INVALID_ARGUMENT),
        (start(temperature=7), None, grpc.StatusCode.INVALID_ARGUMENT),
    ],
    ids=["no-start", "second-start", "empty", "bad-options"],
)
async def test_stream_level_problems_end_the_rpc(
    stack: Stack,
    first: chat_pb2.ConverseRequest,
    second: chat_pb2.ConverseRequest | None,
    code: grpc.StatusCode,
) -> None:
    call = stack.chat.Converse()
    await call.write(first)
    if second is not None:
        await call.write(second)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        while await call.read() is not grpc.aio.EOF:
            pass
    assert caught.value.code() == code
    assert stack.fake.requests == []


async def test_fifty_concurrent_conversations_stay_isolated(make_stack: StackFactory) -> None:
    stack = await make_stack()

    async def converse(i: int) -> None:
        call, _ = await open_conversation(stack)
        for j in range(2):
            await call.write(say(f"[fake echo token_delay=0.002] conv-{i} turn-{j}"))
            events, end = await turn(call)
            assert end.WhichOneof("event") == "turn_end"
            assert text(events) == f"conv-{i} turn-{j}"
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF

    await asyncio.gather(*(converse(i) for i in range(50)))
    assert len(stack.fake.requests) == 100
    for record in stack.fake.requests:
        contents = " ".join(m["content"] for m in record.body["messages"])
        owners = {word for word in contents.split() if word.startswith("conv-")}
        assert len(owners) == 1, contents


async def test_slow_reader_does_not_buffer_the_whole_answer(stack: Stack) -> None:
    total = 40_000
    call, _ = await open_conversation(stack)
    await call.write(say(f"[fake tokens={total} token_bytes=1024] big"))
    for _ in range(5):
        assert (await call.read()).WhichOneof("event") == "chunk"
    record = stack.fake.requests[-1]
    # 40 MB of answer. While the caller does not read, the upstream read pauses once
    # the bounded outbox, gRPC's flow-control window and the socket buffers are full.
    paused_at = -1
    for _ in range(60):
        await asyncio.sleep(0.25)
        if record.events_sent == paused_at:
            break
        paused_at = record.events_sent
    assert record.events_sent == paused_at
    assert paused_at < total / 2
    for _ in range(100):
        assert (await call.read()).WhichOneof("event") == "chunk"
    call.cancel()
    await asyncio.wait_for(record.ended.wait(), 5)
    assert record.disconnected


async def test_a_cancelled_stream_that_was_not_read_leaves_nothing_running(stack: Stack) -> None:
    baseline = len(asyncio.all_tasks())
    call, _ = await open_conversation(stack)
    await call.write(say("[fake tokens=20000 token_bytes=512] big"))
    for _ in range(3):
        await call.read()
    await asyncio.sleep(0.3)  # the outbox fills while nobody reads
    call.cancel()

    async def settled() -> bool:
        return len(asyncio.all_tasks()) <= baseline

    await eventually(settled)


async def test_resume_while_tool_results_are_pending(stack: Stack) -> None:
    call, started = await open_conversation(stack, tools=TOOLS)
    await call.write(say("Weather?"))
    _, end = await turn(call)
    (tool_call,) = end.turn_end.tool_calls
    await call.done_writing()
    again, _ = await open_conversation(stack, session_id=started.session_id, tools=TOOLS)
    await again.write(say("forget it"))
    _, refused_turn = await turn(again)
    assert reason(refused_turn.error) == "TOOL_RESULTS_PENDING"
    await again.write(
        chat_pb2.ConverseRequest(
            tool_result=chat_pb2.ConverseToolResult(tool_call_id=tool_call.id, content="9C")
        )
    )
    _, end = await turn(again)
    assert end.turn_end.turn_id == "turn-1"
    assert end.turn_end.finish_reason == "stop"
    roles = [m["role"] for m in stack.fake.requests[-1].body["messages"]]
    assert roles == ["user", "assistant", "tool"]


async def test_cancel_a_turn_waiting_for_tool_results(stack: Stack) -> None:
    call, _ = await open_conversation(stack, tools=TOOLS)
    await call.write(say("Weather?", turn_id="w"))
    _, end = await turn(call)
    assert end.turn_end.finish_reason == "tool_calls"
    await call.write(chat_pb2.ConverseRequest(cancel=chat_pb2.ConverseCancel(turn_id="w")))
    _, end = await turn(call)
    assert (end.error.turn_id, reason(end.error)) == ("w", "TURN_CANCELLED")
    await call.write(say("[fake tool_call=false] Something else"))
    _, end = await turn(call)
    assert end.turn_end.finish_reason == "stop"
    assert stack.fake.requests[-1].body["messages"] == [
        {"role": "user", "content": "[fake tool_call=false] Something else"}
    ]


async def test_turn_ids_are_unique_in_a_session_even_across_resumes(stack: Stack) -> None:
    call, started = await open_conversation(stack)
    await call.write(say("first"))
    events, end = await turn(call)
    assert end.turn_end.turn_id == "turn-1"
    await call.write(say("again", turn_id="turn-1"))
    _, end = await turn(call)
    assert end.error.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    await call.done_writing()
    again, _ = await open_conversation(stack, session_id=started.session_id)
    await again.write(say("[fake status=400] doomed"))
    _, end = await turn(again)
    assert end.error.turn_id == "turn-2"  # a new id: the failure cannot touch turn-1
    await again.write(say("third"))
    await turn(again)
    assert stack.fake.requests[-1].body["messages"] == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": text(events)},
        {"role": "user", "content": "third"},
    ]
