"""`make bench`: seekwire against the floor (a direct HTTP call to the same fake DeepSeek), the
framework floor (bench/relay.py: grpc.aio and aiohttp with no features), seekwire with every
span exported, and LiteLLM's proxy pointed at that fake, side by side in one run; then seekwire
alone for Converse, 1,000 idle streams and a soak. Writes bench/results/latest.md and .png."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import orjson

from bench.load import Stats, closed_loop, pct
from bench.peers import (
    LITELLM_MASTER_KEY,
    cpu_seconds,
    free_port,
    litellm,
    litellm_config,
    otlp_sink,
    process,
    rss_kib,
)
from seekwire.client import create_channel
from seekwire.server.auth.keys import KeyFile
from seekwire.server.caller import Limits
from seekwire.v1 import chat_pb2, chat_pb2_grpc

RESULTS = Path(__file__).parent / "results"
MODEL = "deepseek-v4-flash"
SAY_HI = [{"role": "user", "content": "Say hi"}]
LONG = [{"role": "user", "content": "[fake tokens=64]"}]


def body(messages: list[dict[str, str]], stream: bool) -> bytes:
    return orjson.dumps(
        {"model": MODEL, "messages": messages, "thinking": {"type": "disabled"}, "stream": stream}
    )


class Http:
    """OpenAI-style HTTP target: the fake itself (the floor) or LiteLLM's proxy."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self._session, self._url = session, url + "/chat/completions"

    async def unary(self) -> None:
        async with self._session.post(self._url, data=body(SAY_HI, False)) as response:
            response.raise_for_status()
            orjson.loads(await response.read())

    async def stream(self) -> Any:
        async with self._session.post(self._url, data=body(LONG, True)) as response:
            response.raise_for_status()
            async for line in response.content:
                if line.startswith(b"data: {"):
                    yield orjson.loads(line[6:])


class Gateway:
    def __init__(self, channels: list[grpc.aio.Channel]) -> None:
        self._stubs = [chat_pb2_grpc.ChatServiceStub(c) for c in channels]
        self._turn = 0
        self._hi = chat_pb2.ChatCompletionRequest(
            model=MODEL, messages=SAY_HI, thinking={"type": "disabled"}
        )  # type: ignore[arg-type]
        self._long = chat_pb2.ChatCompletionRequest(
            model=MODEL, messages=LONG, thinking={"type": "disabled"}
        )  # type: ignore[arg-type]

    def stub(self) -> chat_pb2_grpc.ChatServiceStub:
        self._turn += 1
        return self._stubs[self._turn % len(self._stubs)]

    async def unary(self) -> None:
        await self.stub().CreateChatCompletion(self._hi)

    async def stream(self) -> Any:
        async for chunk in self.stub().StreamChatCompletion(self._long):
            yield chunk

    async def converse_turns(self, turns: int) -> Any:
        call = self.stub().Converse()
        await call.write(
            chat_pb2.ConverseRequest(
                start=chat_pb2.ConverseStart(model=MODEL, thinking={"type": "disabled"})
            )
        )  # type: ignore[arg-type]
        await call.read()
        for _ in range(turns):
            await call.write(
                chat_pb2.ConverseRequest(
                    user_message=chat_pb2.ConverseUserMessage(content="[fake tokens=16] hi")
                )
            )
            while (event := await call.read()).WhichOneof("event") not in ("turn_end", "error"):
                yield event
        await call.done_writing()


async def measured(
    name: str,
    concurrency: int,
    seconds: float,
    pid: int | None,
    *,
    unary: Any = None,
    streamed: Any = None,
) -> Stats:
    """A closed-loop run, with the gateway's CPU seconds and RSS when `pid` is given."""
    before = cpu_seconds(pid) if pid else 0.0
    stats = await closed_loop(name, concurrency, seconds, unary=unary, streamed=streamed)
    if pid:
        stats.cpu_seconds = cpu_seconds(pid) - before
        stats.rss_kib = rss_kib(pid)
    print(f"  {stats.name}: {stats.rps:,.0f}/s p50 {pct(stats.latencies, 0.5):.2f} ms", flush=True)
    return stats


