"""The circuit breaker and the retry budget on their own (pure state machines)."""

from __future__ import annotations

import time

from seekwire.server.upstream.breaker import BreakerSettings, CircuitBreaker, State
from seekwire.server.upstream.budget import RetryBudget


def breaker(**settings: float) -> CircuitBreaker:
    return CircuitBreaker(BreakerSettings(**settings))  # type: ignore[arg-type]


def fail(b: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        permit = b.allow()
        assert permit is not None
        permit.record(failed=True)


def test_consecutive_failures_open_it() -> None:
    b = breaker(consecutive=3, min_calls=1000)
    fail(b, 2)
    ok = b.allow()
    assert ok is not None
    ok.record(failed=False)  # a success breaks the run
    fail(b, 2)
    assert b.state is State.CLOSED
    fail(b)
    assert b.state is State.OPEN
    assert b.allow() is None
    assert b.retry_in() > 0


def test_failure_ratio_opens_it() -> None:
    b = breaker(consecutive=1000, min_calls=10, failure_ratio=0.5)
    for i in range(10):
        permit = b.allow()
        assert permit is not None
        permit.record(failed=i % 2 == 1)
    assert b.state is State.OPEN


def test_half_open_lets_one_probe_and_closes_on_success() -> None:
    b = breaker(consecutive=1, open_seconds=0.05, probes=1)
    fail(b)
    time.sleep(0.06)
    probe = b.allow()
    assert probe is not None
    assert b.state is State.HALF_OPEN
    assert b.allow() is None  # one probe at a time
    probe.record(failed=False)
    assert b.state is State.CLOSED


def test_a_failed_probe_opens_it_again() -> None:
    b = breaker(consecutive=1, open_seconds=0.05)
    fail(b)
    time.sleep(0.06)
    probe = b.allow()
    assert probe is not None
    probe.record(failed=True)
    assert b.state is State.OPEN


def test_an_abandoned_probe_frees_its_slot() -> None:
    b = breaker(consecutive=1, open_seconds=0.05)
    fail(b)
    time.sleep(0.06)
    probe = b.allow()
    assert probe is not None
    probe.abandon()
    probe.abandon()  # settling twice changes nothing
    assert b.allow() is not None


def test_outcomes_from_before_a_state_change_are_ignored() -> None:
    b = breaker(consecutive=1, open_seconds=0.05)
    slow = b.allow()  # admitted while closed
    assert slow is not None
    fail(b)
    time.sleep(0.06)
    probe = b.allow()
    assert probe is not None
    slow.record(failed=False)  # late, from the closed state: does not decide the probe
    assert b.state is State.HALF_OPEN
    probe.record(failed=False)
    assert b.state is State.CLOSED


def test_budget_allows_a_share_of_requests() -> None:
    budget = RetryBudget(ratio=0.2, min_retries=1, window=10)
    for _ in range(50):
        budget.request()
    spent = 0
    while budget.allows_retry():
        budget.spend()
        spent += 1
    assert spent == 10


def test_budget_memory_is_constant() -> None:
    budget = RetryBudget()
    for _ in range(100_000):
        budget.request()
    assert len(budget._requests) == 10
