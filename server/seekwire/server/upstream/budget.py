"""A retry budget: retries may add at most `ratio` of the requests of the last `window` seconds
(plus `min_retries` in any window), so an outage does not turn into a retry storm. Counts are
kept per second, so memory stays constant whatever the traffic."""

from __future__ import annotations

import math
import time


class RetryBudget:
    def __init__(self, ratio: float = 0.2, min_retries: int = 10, window: float = 10.0) -> None:
        self._ratio = ratio
        self._min = min_retries
        self._slots = max(1, math.ceil(window))
        self._requests = [0] * self._slots
        self._retries = [0] * self._slots
        self._second = 0

    def _advance(self) -> int:
        """Index of the current second, clearing the seconds that left the window."""
        now = int(time.monotonic())
        if now - self._second >= self._slots:
            self._requests = [0] * self._slots
            self._retries = [0] * self._slots
        else:
            for second in range(self._second + 1, now + 1):
                self._requests[second % self._slots] = 0
                self._retries[second % self._slots] = 0
        self._second = max(self._second, now)
        return now % self._slots

    def request(self) -> None:
        self._requests[self._advance()] += 1

    def allows_retry(self) -> bool:
        self._advance()
        return sum(self._retries) < max(self._min, self._ratio * sum(self._requests))

    def spend(self) -> None:
        self._retries[self._advance()] += 1