async def scenarios(name: str, target: Any, seconds: float, pid: int | None) -> list[Stats]:
    runs = [
        ("unary c=1", 1, target.unary, None),
        ("unary c=50", 50, target.unary, None),
        ("stream c=1", 1, None, target.stream),  # time to first token, unloaded
        ("stream c=20", 20, None, target.stream),
    ]
    return [
        await measured(f"{name} {label}", c, seconds, pid, unary=unary, streamed=streamed)
        for label, c, unary, streamed in runs
    ]


async def relay_scenarios(fake_url: str, seconds: float) -> list[Stats]:
    """The same scenarios through bench/relay.py: grpc.aio and aiohttp with no features."""
    port = free_port()
    relay = (sys.executable, "-m", "bench.relay", f"127.0.0.1:{port}", fake_url)
    async with process(*relay, ready="relay listening on") as proc:
        channels = [create_channel(f"127.0.0.1:{port}") for _ in range(16)]
        rows = await scenarios("relay", Gateway(channels), seconds, proc.pid)
        for channel in channels:
            await channel.close()
    return rows


async def with_spans_exported(
    seekwire: list[str], env: dict[str, str], key: str, seconds: float
) -> tuple[list[Stats], str]:
    """A second gateway that records every span (sampler ratio 1) and sends them over OTLP/HTTP
    to a sink in this process: what tracing costs when it is on."""
    port = free_port()
    async with otlp_sink() as sink:
        traced_env = dict(
            env,
            SEEKWIRE_OTEL_TRACES_EXPORTER="otlp-http",
            SEEKWIRE_OTEL_ENDPOINT=f"{sink.url}/v1/traces",
            SEEKWIRE_METRICS_LISTEN=f"127.0.0.1:{free_port()}",
        )
        args = ("serve", "--listen", f"127.0.0.1:{port}", "--log-level", "info")
        async with process(*seekwire, *args, ready="listening on", env=traced_env) as traced:
            channels = [create_channel(f"127.0.0.1:{port}", api_key=key) for _ in range(16)]
            gateway = Gateway(channels)
            await gateway.unary()
            rows = [
                await measured(
                    f"seekwire+spans {label}", c, seconds, traced.pid, unary=gateway.unary
                )
                for label, c in (("unary c=1", 1), ("unary c=50", 50))
            ]
            for channel in channels:
                await channel.close()
        await asyncio.sleep(6)  # the batch processor exports every 5 s
        note = (
            f"seekwire+spans: every span exported over OTLP/HTTP to a sink on loopback "
            f"({sink.exports} exports, {sink.bytes / 1e6:.1f} MB received)."
        )
    return rows, note


async def idle_streams(gateway: Gateway, pid: int, count: int) -> float:
    """KiB of gateway RSS per open, idle Converse stream."""
    before = rss_kib(pid)
    calls = []
    for _ in range(count):
        call = gateway.stub().Converse()
        await call.write(chat_pb2.ConverseRequest(start=chat_pb2.ConverseStart(model=MODEL)))
        calls.append(call)
    for call in calls:
        await call.read()
    await asyncio.sleep(1.0)
    after = rss_kib(pid)
    for call in calls:
        call.cancel()
    return (after - before) / count


async def soak(gateway: Gateway, pid: int, seconds: float) -> tuple[list[tuple[float, int]], Stats]:
    samples: list[tuple[float, int]] = []
    started = time.perf_counter()

    async def sample() -> None:
        while True:
            samples.append((time.perf_counter() - started, rss_kib(pid)))
            await asyncio.sleep(max(1.0, seconds / 40))

    sampler = asyncio.create_task(sample())
    stats = await closed_loop("seekwire soak c=20", 20, seconds, streamed=gateway.stream)
    sampler.cancel()
    samples.append((time.perf_counter() - started, rss_kib(pid)))
    return samples, stats


