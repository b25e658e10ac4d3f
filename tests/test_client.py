"""The thin client (async, sync, Conversation, errors) and its channel factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from seekwire.client import (
    AsyncClient,
    Client,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    SeekwireError,
    Unavailable,
    create_channel,
)
from seekwire.server.fake import Behavior
from seekwire.v1 import model_pb2, model_pb2_grpc
from tests.conftest import Served, Stack, StackFactory
from tests.test_chat import TOOLS


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    """The gateway makes one upstream attempt, so what is seen here is the client's own doing."""
    return await make_stack(retry_max_attempts=1)


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[AsyncClient]:
    port = stack.gateway.port
    async with AsyncClient.connect(f"127.0.0.1:{port}") as connected:
        yield connected


async def test_chat_stream_complete_models_balance(client: AsyncClient, stack: Stack) -> None:
    answer = await client.chat(
        "Hello", system="Be brief.", thinking={"type": "disabled"}, temperature=0.2
    )
    assert answer.choices[0].message.content.startswith("Sure")
    assert stack.fake.requests[-1].body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert stack.fake.requests[-1].body["temperature"] == 0.2
    chunks = [c async for c in client.stream_chat("Hello")]
    assert chunks[-1].usage.total_tokens > 0
    fim = await client.complete("def add(a, b):", suffix="\n", max_tokens=3)
    assert fim.choices[0].finish_reason == "length"
    assert [m.id for m in await client.models()] == ["deepseek-v4-flash", "deepseek-v4-pro"]
    assert (await client.balance()).is_available


async def test_errors_carry_code_reason_and_details(client: AsyncClient, stack: Stack) -> None:
    with pytest.raises(InvalidArgument) as invalid:
        await client.chat("hi", temperature=5)
    assert invalid.value.reason == "INVALID_REQUEST"
    assert invalid.value.violations == [("temperature", "must be between 0 and 2, got 5")]
    stack.fake.push(Behavior(status=429, retry_after=2.5))
    with pytest.raises(ResourceExhausted) as limited:
        await client.chat("hi")
    assert limited.value.reason == "UPSTREAM_RATE_LIMITED"
    assert limited.value.retry_delay == 2.5
    assert limited.value.metadata["upstreamStatus"] == "429"
    assert "retry in 2.5s" in str(limited.value)


async def test_native_retries_recover_from_unavailable(client: AsyncClient, stack: Stack) -> None:
    stack.fake.push(Behavior(status=503, retry_after=0.05), Behavior(status=502))
    answer = await client.chat("Hello")
    assert answer.choices[0].message.content
    assert [r.status for r in stack.fake.requests] == [503, 502, 200]


async def test_streams_are_not_retried_after_their_first_message(
    client: AsyncClient, stack: Stack
) -> None:
    stack.fake.push(Behavior(cut_after=3))
    received = []
    with pytest.raises(Unavailable) as caught:
        async for chunk in client.stream_chat("Hello"):
            received.append(chunk)
    assert caught.value.reason == "UPSTREAM_STREAM_CUT"
    assert len(received) == 3
    assert len(stack.fake.requests) == 1


async def test_unreachable_gateway_is_unavailable() -> None:
    async with AsyncClient.connect("127.0.0.1:1", max_attempts=2) as client:
        with pytest.raises(Unavailable):
            await client.models(timeout=5)


async def test_credentials_travel_as_call_metadata() -> None:
    seen: list[tuple[str, str]] = []

    class Models(model_pb2_grpc.ModelServiceServicer):
        async def ListModels(self, request, context):  # type: ignore[no-untyped-def]
            seen.extend(
                (k, v)
                for k, v in context.invocation_metadata()
                if k in ("x-api-key", "authorization")
            )
            return model_pb2.ListModelsResponse()

    server = grpc.aio.server()
    model_pb2_grpc.add_ModelServiceServicer_to_server(Models(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        channel = create_channel(f"127.0.0.1:{port}", api_key="sk-caller", bearer_token="eyJ.x.y")
        await AsyncClient(channel).models()
        await channel.close()
    finally:
        await server.stop(0)
    assert seen == [("x-api-key", "sk-caller"), ("authorization", "Bearer eyJ.x.y")]


async def test_conversation_ask_tools_cancel_and_resume(client: AsyncClient, stack: Stack) -> None:
    conversation = await client.conversation(
        system="Be brief.", thinking={"type": "disabled"}, tools=TOOLS
    )
    first = await conversation.ask("What is the weather?")
    assert first.finish_reason == "tool_calls"
    call = first.tool_calls[0]
    await conversation.send_tool_result(call.id, "sunny")
    rest = await conversation.collect(first.turn_id)
    assert rest.finish_reason == "stop"
    assert rest.content.startswith("Sure")
    turn = await conversation.send("[fake tokens=500 token_delay=0.02] tell me more")
    events = conversation.receive_turn(turn)
    assert (await anext(events)).WhichOneof("event") == "chunk"
    await conversation.cancel(turn)
    async for event in events:
        last = event
    assert last.error.status.code == grpc.StatusCode.CANCELLED.value[0]
    with pytest.raises(SeekwireError) as failed:
        await conversation.ask("[fake status=500] hi")
    assert failed.value.reason == "UPSTREAM_SERVER_ERROR"
    await conversation.close()
    resumed = await client.conversation(
        session_id=conversation.session_id, thinking={"type": "disabled"}
    )
    # system, user, tool call, tool result, answer; not the cancelled and failed turns
    assert resumed.resumed_messages == 5
    answer = await resumed.ask("again")
    assert answer.content
    assert stack.fake.requests[-1].body["messages"][-1] == {"role": "user", "content": "again"}
    await resumed.close()
    with pytest.raises(NotFound):
        await client.conversation(session_id="ses_unknown")


async def test_sync_client(served: Served) -> None:
    def scenario() -> list[str]:
        with Client(served.target, api_key=served.api_key) as client:
            said = [client.chat("Hello", thinking={"type": "disabled"}).choices[0].message.content]
            said.append("".join(c.choices[0].delta.content for c in client.stream_chat("Hello")))
            conversation = client.conversation(thinking={"type": "disabled"})
            said.append(conversation.ask("[fake echo] echo me").content)
            conversation.close()
            said.append(str(len(client.models())))
            return said

    said = await asyncio.to_thread(scenario)
    assert said[0] == said[1]
    assert said[0].startswith("Sure")
    assert said[2:] == ["echo me", "2"]
