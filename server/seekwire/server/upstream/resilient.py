"""Retries, failover and circuit breaking around the endpoint pool; the Upstream handlers use.

A call is retried only before anything reached the caller, only for failures that say
"try again" (connect errors, 429, 500, 502, 503, 504, a body or stream cut before any
data), with full-jitter exponential backoff or DeepSeek's Retry-After, within the
caller's deadline, the attempt limit and the retry budget. A key DeepSeek rejects
(401/402) leaves rotation and the call moves to the next key or endpoint at once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass

from seekwire.server.upstream.budget import RetryBudget
from seekwire.server.upstream.client import JSON, CallInfo
from seekwire.server.upstream.errors import UpstreamError
from seekwire.server.upstream.pool import Endpoint, Pool, UpstreamKey

RETRYABLE = frozenset(
    {
        "UPSTREAM_CONNECT_FAILED",
        "UPSTREAM_CONNECT_TIMEOUT",
        "UPSTREAM_RATE_LIMITED",
        "UPSTREAM_SERVER_ERROR",
        "UPSTREAM_BAD_GATEWAY",
        "UPSTREAM_OVERLOADED",
        "UPSTREAM_GATEWAY_TIMEOUT",
        "UPSTREAM_STREAM_CUT",
        "UPSTREAM_EMPTY_RESPONSE",
    }
)
KEY_REJECTED = frozenset({"UPSTREAM_AUTH", "UPSTREAM_INSUFFICIENT_BALANCE"})
# Failures that say the endpoint is unwell (for its breaker), as opposed to the request or account.
ENDPOINT_FAILURES = RETRYABLE - {"UPSTREAM_RATE_LIMITED"} | {
    "UPSTREAM_STALLED",
    "UPSTREAM_FIRST_BYTE_TIMEOUT",
    "UPSTREAM_TIMEOUT",
    "UPSTREAM_BAD_RESPONSE",
    "UPSTREAM_STREAM_ERROR",
}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    base_delay: float = 0.2
    max_delay: float = 5.0
    max_retry_after: float = 30.0  # a longer Retry-After is reported, not waited for


class ResilientUpstream:
    def __init__(self, pool: Pool, policy: RetryPolicy, budget: RetryBudget) -> None:
        self.pool = pool
        self._policy = policy
        self._budget = budget

    def _record(self, endpoint: Endpoint, key: UpstreamKey, error: UpstreamError | None) -> bool:
        """Feeds the outcome to the breaker and the key; True when the key left rotation."""
        if error is None:
            endpoint.breaker.record(failed=False)
        elif error.reason in KEY_REJECTED:
            endpoint.breaker.record(failed=False)  # the endpoint answered; the key is the problem
            if self.pool.live_keys() > 1:  # the last key is never ejected: it may recover
                self.pool.eject(endpoint, key, error)
                return True
        elif error.reason in ENDPOINT_FAILURES:
            endpoint.breaker.record(failed=True)
        else:
            endpoint.breaker.record(failed=False)
        return False

    async def _again(
        self, error: UpstreamError, attempt: int, deadline: float | None, ejected: bool
    ) -> bool:
        """Whether to make another attempt after `error`, waiting first as the policy says."""
        if attempt >= self._policy.max_attempts:
            return False
        if error.reason in KEY_REJECTED:
            return ejected  # straight to the next key; a lone key's 401/402 is the answer
        if error.reason not in RETRYABLE or not self._budget.try_retry():
            return False
        if error.retry_after is not None:
            if error.retry_after > self._policy.max_retry_after:
                return False
            delay = error.retry_after
        else:
            ceiling = min(self._policy.max_delay, self._policy.base_delay * 2 ** (attempt - 1))
            delay = random.uniform(0, ceiling)
        loop = asyncio.get_running_loop()
        if deadline is not None and loop.time() + delay >= deadline:
            return False
        await asyncio.sleep(delay)
        return True

    def _fail(self, error: UpstreamError, attempt: int) -> UpstreamError:
        error.attempts = attempt
        return error

    async def call(
        self,
        method: str,
        path: str,
        body: bytes | None,
        deadline: float | None,
        info: CallInfo | None = None,
    ) -> JSON:
        info = info or CallInfo()
        self._budget.request()
        avoid: set[str] = set()
        attempt = 0
        while True:
            attempt += 1
            try:
                endpoint, key = self.pool.pick(avoid)
            except UpstreamError as error:
                raise self._fail(error, attempt - 1) from None
            info.attempts, info.endpoint = attempt, endpoint.name
            endpoint.in_flight += 1
            try:
                result = await endpoint.client.call(
                    method, path, endpoint.body_for(body), deadline, api_key=key.secret
                )
            except UpstreamError as error:
                ejected = self._record(endpoint, key, error)
                avoid.add(endpoint.name)
                if not await self._again(error, attempt, deadline, ejected):
                    raise self._fail(error, attempt) from None
                continue
            except BaseException:
                endpoint.breaker.abandon()
                raise
            finally:
                endpoint.in_flight -= 1
            self._record(endpoint, key, None)
            return result

    async def stream(
        self, path: str, body: bytes, deadline: float | None, info: CallInfo | None = None
    ) -> AsyncGenerator[JSON, None]:
        info = info or CallInfo()
        self._budget.request()
        avoid: set[str] = set()
        attempt = 0
        while True:
            attempt += 1
            try:
                endpoint, key = self.pool.pick(avoid)
            except UpstreamError as error:
                raise self._fail(error, attempt - 1) from None
            info.attempts, info.endpoint = attempt, endpoint.name
            endpoint.in_flight += 1
            events = endpoint.client.stream(
                path, endpoint.body_for(body) or b"", deadline, api_key=key.secret
            )
            try:
                async with aclosing(events):
                    try:
                        first = await anext(events)
                    except StopAsyncIteration:
                        self._record(endpoint, key, None)
                        return
                    except UpstreamError as error:
                        ejected = self._record(endpoint, key, error)
                        avoid.add(endpoint.name)
                        if not await self._again(error, attempt, deadline, ejected):
                            raise self._fail(error, attempt) from None
                        continue
                    # Committed: from here on a failure ends the caller's stream, never a retry.
                    try:
                        yield first
                        async for event in events:
                            yield event
                    except UpstreamError as error:
                        self._record(endpoint, key, error)
                        raise self._fail(error, attempt) from None
                    self._record(endpoint, key, None)
                    return
            except (GeneratorExit, asyncio.CancelledError):
                endpoint.breaker.abandon()
                raise
            finally:
                endpoint.in_flight -= 1
