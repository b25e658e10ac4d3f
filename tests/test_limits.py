"""Rate limits per principal and per model, on both backends, and across replicas sharing Redis."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from seekwire.server.auth.keys import KeyFile
from seekwire.server.caller import Limits
from seekwire.server.state.limits import RedisLimiter
from seekwire.v1 import chat_pb2_grpc
from tests.conftest import (
    SEEKWIRE,
    Stack,
    StackFactory,
    clean_env,
    eventually,
    free_port,
    refused,
    rich_details,
)
from tests.test_auth import with_key
from tests.test_chat import chat_request
from tests.test_converse import say, start, turn


@pytest.fixture(params=["memory", "redis"])
async def limited(
    request: pytest.FixtureRequest, make_stack: StackFactory, tmp_path: Path, redis_url: str
) -> Any:
    keys = KeyFile(tmp_path / "keys.json", check_interval=0)

    async def make(**overrides: Any) -> tuple[Stack, KeyFile]:
        stack = await make_stack(
            auth=True,
            keys_file=str(keys.path),
            limits_backend=request.param,
            redis_url=redis_url,
            **overrides,
        )
        return stack, keys

    return make


async def test_requests_per_minute(limited: Any) -> None:
    stack, keys = await limited()
    key, _ = keys.create("svc", limits=Limits(rpm=3))
    other, _ = keys.create("other", limits=Limits(rpm=3))
    for _ in range(3):
        await stack.chat.CreateChatCompletion(chat_request(), metadata=with_key(key))
    for call in (
        stack.chat.CreateChatCompletion(chat_request(), metadata=with_key(key)),
        stack.chat.StreamChatCompletion(chat_request(), metadata=with_key(key)).read(),
    ):
        error = await refused(call)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = rich_details(error)
        assert details["ErrorInfo"].reason == "RATE_LIMITED"
        assert details["ErrorInfo"].metadata["limit"] == "rpm"
        assert 0 < details["RetryInfo"].retry_delay.seconds <= 20
        assert [v.subject for v in details["QuotaFailure"].violations] == ["principal:svc"]
        trailers = dict(error.trailing_metadata())
        assert int(trailers["retry-after"]) >= 1
        assert (trailers["x-ratelimit-limit"], trailers["x-ratelimit-remaining"]) == ("3", "0")
    # Another principal has its own bucket; nothing refused went upstream.
    await stack.chat.CreateChatCompletion(chat_request(), metadata=with_key(other))
    assert len(stack.fake.requests) == 4


async def test_concurrent_rpcs(limited: Any) -> None:
    stack, keys = await limited()
    key, _ = keys.create("svc", limits=Limits(streams=1))
    slow = chat_request(
        messages=[{"role": "user", "content": "[fake tokens=300 token_delay=0.01]"}]
    )
    stream = stack.chat.StreamChatCompletion(slow, metadata=with_key(key))
    await stream.read()
    error = await refused(stack.chat.CreateChatCompletion(chat_request(), metadata=with_key(key)))
    assert rich_details(error)["ErrorInfo"].metadata["limit"] == "streams"
    stream.cancel()

    async def admitted() -> bool:
        try:
            await stack.chat.CreateChatCompletion(chat_request(), metadata=with_key(key))
        except grpc.aio.AioRpcError:
            return False
        return True

    await eventually(admitted)


async def test_tokens_per_minute_are_corrected_with_real_usage(limited: Any) -> None:
    stack, keys = await limited()
    key, _ = keys.create("svc", limits=Limits(tpm=100))
    # Estimated at ~10 tokens before the call; DeepSeek then reports ~160 used.
    answer = await stack.chat.CreateChatCompletion(
        chat_request(messages=[{"role": "user", "content": "[fake tokens=150] hi"}]),
        metadata=with_key(key),
    )
    assert answer.usage.total_tokens > 100
    error = await refused(stack.chat.CreateChatCompletion(chat_request(), metadata=with_key(key)))
    details = rich_details(error)
    assert details["ErrorInfo"].metadata["limit"] == "tpm"
    assert details["RetryInfo"].retry_delay.seconds >= 1
    assert len(stack.fake.requests) == 1


async def test_streamed_usage_corrects_too(limited: Any) -> None:
    stack, keys = await limited()
    key, _ = keys.create("svc", limits=Limits(tpm=100))
    request = chat_request(messages=[{"role": "user", "content": "[fake tokens=150] hi"}])
    chunks = [c async for c in stack.chat.StreamChatCompletion(request, metadata=with_key(key))]
    assert chunks[-1].usage.total_tokens > 100
    error = await refused(
        stack.chat.StreamChatCompletion(chat_request(), metadata=with_key(key)).read()
    )
    assert rich_details(error)["ErrorInfo"].metadata["limit"] == "tpm"


async def test_a_prompt_larger_than_the_budget(limited: Any) -> None:
    stack, keys = await limited()
    key, _ = keys.create("svc", limits=Limits(tpm=50))
    big = chat_request(messages=[{"role": "user", "content": "x" * 1000}])
    error = await refused(stack.chat.CreateChatCompletion(big, metadata=with_key(key)))
    details = rich_details(error)
    assert details["ErrorInfo"].reason == "REQUEST_EXCEEDS_LIMIT"
    assert "RetryInfo" not in details
    await stack.chat.CreateChatCompletion(chat_request(), metadata=with_key(key))


async def test_model_limits_are_global(limited: Any) -> None:
    stack, keys = await limited(model_limits="deepseek-v4-pro=rpm:2")
    alice, _ = keys.create("alice")
    bob, _ = keys.create("bob")
    pro = chat_request(model="deepseek-v4-pro")
    await stack.chat.CreateChatCompletion(pro, metadata=with_key(alice))
    await stack.chat.CreateChatCompletion(pro, metadata=with_key(bob))
    error = await refused(stack.chat.CreateChatCompletion(pro, metadata=with_key(alice)))
    assert [v.subject for v in rich_details(error)["QuotaFailure"].violations] == [
        "model:deepseek-v4-pro"
    ]
    await stack.chat.CreateChatCompletion(
        chat_request(model="deepseek-v4-flash"), metadata=with_key(bob)
    )


async def test_default_limits_apply_to_keys_without_their_own(limited: Any) -> None:
    stack, keys = await limited(default_rpm=1)
    key, _ = keys.create("plain")
    await stack.chat.CreateChatCompletion(chat_request(), metadata=with_key(key))
    error = await refused(stack.chat.CreateChatCompletion(chat_request(), metadata=with_key(key)))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_converse_turns_are_metered_in_band(limited: Any) -> None:
    stack, keys = await limited()
    key, _ = keys.create("svc", limits=Limits(tpm=100))
    call = stack.chat.Converse(metadata=with_key(key))
    await call.write(start())
    await call.read()
    await call.write(say("[fake tokens=150] hi"))
    _, end = await turn(call)
    assert end.turn_end.usage.total_tokens > 100
    await call.write(say("more"))
    _, end = await turn(call)
    assert end.error.status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert len(stack.fake.requests) == 1
    await call.done_writing()


@pytest.mark.parametrize("fail_open", [True, False], ids=["fail-open", "fail-closed"])
async def test_redis_down(
    make_stack: StackFactory, tmp_path: Path, fail_open: bool, caplog: pytest.LogCaptureFixture
) -> None:
    keys = KeyFile(tmp_path / "keys.json", check_interval=0)
    key, _ = keys.create("svc", limits=Limits(rpm=1))
    stack = await make_stack(
        auth=True,
        keys_file=str(keys.path),
        limits_backend="redis",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        limits_fail_open=fail_open,
    )
    caplog.set_level(logging.WARNING)
    if fail_open:
        for _ in range(3):  # the rpm limit of 1 cannot be enforced; calls go through
            await stack.chat.CreateChatCompletion(chat_request(), metadata=with_key(key))
        assert "failing open" in caplog.text
    else:
        error = await refused(
            stack.chat.CreateChatCompletion(chat_request(), metadata=with_key(key))
        )
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert rich_details(error)["ErrorInfo"].reason == "LIMITER_UNAVAILABLE"
        assert stack.fake.requests == []
        assert "failing closed" in caplog.text


async def _serve(keys_file: str, redis_url: str) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        *SEEKWIRE,
        "serve",
        "--fake-upstream",
        "--listen",
        "127.0.0.1:0",
        "--limits-backend",
        "redis",
        "--redis-url",
        redis_url,
        "--keys-file",
        keys_file,
        "--drain-delay",
        "0",
        "--metrics-listen",
        "",
        env=clean_env(),
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    async with asyncio.timeout(30):
        while True:
            line = (await process.stderr.readline()).decode()
            assert line, "seekwire exited before listening"
            if match := re.search(r"listening on ([0-9.:\[\]a-z]+:\d+)", line):
                return process, match.group(1)


async def test_three_replicas_share_one_limit(tmp_path: Path, redis_url: str) -> None:
    keys = KeyFile(tmp_path / "keys.json")
    key, _ = keys.create("svc", limits=Limits(rpm=10))
    replicas = await asyncio.gather(*(_serve(str(keys.path), redis_url) for _ in range(3)))
    channels = [grpc.aio.insecure_channel(target) for _, target in replicas]
    try:
        stubs = [chat_pb2_grpc.ChatServiceStub(c) for c in channels]
        started = time.monotonic()

        async def call(i: int) -> grpc.StatusCode:
            try:
                await stubs[i % 3].CreateChatCompletion(chat_request(), metadata=with_key(key))
            except grpc.aio.AioRpcError as error:
                return error.code()
            return grpc.StatusCode.OK

        codes = await asyncio.gather(*(call(i) for i in range(45)))
        elapsed = time.monotonic() - started
    finally:
        for channel in channels:
            await channel.close()
        for process, _ in replicas:
            process.terminate()
            await process.wait()
    admitted = codes.count(grpc.StatusCode.OK)
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 45 - admitted
    # 10 per minute in all, plus what the bucket refilled while the test ran.
    assert 10 <= admitted <= 10 + int(elapsed * 10 / 60) + 1
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}


async def test_converse_turns_count_as_requests(limited: Any) -> None:
    stack, keys = await limited()
    key, _ = keys.create("svc", limits=Limits(rpm=2))
    call = stack.chat.Converse(metadata=with_key(key))
    await call.write(start())
    await call.read()
    for _ in range(2):
        await call.write(say("hi"))
        _, end = await turn(call)
        assert end.WhichOneof("event") == "turn_end"
    await call.write(say("one too many"))
    _, end = await turn(call)
    assert end.error.status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert len(stack.fake.requests) == 2
    await call.done_writing()


async def test_redis_leases_outlive_their_ttl_while_held(redis_url: str) -> None:
    limiter = RedisLimiter(redis_url, fail_open=False, lease_seconds=1.0)
    try:
        assert (await limiter.acquire("principal:long", 1, "stream-a")).allowed
        await asyncio.sleep(2.5)  # longer than the lease: only renewal keeps it
        assert not (await limiter.acquire("principal:long", 1, "stream-b")).allowed
        await limiter.release("principal:long", "stream-a")
        assert (await limiter.acquire("principal:long", 1, "stream-b")).allowed
    finally:
        await limiter.close()


async def test_a_dead_replicas_leases_expire(redis_url: str) -> None:
    gone = RedisLimiter(redis_url, fail_open=False, lease_seconds=0.5)
    assert (await gone.acquire("principal:crashy", 1, "lost")).allowed
    await gone.close()  # the replica dies without releasing
    alive = RedisLimiter(redis_url, fail_open=False, lease_seconds=0.5)
    try:
        await asyncio.sleep(0.8)
        assert (await alive.acquire("principal:crashy", 1, "next")).allowed
    finally:
        await alive.close()