def table(rows: list[Stats]) -> str:
    lines = [
        "| scenario | calls/s | p50 ms | p90 ms | p99 ms | TTFT p50 ms | gap p99 ms | chunks/s | errors | CPU s | RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ttft = f"{pct(r.ttfts, 0.5):.2f}" if r.ttfts else ""
        gap = f"{pct(r.gaps, 0.99):.2f}" if r.gaps else ""
        chunks = f"{r.chunks_per_second:,.0f}" if r.chunks else ""
        errors = ", ".join(f"{k} {v}" for k, v in r.errors.items()) or "0"
        cpu = f"{r.cpu_seconds:.1f}" if r.cpu_seconds else ""
        rss = f"{r.rss_kib / 1024:.0f}" if r.rss_kib else ""
        lines.append(
            f"| {r.name} | {r.rps:,.0f} | {pct(r.latencies, 0.5):.2f} | {pct(r.latencies, 0.9):.2f} | "
            f"{pct(r.latencies, 0.99):.2f} | {ttft} | {gap} | {chunks} | {errors} | {cpu} | {rss} |"
        )
    return "\n".join(lines)


def chart(rows: list[Stats], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r.name for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8))
    top.barh(labels, [r.rps for r in rows], color="#3b7dd8")
    top.set_xlabel("calls per second (higher is better)")
    bottom.barh(labels, [pct(r.latencies, 0.5) for r in rows], color="#d8823b")
    bottom.set_xlabel("p50 latency, ms (lower is better)")
    for axis in (top, bottom):
        axis.invert_yaxis()
        axis.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def main(args: argparse.Namespace) -> None:
    RESULTS.mkdir(exist_ok=True)
    fake_port, gw_port, ll_port = free_port(), free_port(), free_port()
    keys_file = RESULTS / "bench-keys.json"
    keys_file.unlink(missing_ok=True)
    # As shipped: auth on and the limiter on (limits far above the load), retries and breakers on.
    key, _ = KeyFile(keys_file).create("bench", limits=Limits(rpm=10**9, tpm=10**12, streams=10**6))
    fake_url = f"http://127.0.0.1:{fake_port}"
    env = dict(
        os.environ,
        DEEPSEEK_API_KEY="sk-bench",
        DEEPSEEK_BASE_URL=fake_url,
        SEEKWIRE_KEYS_FILE=str(keys_file),
        SEEKWIRE_METRICS_LISTEN=f"127.0.0.1:{free_port()}",
        SEEKWIRE_LOG_LEVEL="warning",
    )
    seekwire = [sys.executable, "-m", "seekwire.server.cli"]
    rows: list[Stats] = []
    notes: list[str] = []
    async with (
        process(*seekwire, "fake", "--port", str(fake_port), ready="fake DeepSeek at"),
        process(
            *seekwire,
            "serve",
            "--listen",
            f"127.0.0.1:{gw_port}",
            "--log-level",
            "info",
            ready="listening on",
            env=env,
        ) as gateway_process,
        aiohttp.ClientSession(
            headers={"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}
        ) as http,
    ):
        channels = [create_channel(f"127.0.0.1:{gw_port}", api_key=key) for _ in range(16)]
        gateway = Gateway(channels)
        await gateway.unary()
        print("direct (floor):", flush=True)
        rows += await scenarios("direct", Http(http, fake_url), args.seconds, None)
        print("relay (framework floor):", flush=True)
        rows += await relay_scenarios(fake_url, args.seconds)
        print("seekwire:", flush=True)
        rows += await scenarios("seekwire", gateway, args.seconds, gateway_process.pid)
        print("seekwire, every span exported:", flush=True)
        traced_rows, note = await with_spans_exported(seekwire, env, key, args.seconds)
        rows += traced_rows
        notes.append(note)
        executable = None if args.no_litellm else litellm()
        if executable is not None:
            config = litellm_config(RESULTS / "litellm.yaml", fake_url)
            # The cost map is fetched from the internet unless told to use the packaged copy.
            ll_env = dict(os.environ, LITELLM_LOG="ERROR", LITELLM_LOCAL_MODEL_COST_MAP="True")
            async with process(
                str(executable),
                "--config",
                str(config),
                "--port",
                str(ll_port),
                "--host",
                "127.0.0.1",
                port=ll_port,
                env=ll_env,
            ) as ll:
                ll_url = f"http://127.0.0.1:{ll_port}"
                headers = {
                    "Authorization": f"Bearer {LITELLM_MASTER_KEY}",
                    "Content-Type": "application/json",
                }
                async with aiohttp.ClientSession(headers=headers) as ll_http:
                    await Http(ll_http, ll_url).unary()
                    print("litellm:", flush=True)
                    rows += await scenarios("litellm", Http(ll_http, ll_url), args.seconds, ll.pid)
        else:
            notes.append("LiteLLM was not measured (not installable here, or --no-litellm).")
        print("seekwire alone:", flush=True)

        async def converse() -> Any:
            async for event in gateway.converse_turns(4):
                yield event

        stats = await closed_loop(
            "seekwire converse (4 turns) c=20", 20, args.seconds, streamed=converse
        )
        rows.append(stats)
        per_stream = await idle_streams(gateway, gateway_process.pid, 1000)
        notes.append(f"1,000 idle Converse streams: {per_stream:.1f} KiB of gateway RSS each.")
        samples, soaked = await soak(gateway, gateway_process.pid, args.soak_seconds)
        rows.append(soaked)
        base = samples[max(1, len(samples) // 10)][1]
        growth = (samples[-1][1] - base) / base * 100
        notes.append(
            f"Soak {args.soak_seconds:g} s (streams, c=20): RSS {base / 1024:.0f} -> {samples[-1][1] / 1024:.0f} MiB "
            f"({growth:+.1f}% after the first tenth)."
        )
        for channel in channels:
            await channel.close()
    by = {r.name: r for r in rows}
    for label in ("unary c=1", "unary c=50", "stream c=1", "stream c=20"):
        floor = by[f"direct {label}"]
        for peer in ("relay", "seekwire", "litellm"):
            r = by.get(f"{peer} {label}")
            if r is not None and r.latencies:
                notes.append(
                    f"{peer} {label}: overhead p50 {pct(r.latencies, 0.5) - pct(floor.latencies, 0.5):.2f} ms, "
                    f"p99 {pct(r.latencies, 0.99) - pct(floor.latencies, 0.99):.2f} ms"
                )
            if r is not None and r.ttfts and label == "stream c=1":
                notes.append(
                    f"{peer} {label}: time-to-first-token overhead p50 "
                    f"{pct(r.ttfts, 0.5) - pct(floor.ttfts, 0.5):.2f} ms"
                )
    if "litellm unary c=50" in by and by["litellm unary c=50"].rps:
        notes.append(
            f"Throughput at unary c=50: seekwire / LiteLLM = {by['seekwire unary c=50'].rps / by['litellm unary c=50'].rps:.1f}x"
        )
    report = (
        f"# seekwire bench ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, "
        f"{args.seconds:g} s per scenario; load generator, fake and gateway on one machine)\n\n"
        + table(rows)
        + "\n\n"
        + "\n".join(f"- {n}" for n in notes)
        + "\n"
    )
    (RESULTS / "latest.md").write_text(report)
    chart([r for r in rows if "soak" not in r.name], RESULTS / "latest.png")
    print(report)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="per scenario")
    parser.add_argument("--soak-seconds", type=float, default=600.0)
    parser.add_argument("--no-litellm", action="store_true")
    asyncio.run(main(parser.parse_args()))
