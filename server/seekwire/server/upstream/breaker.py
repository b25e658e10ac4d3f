"""A circuit breaker per upstream endpoint.

Closed: calls flow; it opens after `consecutive` failures in a row, or when at least
`min_calls` calls in the last `window` seconds failed at `failure_ratio` or more.
Open: calls are shed for `open_seconds`. Half-open: up to `probes` calls go through;
a success closes it, a failure opens it again.

Every call let through holds a Permit and settles it exactly once (record or abandon);
outcomes of permits from an earlier state are ignored, so a slow call admitted while
closed cannot decide a half-open probe.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from enum import Enum


class State(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    consecutive: int = 10
    failure_ratio: float = 0.5
    min_calls: int = 20
    window: float = 30.0
    open_seconds: float = 10.0
    probes: int = 1


class Permit:
    __slots__ = ("_breaker", "_generation", "_settled")

    def __init__(self, breaker: CircuitBreaker, generation: int) -> None:
        self._breaker = breaker
        self._generation = generation
        self._settled = False

    def record(self, failed: bool) -> None:
        if not self._settled:
            self._settled = True
            self._breaker._outcome(self._generation, failed)

    def abandon(self) -> None:
        """The call ended without telling anything about the endpoint (the caller left)."""
        if not self._settled:
            self._settled = True
            self._breaker._abandoned(self._generation)


class CircuitBreaker:
    def __init__(self, settings: BreakerSettings | None = None) -> None:
        self._s = settings or BreakerSettings()
        self.state = State.CLOSED
        self._generation = 0  # bumped on every change of state
        self._consecutive = 0
        self._outcomes: deque[tuple[float, bool]] = deque()  # (time, failed)
        self._failures = 0  # failed outcomes in the deque
        self._opened_at = 0.0
        self._probing = 0

    def retry_in(self, now: float | None = None) -> float:
        """Seconds until an open breaker lets a probe through (0 when it would now)."""
        if self.state is not State.OPEN:
            return 0.0
        now = time.monotonic() if now is None else now
        return max(0.0, self._opened_at + self._s.open_seconds - now)

    def allow(self) -> Permit | None:
        """A permit when a call may go to this endpoint now; in half-open it is a probe."""
        if self.state is State.OPEN:
            if self.retry_in() > 0:
                return None
            self._change(State.HALF_OPEN)
        if self.state is State.HALF_OPEN:
            if self._probing >= self._s.probes:
                return None
            self._probing += 1
        return Permit(self, self._generation)

    def _abandoned(self, generation: int) -> None:
        if generation == self._generation and self.state is State.HALF_OPEN:
            self._probing -= 1

    def _outcome(self, generation: int, failed: bool) -> None:
        if generation != self._generation:
            return  # admitted under an earlier state: says nothing about this one
        now = time.monotonic()
        if self.state is State.HALF_OPEN:
            self._probing -= 1
            if failed:
                self._open(now)
            else:
                self._change(State.CLOSED)
            return
        self._outcomes.append((now, failed))
        self._failures += failed
        horizon = now - self._s.window
        while self._outcomes and self._outcomes[0][0] < horizon:
            self._failures -= self._outcomes.popleft()[1]
        self._consecutive = self._consecutive + 1 if failed else 0
        if failed and self._should_open():
            self._open(now)

    def _should_open(self) -> bool:
        if self._consecutive >= self._s.consecutive:
            return True
        calls = len(self._outcomes)
        return calls >= self._s.min_calls and self._failures / calls >= self._s.failure_ratio

    def _open(self, now: float) -> None:
        self._change(State.OPEN)
        self._opened_at = now

    def _change(self, state: State) -> None:
        self.state = state
        self._generation += 1
        self._consecutive = 0
        self._probing = 0
        self._outcomes.clear()
        self._failures = 0
