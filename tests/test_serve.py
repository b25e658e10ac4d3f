"""`seekwire serve` as a real process: start-up checks, health, reflection and SIGTERM draining."""

from __future__ import annotations

import asyncio
import signal

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from seekwire.client import create_channel
from seekwire.v1 import chat_pb2_grpc
from tests.conftest import SEEKWIRE, Served, clean_env
from tests.test_chat import chat_request


async def _run(*args: str, env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *SEEKWIRE, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def test_without_a_key_it_says_how_to_set_one_or_run_offline() -> None:
    code, stderr = await _run("serve", env=clean_env())
    assert code == 2
    assert "DEEPSEEK_API_KEY" in stderr
    assert "--fake-upstream" in stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((), {"SEEKWIRE_IDLE_TIMEOUT": "soon"}, "idle_timeout: expected float"),
        (("--listen", "nowhere"), {}, "listen: expected host:port"),
        (("--log-level", "loud"), {}, "log_level"),
        (("--idle-timeout", "-1"), {}, "idle_timeout: must be positive"),
    ],
)
async def test_invalid_settings_exit_2_with_the_reason(
    args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    code, stderr = await _run("serve", "--fake-upstream", *args, env=clean_env(**env))
    assert code == 2
    assert message in stderr


async def test_health_reflection_and_a_call(served: Served) -> None:
    async with create_channel(served.target, api_key=served.api_key) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "seekwire.v1.ChatService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = reflection.ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        reply = await call.read()
        await call.done_writing()
        names = {s.name for s in reply.list_services_response.service}
        assert {
            "seekwire.v1.ChatService",
            "seekwire.v1.CompletionService",
            "seekwire.v1.ModelService",
            "seekwire.v1.AccountService",
            "grpc.health.v1.Health",
        } <= names
        answer = await chat_pb2_grpc.ChatServiceStub(channel).CreateChatCompletion(chat_request())
        assert answer.choices[0].message.content


async def test_sigterm_drains_a_stream_in_flight(served: Served) -> None:
    async with create_channel(served.target, api_key=served.api_key) as channel:
        chat = chat_pb2_grpc.ChatServiceStub(channel)
        slow = [{"role": "user", "content": "[fake tokens=30 token_delay=0.05]"}]
        stream = chat.StreamChatCompletion(chat_request(messages=slow))
        first = await stream.read()
        assert first.choices[0].delta.role == "assistant"
        served.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.1)
        # Draining: health says NOT_SERVING so Envoy moves traffic away...
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        # ...while the stream in flight runs to its end.
        rest = []
        while (chunk := await stream.read()) is not grpc.aio.EOF:
            rest.append(chunk)
        assert rest[-1].choices[0].finish_reason == "stop"
        assert rest[-1].usage.completion_tokens == 34
        assert await stream.code() == grpc.StatusCode.OK
    assert await asyncio.wait_for(served.process.wait(), 15) == 0


async def test_a_long_running_fake_keeps_only_its_latest_requests() -> None:
    import aiohttp

    from seekwire.server.fake import FakeDeepSeek

    fake = FakeDeepSeek(keep_requests=3)
    url = await fake.start()
    try:
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer sk-any"}) as session:
            for n in range(10):
                body = {
                    "model": "deepseek-v4-flash",
                    "messages": [{"role": "user", "content": f"{n}"}],
                }
                async with session.post(f"{url}/chat/completions", json=body) as response:
                    assert response.status == 200
    finally:
        await fake.stop()
    assert 3 <= len(fake.requests) <= 6
    assert fake.requests[-1].body["messages"][0]["content"] == "9"
