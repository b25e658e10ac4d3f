"""Load generation: closed-loop (fixed concurrency) and open-loop (fixed rate) drivers, and the
statistics of what they measured (latency, time to first token, gaps between chunks, errors)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

# A call returns nothing (unary) or yields once per streamed chunk.
Unary = Callable[[], Awaitable[object]]
Streamed = Callable[[], AsyncIterator[object]]


@dataclass
class Stats:
    name: str
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    chunks: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    cpu_seconds: float = 0.0  # the gateway's, while this ran
    rss_kib: int = 0

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    @property
    def chunks_per_second(self) -> float:
        return self.chunks / self.seconds if self.seconds else 0.0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _measure(stats: Stats, unary: Unary | None, streamed: Streamed | None) -> None:
    started = time.perf_counter()
    try:
        if unary is not None:
            await unary()
        else:
            assert streamed is not None
            previous = None
            async for _ in streamed():
                now = time.perf_counter()
                if previous is None:
                    stats.ttfts.append(now - started)
                else:
                    stats.gaps.append(now - previous)
                previous = now
                stats.chunks += 1
    except Exception as exc:  # counted by kind, the run goes on
        code = getattr(exc, "code", None)
        stats.errors[code().name if callable(code) else type(exc).__name__] += 1
        return
    stats.latencies.append(time.perf_counter() - started)


async def closed_loop(
    name: str,
    concurrency: int,
    seconds: float,
    *,
    unary: Unary | None = None,
    streamed: Streamed | None = None,
) -> Stats:
    stats = Stats(name)
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            await _measure(stats, unary, streamed)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    stats.seconds = time.perf_counter() - started
    return stats


async def open_loop(
    name: str,
    rate: float,
    seconds: float,
    *,
    unary: Unary | None = None,
    streamed: Streamed | None = None,
) -> Stats:
    """Starts calls at `rate` per second whatever the answers' pace (no coordinated omission)."""
    stats = Stats(name)
    tasks: set[asyncio.Task[None]] = set()
    started = time.perf_counter()
    for n in range(int(rate * seconds)):
        delay = started + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(_measure(stats, unary, streamed))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    stats.seconds = time.perf_counter() - started
    return stats
