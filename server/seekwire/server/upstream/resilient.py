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
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, StatusCode

from seekwire.server.telemetry.content import Answer, input_messages
from seekwire.server.telemetry.instruments import ATTEMPT, Instruments
from seekwire.server.upstream.breaker import Permit
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
# Outcomes that are the caller's doing, not the endpoint's.
CALLER_OUTCOMES = frozenset({"DEADLINE_EXCEEDED"})
# Failures that say the endpoint is unwell (for its breaker), as opposed to the request or account.
ENDPOINT_FAILURES = RETRYABLE - {"UPSTREAM_RATE_LIMITED"} | {
    "UPSTREAM_NOT_FOUND",
    "UPSTREAM_QUEUE_TIMEOUT",
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
    def __init__(
        self,
        pool: Pool,
        policy: RetryPolicy,
        budget: RetryBudget,
        *,
        tracer: trace.Tracer,
        instruments: Instruments,
        capture_content: bool = False,
    ) -> None:
        self.pool = pool
        self._capture_content = capture_content
        self._policy = policy
        self._budget = budget
        self._tracer = tracer
        self._instruments = instruments

    def _record(
        self, endpoint: Endpoint, key: UpstreamKey, permit: Permit, error: UpstreamError | None
    ) -> bool:
        """Settles the breaker permit and the key; True when the key left rotation."""
        if error is None:
            permit.record(failed=False)
        elif error.reason in KEY_REJECTED:
            permit.record(failed=False)  # the endpoint answered; the key is the problem
            if self.pool.live_keys() > 1:  # the last key is never ejected: it may recover
                self.pool.eject(endpoint, key, error)
                return True
        elif error.reason in ENDPOINT_FAILURES:
            permit.record(failed=True)
        elif error.reason in CALLER_OUTCOMES:
            permit.abandon()  # the caller's deadline says nothing about the endpoint
        else:
            permit.record(failed=False)
        return False

    async def _again(self, error: UpstreamError, attempts: int, deadline: float | None) -> bool:
        """Whether to retry after `error`, having waited as the policy says."""
        if attempts >= self._policy.max_attempts or error.reason not in RETRYABLE:
            return False
        if error.retry_after is not None:
            if error.retry_after > self._policy.max_retry_after:
                return False
            delay = error.retry_after
        else:
            ceiling = min(self._policy.max_delay, self._policy.base_delay * 2 ** (attempts - 1))
            delay = random.uniform(0, ceiling)
        loop = asyncio.get_running_loop()
        if deadline is not None and loop.time() + delay >= deadline:
            return False
        if not self._budget.allows_retry():
            return False
        self._budget.spend()
        await asyncio.sleep(delay)
        return True

    def _fail(self, error: UpstreamError, attempt: int) -> UpstreamError:
        error.attempts = attempt
        return error

    def _begin(
        self, info: CallInfo, avoid: set[str], attempt: int, body: bytes | None
    ) -> tuple[Endpoint, UpstreamKey, Permit, _Attempt]:
        """Picks where attempt number `attempt` goes and starts its telemetry."""
        try:
            endpoint, key, permit = self.pool.pick(avoid)
        except UpstreamError as error:
            raise self._fail(error, attempt - 1) from None
        info.attempts, info.endpoint = attempt, endpoint.name
        if attempt > 1:
            self._instruments.upstream_retries.add(1, endpoint.name)
        content = body if self._capture_content else None
        telemetry = _Attempt(self._tracer, self._instruments, info, endpoint, attempt, content)
        endpoint.in_flight += 1
        return endpoint, key, permit, telemetry

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
        attempt = retries = 0  # every attempt; attempts that count against max_attempts
        while True:
            attempt += 1
            retries += 1
            endpoint, key, permit, telemetry = self._begin(info, avoid, attempt, body)
            failure: UpstreamError | None = None
            try:
                result = await endpoint.client.call(
                    method,
                    path,
                    endpoint.body_for(body),
                    deadline,
                    api_key=key.secret,
                    headers=telemetry.headers,
                )
            except UpstreamError as error:
                failure = error
            else:
                telemetry.observe(result)
                telemetry.end(None)
                self._record(endpoint, key, permit, None)
                return result
            finally:
                endpoint.in_flight -= 1
                if failure is None:  # settled already, or cancelled, or a surprise
                    permit.abandon()
                    telemetry.end(None, abandoned=True)
            if self._failed(failure, endpoint, key, permit, telemetry, avoid):
                retries -= 1  # moving to the next key is not a retry of the request
                continue
            if not await self._again(failure, retries, deadline):
                raise self._fail(failure, attempt) from None

    def _failed(
        self,
        failure: UpstreamError,
        endpoint: Endpoint,
        key: UpstreamKey,
        permit: Permit,
        telemetry: _Attempt,
        avoid: set[str],
    ) -> bool:
        """Settles a failed attempt; True when its key left rotation, so the call moves to the
        next key at once."""
        telemetry.end(failure)
        self._record(endpoint, key, permit, failure)
        avoid.add(endpoint.name)
        return failure.reason in KEY_REJECTED and key.ejected_until > time.monotonic()

    async def stream(
        self, path: str, body: bytes, deadline: float | None, info: CallInfo | None = None
    ) -> AsyncGenerator[JSON, None]:
        info = info or CallInfo()
        self._budget.request()
        avoid: set[str] = set()
        attempt = retries = 0
        while True:
            attempt += 1
            retries += 1
            endpoint, key, permit, telemetry = self._begin(info, avoid, attempt, body)
            failure: UpstreamError | None = None
            try:
                events = endpoint.client.stream(
                    path,
                    endpoint.body_for(body) or b"",
                    deadline,
                    api_key=key.secret,
                    headers=telemetry.headers,
                )
                async with aclosing(events):
                    try:
                        first = await anext(events)
                    except StopAsyncIteration:
                        telemetry.end(None)
                        self._record(endpoint, key, permit, None)
                        return
                    except UpstreamError as error:
                        failure = error
                    else:
                        # Committed: from here on a failure ends the caller's stream, never a retry.
                        try:
                            telemetry.observe(first)
                            yield first
                            async for event in events:
                                telemetry.observe(event)
                                yield event
                        except UpstreamError as error:
                            telemetry.end(error)
                            self._record(endpoint, key, permit, error)
                            raise self._fail(error, attempt) from None
                        telemetry.end(None)
                        self._record(endpoint, key, permit, None)
                        return
            finally:
                endpoint.in_flight -= 1
                if failure is None:  # settled already, or cancelled, or a surprise
                    permit.abandon()
                    telemetry.end(None, abandoned=True)
            if self._failed(failure, endpoint, key, permit, telemetry, avoid):
                retries -= 1  # moving to the next key is not a retry of the request
                continue
            if not await self._again(failure, retries, deadline):
                raise self._fail(failure, attempt) from None


class _Attempt:
    """Telemetry of one upstream attempt: a CLIENT span named by the GenAI conventions
    (`chat deepseek-v4-flash`), its `traceparent` for DeepSeek, and the attempt's metrics."""

    __slots__ = (
        "_answer",
        "_ended",
        "_finish",
        "_instruments",
        "_labels",
        "_response",
        "_span",
        "_started",
        "_usage",
        "headers",
    )

    def __init__(
        self,
        tracer: trace.Tracer,
        instruments: Instruments,
        info: CallInfo,
        endpoint: Endpoint,
        attempt: int,
        content: bytes | None = None,
    ) -> None:
        """`content`: the request body, when prompts and answers go on the span."""
        self._instruments = instruments
        operation = info.operation or "chat"
        self._labels = (operation, "deepseek", endpoint.client.host, endpoint.name)
        parent = info.trace_context
        self.headers: dict[str, str] = {}
        parent_span = trace.get_current_span(parent) if parent is not None else None
        if parent_span is not None and not parent_span.is_recording():
            # An unsampled trace records no child either: DeepSeek gets the RPC's context.
            self._span: trace.Span = trace.NonRecordingSpan(parent_span.get_span_context())
            propagate.inject(self.headers, context=parent)
        else:
            self._span = tracer.start_span(
                f"{operation} {info.model}".strip(),
                context=parent,
                kind=SpanKind.CLIENT,
                attributes={
                    **dict(zip(ATTEMPT, self._labels, strict=True)),
                    "gen_ai.request.model": info.model,
                    "seekwire.upstream.attempt": attempt,
                },
            )
            propagate.inject(self.headers, context=trace.set_span_in_context(self._span))
        self._answer: Answer | None = None
        if content is not None and self._span.is_recording():
            self._span.set_attribute("gen_ai.input.messages", input_messages(content))
            self._answer = Answer()
        self._started = time.perf_counter()
        self._response: JSON = {}
        self._finish: list[str] = []
        self._usage: JSON | None = None
        self._ended = False

    def observe(self, event: JSON) -> None:
        if "model" in event:
            self._response = event
        for choice in event.get("choices") or ():
            if choice.get("finish_reason"):
                self._finish.append(choice["finish_reason"])
        if event.get("usage"):
            self._usage = event["usage"]
        if self._answer is not None:
            self._answer.observe(event)

    def end(self, error: UpstreamError | None, *, abandoned: bool = False) -> None:
        if self._ended:
            return
        self._ended = True
        span, instruments, labels = self._span, self._instruments, self._labels
        model = str(self._response.get("model") or "")
        recording = span.is_recording()
        if recording and model:
            span.set_attribute("gen_ai.response.model", model)
            span.set_attribute("gen_ai.response.id", str(self._response.get("id") or ""))
        if recording and self._finish:
            span.set_attribute("gen_ai.response.finish_reasons", self._finish)
        if self._answer is not None:
            span.set_attribute("gen_ai.output.messages", self._answer.messages())
        kind = ""
        if error is not None or abandoned:
            kind = error.reason if error is not None else "CANCELLED"
            span.set_attribute("error.type", kind)
            span.set_status(StatusCode.ERROR, kind)
        if self._usage:
            prompt = int(self._usage.get("prompt_tokens") or 0)
            completion = int(self._usage.get("completion_tokens") or 0)
            if recording:
                span.set_attribute("gen_ai.usage.input_tokens", prompt)
                span.set_attribute("gen_ai.usage.output_tokens", completion)
            instruments.token_usage.record(prompt, *labels, model, "input")
            instruments.token_usage.record(completion, *labels, model, "output")
        span.end()
        elapsed = time.perf_counter() - self._started
        instruments.operation_duration.record(elapsed, *labels, model, kind)
        instruments.upstream_attempts.add(1, labels[3], kind or "ok")
