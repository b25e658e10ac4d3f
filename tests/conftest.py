"""Real things on loopback: the fake DeepSeek over HTTP and a grpc.aio gateway in front of it."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from seekwire.server.app import Gateway
from seekwire.server.config import Settings
from seekwire.server.fake import FakeDeepSeek
from seekwire.v1 import (
    account_pb2_grpc,
    chat_pb2_grpc,
    completion_pb2_grpc,
    model_pb2_grpc,
)

UPSTREAM_KEY = "sk-test-upstream-0123456789abcdef"
SEEKWIRE = [sys.executable, "-m", "seekwire.server.cli"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any seekwire or DeepSeek settings of the machine's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEEKWIRE_", "DEEPSEEK_"))}
    return env | extra


@dataclasses.dataclass
class Stack:
    fake: FakeDeepSeek
    gateway: Gateway
    channel: grpc.aio.Channel
    chat: chat_pb2_grpc.ChatServiceStub
    completion: completion_pb2_grpc.CompletionServiceStub
    models: model_pb2_grpc.ModelServiceStub
    account: account_pb2_grpc.AccountServiceStub


@pytest.fixture
async def fake() -> AsyncIterator[FakeDeepSeek]:
    server = FakeDeepSeek(api_keys=(UPSTREAM_KEY,))
    await server.start()
    yield server
    await server.stop()


StackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def make_stack(fake: FakeDeepSeek) -> AsyncIterator[StackFactory]:
    """Starts a gateway against `fake`; keyword arguments override Settings fields."""
    started: list[Stack] = []

    async def start(**overrides: Any) -> Stack:
        fields: dict[str, Any] = {
            "listen": "127.0.0.1:0",
            "deepseek_api_key": UPSTREAM_KEY,
            "deepseek_base_url": fake.base_url,
            "drain_delay": 0,
            "shutdown_grace": 1,
            "auth": False,  # admission has its own tests
            "metrics_listen": "",  # one Prometheus endpoint per process; its own test scrapes it
        }
        telemetry = overrides.pop("telemetry", None)
        settings = Settings(**(fields | overrides))
        gateway = Gateway(settings, telemetry)
        port = await gateway.start()
        fake.requests.clear()  # the warm-up's GET /models; tests count what callers cause
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        stack = Stack(
            fake,
            gateway,
            channel,
            chat_pb2_grpc.ChatServiceStub(channel),
            completion_pb2_grpc.CompletionServiceStub(channel),
            model_pb2_grpc.ModelServiceStub(channel),
            account_pb2_grpc.AccountServiceStub(channel),
        )
        started.append(stack)
        return stack

    yield start
    for stack in started:
        await stack.channel.close()
        await stack.gateway.drain(delay=0)


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    return await make_stack()


async def refused(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    """The error a call ends with (it must fail)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 5.0) -> None:
    """Polls a condition that another process or a background task makes true."""
    async with asyncio.timeout(seconds):
        while not await check():  # noqa: ASYNC110 (the condition lives in another process)
            await asyncio.sleep(0.05)


def rich_details(error: grpc.aio.AioRpcError) -> dict[str, Any]:
    """The google.rpc details of a failed call, by type name."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "no grpc-status-details-bin trailer"
    found: dict[str, Any] = {}
    for detail in status.details:
        for cls in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.RetryInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.QuotaFailure,
        ):
            if detail.Is(cls.DESCRIPTOR):
                message = cls()
                detail.Unpack(message)
                found[cls.DESCRIPTOR.name] = message
    return found


class Served:
    """A `seekwire serve --fake-upstream` process (what `make run` starts, auth on) and an API
    key it accepts; its log is kept."""

    def __init__(self, process: asyncio.subprocess.Process, target: str, api_key: str) -> None:
        self.process = process
        self.target = target
        self.api_key = api_key
        self.metrics_url = ""
        self.log: list[str] = []
        self._drain = asyncio.create_task(self._keep_log())

    async def _keep_log(self) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            self.log.append(line.decode())


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    keys_file = str(tmp_path / "keys.json")
    metrics_port = free_port()
    minted = await asyncio.create_subprocess_exec(
        *SEEKWIRE,
        "keys",
        "--keys-file",
        keys_file,
        "create",
        "--name",
        "tests",
        "--scopes",
        "chat,admin",
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    api_key = (await minted.communicate())[0].decode().strip()
    assert minted.returncode == 0
    process = await asyncio.create_subprocess_exec(
        *SEEKWIRE,
        "serve",
        "--fake-upstream",
        "--listen",
        "127.0.0.1:0",
        "--drain-delay",
        "0.5",
        env=clean_env(
            SEEKWIRE_KEYS_FILE=keys_file, SEEKWIRE_METRICS_LISTEN=f"127.0.0.1:{metrics_port}"
        ),
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    target = ""
    async with asyncio.timeout(20):
        while not target:
            line = (await process.stderr.readline()).decode()
            assert line, "seekwire exited before listening"
            if match := re.search(r"listening on ([0-9.:\[\]a-z]+:\d+)", line):
                target = match.group(1)
    served = Served(process, target, api_key)
    served.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    yield served
    if process.returncode is None:
        process.kill()
    await process.wait()
    await served._drain


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on loopback for the session (.ci/run installs it)."""
    executable = shutil.which("redis-server")
    assert executable, "redis-server is required: apt-get install redis-server (.ci/run does)"
    port = free_port()
    process = subprocess.Popen(
        [
            executable,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path_factory.mktemp("redis")),
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's Redis, emptied for this test."""
    import redis

    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    client.close()
    return redis_server
