"""Retries, failover, key ejection and circuit breaking, with several fake DeepSeeks as endpoints."""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from seekwire.server.fake import Behavior, FakeDeepSeek
from seekwire.v1 import chat_pb2
from tests.conftest import UPSTREAM_KEY, Stack, StackFactory, free_port, refused, rich_details
from tests.test_chat import chat_request

FAST = {"retry_base_delay": 0.01, "retry_max_delay": 0.05}


@pytest.fixture
async def second_fake() -> AsyncIterator[FakeDeepSeek]:
    server = FakeDeepSeek(api_keys=(UPSTREAM_KEY,))
    await server.start()
    yield server
    await server.stop()


def upstreams(
    path: Path, *endpoints: tuple[str, str, list[str]], weights: list[float] | None = None
) -> str:
    lines = []
    for i, (name, url, keys) in enumerate(endpoints):
        quoted = ", ".join(f'"{k}"' for k in keys)
        weight = weights[i] if weights else 1
        lines.append(
            f'[[upstream]]\nname = "{name}"\nbase_url = "{url}"\napi_keys = [{quoted}]\nweight = {weight}\n'
        )
    path.write_text("\n".join(lines))
    return str(path)


async def attempts_of(call: Any) -> str:
    return dict(await call.trailing_metadata())["x-seekwire-attempts"]


async def test_two_503_then_success_is_one_success(make_stack: StackFactory) -> None:
    stack = await make_stack(**FAST)
    stack.fake.push(Behavior(status=503), Behavior(status=503))
    call = stack.chat.CreateChatCompletion(chat_request())
    answer = await call
    assert answer.choices[0].message.content
    assert await attempts_of(call) == "3"
    assert [r.status for r in stack.fake.requests] == [503, 503, 200]


async def test_streams_retry_before_their_first_chunk(make_stack: StackFactory) -> None:
    stack = await make_stack(**FAST)
    stack.fake.push(Behavior(status=502), Behavior(cut_after=0))
    call = stack.chat.StreamChatCompletion(chat_request())
    chunks = [c async for c in call]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert len({c.id for c in chunks}) == 1  # one upstream answer, nothing duplicated
    assert await attempts_of(call) == "3"


async def test_retry_after_is_honoured(make_stack: StackFactory) -> None:
    stack = await make_stack(**FAST)
    stack.fake.push(Behavior(status=503, retry_after=0.4))
    await stack.chat.CreateChatCompletion(chat_request())
    first, second = stack.fake.requests
    assert second.received_at - first.received_at >= 0.4


async def test_retry_after_beyond_the_cap_is_reported_not_waited(make_stack: StackFactory) -> None:
    stack = await make_stack(retry_max_retry_after=1, **FAST)
    stack.fake.push(Behavior(status=429, retry_after=120))
    error = await refused(stack.chat.CreateChatCompletion(chat_request()))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert rich_details(error)["RetryInfo"].retry_delay.seconds == 120
    assert len(stack.fake.requests) == 1


