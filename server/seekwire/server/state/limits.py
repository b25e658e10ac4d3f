"""Rate-limit state: token buckets (requests and tokens per minute) and concurrency leases.

Two backends behind one interface: in-process (default, nothing to install) and Redis
(atomic Lua scripts, so N replicas never admit N x a limit). Buckets hold `limit` tokens and
refill at limit/minute; a bucket may go below zero when real usage exceeds an estimate, which
then delays later requests: that is the correction with real usage.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)
WINDOW = 60.0


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    remaining: float  # tokens left (or slots left) after this decision
    retry_after: float = 0.0  # seconds until the request would be allowed


class LimiterUnavailable(Exception):
    """The shared limiter cannot be reached and the fail mode is closed."""


class Limiter(Protocol):
    async def take(self, key: str, limit: int, amount: float) -> Decision:
        """Takes `amount` from the bucket if it holds that much."""
        ...

    async def adjust(self, key: str, limit: int, amount: float) -> None:
        """Takes `amount` (negative gives back) without a check: usage correction."""
        ...

    async def acquire(self, key: str, limit: int, lease: str) -> Decision:
        """Holds one of `limit` concurrent slots under `lease` until release."""
        ...

    async def release(self, key: str, lease: str) -> None: ...

    async def close(self) -> None: ...


def _refill(tokens: float, last: float, now: float, limit: int) -> float:
    return min(float(limit), tokens + max(0.0, now - last) * limit / WINDOW)


def _deficit_wait(tokens: float, amount: float, limit: int) -> float:
    if amount > limit:
        return math.inf
    return (amount - tokens) * WINDOW / limit


class MemoryLimiter:
    """Per process; exact under concurrency because the event loop runs one step at a time."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._slots: dict[str, set[str]] = {}

    async def take(self, key: str, limit: int, amount: float) -> Decision:
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (float(limit), now))
        tokens = _refill(tokens, last, now, limit)
        if tokens >= amount:
            self._buckets[key] = (tokens - amount, now)
            return Decision(True, tokens - amount)
        self._buckets[key] = (tokens, now)
        return Decision(False, tokens, _deficit_wait(tokens, amount, limit))

    async def adjust(self, key: str, limit: int, amount: float) -> None:
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (float(limit), now))
        self._buckets[key] = (_refill(tokens, last, now, limit) - amount, now)

    async def acquire(self, key: str, limit: int, lease: str) -> Decision:
        held = self._slots.setdefault(key, set())
        if len(held) >= limit:
            return Decision(False, 0, 1.0)
        held.add(lease)
        return Decision(True, limit - len(held))

    async def release(self, key: str, lease: str) -> None:
        held = self._slots.get(key)
        if held is not None:
            held.discard(lease)
            if not held:
                del self._slots[key]

    async def close(self) -> None:
        return None


_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit = tonumber(ARGV[1])
local amount = tonumber(ARGV[2])
local check = ARGV[3] == '1'
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or limit
local ts = tonumber(state[2]) or now
tokens = math.min(limit, tokens + math.max(0, now - ts) * limit / 60)
local allowed = 1
if check and tokens < amount then
  allowed = 0
else
  tokens = tokens - amount
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], 120000)
return {allowed, tostring(tokens)}
"""

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZCARD', KEYS[1])
if held >= tonumber(ARGV[1]) then
  return {0, held}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) * 1000))
return {1, held + 1}
"""

_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = math.ceil(tonumber(ARGV[1]) * 1000)
for i, lease in ipairs(ARGV) do
  if i > 1 then
    redis.call('ZADD', KEYS[i - 1], 'XX', now + tonumber(ARGV[1]), lease)
    redis.call('PEXPIRE', KEYS[i - 1], ttl)
  end
end
return #ARGV - 1
"""


class RedisLimiter:
    """Shared by every replica. Slots are leases that expire if a replica dies; live ones are
    renewed in the background, so a stream may last longer than a lease."""

    def __init__(
        self,
        url: str,
        *,
        fail_open: bool,
        prefix: str = "seekwire:limit:",
        lease_seconds: float = 120.0,
    ) -> None:
        import redis.asyncio as redis

        self._redis = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._take = self._redis.register_script(_TAKE)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._renew = self._redis.register_script(_RENEW)
        self._fail_open = fail_open
        self._prefix = prefix
        self._lease_seconds = lease_seconds
        self._leases: dict[str, str] = {}  # lease -> slot key
        self._renewer: asyncio.Task[None] | None = None
        self.failures = 0  # Redis errors absorbed or reported, for telemetry

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        import redis.exceptions

        try:
            return await script(keys=keys, args=args)
        except (redis.exceptions.RedisError, OSError) as exc:
            self.failures += 1
            if self.failures == 1 or self.failures % 1000 == 0:
                log.warning(
                    "rate-limit backend unreachable (%s); failing %s (%d errors so far)",
                    type(exc).__name__,
                    "open" if self._fail_open else "closed",
                    self.failures,
                )
            if self._fail_open:
                return None
            raise LimiterUnavailable(str(type(exc).__name__)) from None

    async def take(self, key: str, limit: int, amount: float) -> Decision:
        result = await self._call(self._take, [self._prefix + key], [limit, amount, 1])
        if result is None:
            return Decision(True, limit)
        allowed, tokens = int(result[0]), float(result[1])
        if allowed:
            return Decision(True, tokens)
        return Decision(False, tokens, _deficit_wait(tokens, amount, limit))

    async def adjust(self, key: str, limit: int, amount: float) -> None:
        await self._call(self._take, [self._prefix + key], [limit, amount, 0])

    async def acquire(self, key: str, limit: int, lease: str) -> Decision:
        slot_key = self._prefix + key
        result = await self._call(self._acquire, [slot_key], [limit, lease, self._lease_seconds])
        if result is None:
            return Decision(True, limit)
        if not int(result[0]):
            return Decision(False, 0, 1.0)
        self._leases[lease] = slot_key
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_leases())
        return Decision(True, limit - int(result[1]))

    async def release(self, key: str, lease: str) -> None:
        import redis.exceptions

        slot_key = self._leases.pop(lease, self._prefix + key)
        try:
            await self._redis.zrem(slot_key, lease)
        except (redis.exceptions.RedisError, OSError):
            self.failures += 1  # the lease expires by itself

    async def _renew_leases(self) -> None:
        while self._leases:
            await asyncio.sleep(self._lease_seconds / 3)
            leases = list(self._leases.items())
            if not leases:
                continue
            try:
                await self._call(
                    self._renew,
                    [k for _, k in leases],
                    [self._lease_seconds, *(lease for lease, _ in leases)],
                )
            except LimiterUnavailable:
                continue  # counted and logged; the next round tries again

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
        await self._redis.aclose()
