"""Gateway overhead against the floor (a direct HTTP call to the same fake DeepSeek).

Starts the fake and the gateway as separate processes on loopback, then drives them
from this process: unary at c=1 and c=50, and streaming relay throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

from seekwire.client import create_channel
from seekwire.server.auth.keys import KeyFile
from seekwire.server.caller import Limits
from seekwire.v1 import chat_pb2, chat_pb2_grpc

RESULTS = Path(__file__).parent / "results"
BODY = {
    "model": "deepseek-v4-flash",
    "messages": [{"role": "user", "content": "Say hi"}],
    "thinking": {"type": "disabled"},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def process(
    *args: str, ready: str, env: dict[str, str] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env
    )
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        while ready not in (line := (await proc.stdout.readline()).decode()):
            if not line:
                raise RuntimeError(f"{args} exited before it was ready")
    drain = asyncio.create_task(proc.stdout.read())
    try:
        yield proc
    finally:
        proc.terminate()
        await proc.wait()
        drain.cancel()


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    latencies: list[float]
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def closed_loop(
    name: str, call: Callable[[], Awaitable[None]], concurrency: int, seconds: float
) -> Result:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                await call()
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Result(name, len(latencies), time.perf_counter() - started, latencies, errors)


async def main(seconds: float) -> None:
    fake_port, gw_port = free_port(), free_port()
    RESULTS.mkdir(exist_ok=True)
    keys_file = RESULTS / "bench-keys.json"
    keys_file.unlink(missing_ok=True)
    # All admission features on: a caller key with limits far above the load, so every call
    # is authenticated and passes the limiter.
    caller_key, _ = KeyFile(keys_file).create(
        "bench", limits=Limits(rpm=10**9, tpm=10**12, streams=10**6)
    )
    env = dict(
        os.environ,
        DEEPSEEK_API_KEY="sk-bench",
        DEEPSEEK_BASE_URL=f"http://127.0.0.1:{fake_port}",
        SEEKWIRE_KEYS_FILE=str(keys_file),
    )
    seekwire = [sys.executable, "-m", "seekwire.server.cli"]
    async with (
        process(*seekwire, "fake", "--port", str(fake_port), ready="fake DeepSeek at"),
        process(
            *seekwire, "serve", "--listen", f"127.0.0.1:{gw_port}", ready="listening on", env=env
        ),
    ):
        await asyncio.sleep(1.0)
        body = orjson.dumps(BODY)
        stream_body = orjson.dumps(
            BODY | {"stream": True, "messages": [{"role": "user", "content": "[fake tokens=64]"}]}
        )
        headers = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}
        url = f"http://127.0.0.1:{fake_port}/chat/completions"
        request = chat_pb2.ChatCompletionRequest(**BODY)  # type: ignore[arg-type]
        stream_request = chat_pb2.ChatCompletionRequest(
            **(BODY | {"messages": [{"role": "user", "content": "[fake tokens=64]"}]})
        )  # type: ignore[arg-type]
        results: list[Result] = []
        async with aiohttp.ClientSession(headers=headers) as http:
            channels = [
                create_channel(f"127.0.0.1:{gw_port}", api_key=caller_key) for _ in range(4)
            ]
            stubs = [chat_pb2_grpc.ChatServiceStub(c) for c in channels]
            await stubs[0].CreateChatCompletion(request)
            turn = 0

            async def direct() -> None:
                async with http.post(url, data=body) as response:
                    orjson.loads(await response.read())

            async def gateway() -> None:
                nonlocal turn
                turn += 1
                await stubs[turn % len(stubs)].CreateChatCompletion(request)

            chunks = 0

            async def direct_stream() -> None:
                nonlocal chunks
                async with http.post(url, data=stream_body) as response:
                    async for line in response.content:
                        if line.startswith(b"data: {"):
                            orjson.loads(line[6:])
                            chunks += 1

            async def gateway_stream() -> None:
                nonlocal chunks, turn
                turn += 1
                async for _ in stubs[turn % len(stubs)].StreamChatCompletion(stream_request):
                    chunks += 1

            for concurrency in (1, 50):
                results.append(
                    await closed_loop(f"direct unary c={concurrency}", direct, concurrency, seconds)
                )
                results.append(
                    await closed_loop(
                        f"seekwire unary c={concurrency}", gateway, concurrency, seconds
                    )
                )
            rates: dict[str, float] = {}
            for name, fn in (
                ("direct stream c=20", direct_stream),
                ("seekwire stream c=20", gateway_stream),
            ):
                chunks = 0
                result = await closed_loop(name, fn, 20, seconds)
                results.append(result)
                rates[name] = chunks / result.seconds
            for channel in channels:
                await channel.close()
    lines = [
        "| scenario | requests/s | p50 ms | p90 ms | p99 ms | errors | chunks/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rate = f"{rates[r.name]:,.0f}" if r.name in rates else ""
        lines.append(
            f"| {r.name} | {r.rps:,.0f} | {r.pct(0.5):.2f} | {r.pct(0.9):.2f} | {r.pct(0.99):.2f} | {r.errors} | {rate} |"
        )
    by = {r.name: r for r in results}
    for c in (1, 50):
        d, s = by[f"direct unary c={c}"], by[f"seekwire unary c={c}"]
        lines.append(
            f"\noverhead unary c={c}: p50 {s.pct(0.5) - d.pct(0.5):.2f} ms, p99 {s.pct(0.99) - d.pct(0.99):.2f} ms"
        )
    table = "\n".join(lines)
    print(table)
    (RESULTS / "latest.md").write_text(
        f"# seekwire bench ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, {seconds:g}s per scenario)\n\n{table}\n"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    asyncio.run(main(parser.parse_args().seconds))