async def test_persistent_429_ends_resource_exhausted_after_the_attempts(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(**FAST)
    stack.fake.push(*(Behavior(status=429, retry_after=0.01) for _ in range(5)))
    error = await refused(stack.chat.CreateChatCompletion(chat_request()))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = rich_details(error)
    assert details["ErrorInfo"].metadata["attempts"] == "3"
    assert "RetryInfo" in details
    assert dict(error.trailing_metadata())["x-seekwire-attempts"] == "3"
    assert len(stack.fake.requests) == 3


async def test_retry_budget_stops_a_retry_storm(make_stack: StackFactory) -> None:
    # Only the floor of 10 retries per 10 s; breakers kept out of the way.
    stack = await make_stack(
        retry_budget_ratio=0.0, breaker_consecutive=1000, breaker_min_calls=1000, **FAST
    )
    stack.fake.default = Behavior(status=503)
    results = await asyncio.gather(
        *(refused(stack.chat.CreateChatCompletion(chat_request())) for _ in range(20)),
    )
    assert {e.code() for e in results} == {grpc.StatusCode.UNAVAILABLE}
    assert len(stack.fake.requests) <= 20 + 10


@pytest.mark.parametrize("status", [400, 402, 422])
async def test_no_retry_for_what_retrying_cannot_fix(make_stack: StackFactory, status: int) -> None:
    stack = await make_stack(**FAST)
    stack.fake.push(Behavior(status=status))
    error = await refused(stack.chat.CreateChatCompletion(chat_request()))
    assert error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
    assert len(stack.fake.requests) == 1


async def test_no_retry_after_the_first_token(make_stack: StackFactory) -> None:
    stack = await make_stack(**FAST)
    stack.fake.push(Behavior(cut_after=3))
    received: list[chat_pb2.ChatCompletionChunk] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for chunk in stack.chat.StreamChatCompletion(chat_request()):
            received.append(chunk)
    assert len(received) == 3
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert rich_details(caught.value)["ErrorInfo"].reason == "UPSTREAM_STREAM_CUT"
    assert len(stack.fake.requests) == 1


async def test_a_stall_is_not_retried(make_stack: StackFactory) -> None:
    stack = await make_stack(idle_timeout=0.3, **FAST)
    stack.fake.push(Behavior(stall_after=2))
    error = await refused(_drain(stack))
    assert rich_details(error)["ErrorInfo"].reason == "UPSTREAM_STALLED"
    assert len(stack.fake.requests) == 1


async def _drain(stack: Stack) -> None:
    async for _ in stack.chat.StreamChatCompletion(chat_request()):
        pass


async def test_failover_when_an_endpoint_is_down(make_stack: StackFactory, tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    stack = await make_stack(**FAST)
    path = upstreams(
        tmp_path / "u.toml",
        ("down", down, [UPSTREAM_KEY]),
        ("up", stack.fake.base_url, [UPSTREAM_KEY]),
        weights=[10, 1],
    )
    stack = await make_stack(upstreams_file=path, breaker_consecutive=2, **FAST)
    for _ in range(10):
        answer = await stack.chat.CreateChatCompletion(chat_request())
        assert answer.choices[0].message.content
    assert stack.gateway.pool is not None
    assert stack.gateway.pool.endpoints["down"].breaker.state.value == "open"


async def test_failover_when_a_key_is_rejected(
    make_stack: StackFactory, second_fake: FakeDeepSeek, tmp_path: Path
) -> None:
    path = upstreams(
        tmp_path / "u.toml",
        ("a", second_fake.base_url, ["sk-revoked-at-deepseek"]),
        ("b", second_fake.base_url, [UPSTREAM_KEY]),
    )
    stack = await make_stack(upstreams_file=path, warmup=False, **FAST)
    for _ in range(6):
        await stack.chat.CreateChatCompletion(chat_request())
    used = [r.headers["Authorization"] for r in second_fake.requests]
    assert used.count("Bearer sk-revoked-at-deepseek") == 1  # tried once, then out of rotation
    assert used.count(f"Bearer {UPSTREAM_KEY}") == 6
    assert stack.gateway.pool is not None
    assert stack.gateway.pool.stats["keys_ejected"] == 1


async def test_two_keys_on_one_endpoint(
    make_stack: StackFactory, tmp_path: Path, fake: FakeDeepSeek
) -> None:
    path = upstreams(tmp_path / "u.toml", ("one", fake.base_url, ["sk-bad-one", UPSTREAM_KEY]))
    stack = await make_stack(upstreams_file=path, warmup=False, **FAST)
    for _ in range(4):
        await stack.chat.CreateChatCompletion(chat_request())
    keys = [r.headers["Authorization"] for r in fake.requests]
    assert keys.count("Bearer sk-bad-one") == 1


async def test_warmup_finds_a_rejected_key_before_serving(
    make_stack: StackFactory, tmp_path: Path, fake: FakeDeepSeek
) -> None:
    path = upstreams(tmp_path / "u.toml", ("one", fake.base_url, ["sk-bad-one", UPSTREAM_KEY]))
    stack = await make_stack(upstreams_file=path, **FAST)
    assert stack.gateway.pool is not None
    assert stack.gateway.pool.stats["keys_ejected"] == 1
    await stack.chat.CreateChatCompletion(chat_request())
    assert [r.headers["Authorization"] for r in fake.requests] == [f"Bearer {UPSTREAM_KEY}"]


async def test_breaker_opens_sheds_then_recovers(make_stack: StackFactory) -> None:
    stack = await make_stack(breaker_consecutive=2, breaker_open_seconds=0.5, retry_max_attempts=1)
    stack.fake.push(Behavior(status=500), Behavior(status=500))
    for _ in range(2):
        await refused(stack.chat.CreateChatCompletion(chat_request()))
    error = await refused(stack.chat.CreateChatCompletion(chat_request()))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    details = rich_details(error)
    assert details["ErrorInfo"].reason == "UPSTREAM_CIRCUIT_OPEN"
    assert details["RetryInfo"].retry_delay.ToNanoseconds() > 0
    assert len(stack.fake.requests) == 2  # shed without an upstream call
    await asyncio.sleep(0.6)  # the breaker's open period
    answer = await stack.chat.CreateChatCompletion(chat_request())  # the half-open probe
    assert answer.choices[0].message.content
    await stack.chat.CreateChatCompletion(chat_request())  # closed again
    assert len(stack.fake.requests) == 4


async def test_endpoint_file_reloads_without_restart(
    make_stack: StackFactory, second_fake: FakeDeepSeek, tmp_path: Path, fake: FakeDeepSeek
) -> None:
    path = tmp_path / "u.toml"
    upstreams(path, ("first", fake.base_url, [UPSTREAM_KEY]))
    stack = await make_stack(upstreams_file=str(path), **FAST)
    await stack.chat.CreateChatCompletion(chat_request())
    upstreams(path, ("second", second_fake.base_url, [UPSTREAM_KEY]))
    assert stack.gateway.pool is not None
    pool = stack.gateway.pool
    async with asyncio.timeout(10):
        while "second" not in pool.endpoints:  # noqa: ASYNC110 (the watcher polls the file)
            await asyncio.sleep(0.1)
    await stack.chat.CreateChatCompletion(chat_request())
    assert second_fake.requests[-1].body["messages"] == [{"role": "user", "content": "Hello"}]
    assert list(pool.endpoints) == ["second"]


async def test_caller_deadline_wins_over_retries(make_stack: StackFactory) -> None:
    stack = await make_stack(**FAST)
    stack.fake.push(Behavior(status=503, retry_after=5))
    error = await refused(stack.chat.CreateChatCompletion(chat_request(), timeout=1.0))
    # The retry would outlast the caller: the gateway answers with what it knows instead.
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert len(stack.fake.requests) == 1
    stack.fake.push(Behavior(delay=10))
    error = await refused(stack.chat.CreateChatCompletion(chat_request(), timeout=0.5))
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    record = stack.fake.requests[-1]
    await asyncio.wait_for(record.ended.wait(), 5)
    assert record.disconnected


async def test_upstream_gzip_requests(make_stack: StackFactory) -> None:
    stack = await make_stack(upstream_gzip=True)
    long = chat_request(messages=[{"role": "user", "content": "x" * 4000}])
    await stack.chat.CreateChatCompletion(long)
    record = stack.fake.requests[-1]
    assert record.headers["Content-Encoding"] == "gzip"
    assert record.body["messages"][0]["content"] == "x" * 4000


SOAK_SECONDS = float(os.environ.get("SEEKWIRE_SOAK_SECONDS", "60"))


@pytest.mark.timeout(SOAK_SECONDS + 60)
async def test_soak_200_concurrent_against_20_percent_failures(make_stack: StackFactory) -> None:
    """Every request ends in one success or one precise status; nothing is lost or doubled."""
    stack = await make_stack()
    stack.fake.default = Behavior(fail_ratio=0.2, fail_status=503, tokens=8)
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + SOAK_SECONDS
    outcomes: Counter[str] = Counter()
    answers: list[str] = []

    async def caller(n: int) -> None:
        while loop.time() < stop_at:
            streaming = random.random() < 0.5
            try:
                if streaming:
                    chunks = [c async for c in stack.chat.StreamChatCompletion(chat_request())]
                    assert chunks[-1].choices[0].finish_reason == "stop"
                    assert len({c.id for c in chunks}) == 1
                    answers.append(chunks[0].id)
                else:
                    answer = await stack.chat.CreateChatCompletion(chat_request())
                    answers.append(answer.id)
                outcomes["OK"] += 1
            except grpc.aio.AioRpcError as error:
                reason = rich_details(error)["ErrorInfo"].reason
                outcomes[f"{error.code().name}/{reason}"] += 1

    await asyncio.gather(*(caller(n) for n in range(200)))
    completed_upstream = [r for r in stack.fake.requests if r.status == 200 and r.completed]
    # 20% failures and three attempts within a 20% retry budget: nearly every call succeeds.
    assert outcomes["OK"] >= 0.9 * sum(outcomes.values()), outcomes
    assert set(outcomes) <= {
        "OK",
        "UNAVAILABLE/UPSTREAM_OVERLOADED",
        "UNAVAILABLE/UPSTREAM_CIRCUIT_OPEN",
    }, outcomes
    # Exactly one upstream answer per success: no call was answered twice or lost.
    summary = f"{dict(outcomes)}; {len(stack.fake.requests)} upstream requests"
    logging.getLogger(__name__).info("soak %gs: %s", SOAK_SECONDS, summary)
    assert len(answers) == len(set(answers)) == outcomes["OK"] == len(completed_upstream), summary


async def test_a_lone_rejected_key_is_answered_not_retried(make_stack: StackFactory) -> None:
    stack = await make_stack(warmup=False, **FAST)
    stack.fake.push(Behavior(status=401))
    error = await refused(stack.chat.CreateChatCompletion(chat_request()))
    assert rich_details(error)["ErrorInfo"].reason == "UPSTREAM_AUTH"
    assert len(stack.fake.requests) == 1
    await stack.chat.CreateChatCompletion(chat_request())  # the key stayed in rotation


async def test_several_rejected_keys_do_not_use_up_the_attempts(
    make_stack: StackFactory, tmp_path: Path, fake: FakeDeepSeek
) -> None:
    path = upstreams(
        tmp_path / "u.toml",
        ("one", fake.base_url, ["sk-bad-1", "sk-bad-2", "sk-bad-3", UPSTREAM_KEY]),
    )
    stack = await make_stack(upstreams_file=path, warmup=False, retry_max_attempts=2, **FAST)
    answer = await stack.chat.CreateChatCompletion(chat_request())
    assert answer.choices[0].message.content
    assert [r.status for r in fake.requests] == [401, 401, 401, 200]


async def test_a_malformed_event_is_a_precise_status(make_stack: StackFactory) -> None:
    stack = await make_stack(retry_max_attempts=1)
    server = stack.fake
    server.push(Behavior(status=None))
    # An SSE event that is JSON but not an object: `data: 1`.
    from seekwire.server.fake import app as fake_app

    original = fake_app.chat_chunks
    fake_app.chat_chunks = lambda plan, behavior: [1, *original(plan, behavior)]  # type: ignore[assignment, list-item]
    try:
        error = await refused(_drain(stack))
    finally:
        fake_app.chat_chunks = original
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert rich_details(error)["ErrorInfo"].reason == "UPSTREAM_BAD_RESPONSE"


async def test_a_cancelled_probe_does_not_wedge_the_breaker(make_stack: StackFactory) -> None:
    stack = await make_stack(breaker_consecutive=1, breaker_open_seconds=0.3, retry_max_attempts=1)
    stack.fake.push(Behavior(status=500), Behavior(delay=5))
    await refused(stack.chat.CreateChatCompletion(chat_request()))
    await asyncio.sleep(0.35)
    probe = stack.chat.CreateChatCompletion(chat_request())  # held by the fake's delay
    await asyncio.sleep(0.2)
    probe.cancel()
    await asyncio.sleep(0.1)
    answer = await stack.chat.CreateChatCompletion(chat_request())  # the next probe goes through
    assert answer.choices[0].message.content
