"""A circuit breaker per upstream endpoint.

Closed: calls flow; it opens after `consecutive` failures in a row, or when at least
`min_calls` calls in the last `window` seconds failed at `failure_ratio` or more.
Open: calls are shed for `open_seconds`. Half-open: up to `probes` calls go through;
a success closes it, a failure opens it again.
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


class CircuitBreaker:
    def __init__(self, settings: BreakerSettings = BreakerSettings()) -> None:
        self._s = settings
        self.state = State.CLOSED
        self._consecutive = 0
        self._outcomes: deque[tuple[float, bool]] = deque()  # (time, failed)
        self._opened_at = 0.0
        self._probing = 0

    def retry_in(self, now: float | None = None) -> float:
        """Seconds until an open breaker lets a probe through (0 when it would now)."""
        if self.state is not State.OPEN:
            return 0.0
        now = time.monotonic() if now is None else now
        return max(0.0, self._opened_at + self._s.open_seconds - now)

    def allow(self) -> bool:
        """Whether a call may go to this endpoint now; a True in half-open takes a probe slot."""
        if self.state is State.OPEN:
            if self.retry_in() > 0:
                return False
            self.state = State.HALF_OPEN
            self._probing = 0
        if self.state is State.HALF_OPEN:
            if self._probing >= self._s.probes:
                return False
            self._probing += 1
        return True

    def abandon(self) -> None:
        """A call that ended without an outcome (the caller left): frees its probe slot."""
        if self.state is State.HALF_OPEN:
            self._probing = max(0, self._probing - 1)

    def record(self, failed: bool) -> None:
        now = time.monotonic()
        if self.state is State.HALF_OPEN:
            self._probing = max(0, self._probing - 1)
            if failed:
                self._open(now)
            else:
                self._close()
            return
        self._outcomes.append((now, failed))
        while self._outcomes and self._outcomes[0][0] < now - self._s.window:
            self._outcomes.popleft()
        self._consecutive = self._consecutive + 1 if failed else 0
        if self.state is State.CLOSED and failed and self._should_open():
            self._open(now)

    def _should_open(self) -> bool:
        if self._consecutive >= self._s.consecutive:
            return True
        calls = len(self._outcomes)
        failures = sum(1 for _, failed in self._outcomes if failed)
        return calls >= self._s.min_calls and failures / calls >= self._s.failure_ratio

    def _open(self, now: float) -> None:
        self.state = State.OPEN
        self._opened_at = now
        self._consecutive = 0
        self._outcomes.clear()

    def _close(self) -> None:
        self.state = State.CLOSED
        self._consecutive = 0
        self._outcomes.clear()
