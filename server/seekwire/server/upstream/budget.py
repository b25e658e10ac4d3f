"""A retry budget: retries may add at most `ratio` of the requests of the last `window` seconds
(plus `min_retries` in any window), so an outage does not turn into a retry storm."""

from __future__ import annotations

import time
from collections import deque


class RetryBudget:
    def __init__(self, ratio: float = 0.2, min_retries: int = 10, window: float = 10.0) -> None:
        self._ratio = ratio
        self._min = min_retries
        self._window = window
        self._requests: deque[float] = deque()
        self._retries: deque[float] = deque()

    def _trim(self, now: float) -> None:
        horizon = now - self._window
        for times in (self._requests, self._retries):
            while times and times[0] < horizon:
                times.popleft()

    def request(self) -> None:
        self._requests.append(time.monotonic())

    def try_retry(self) -> bool:
        """Takes a retry from the budget if one is left."""
        now = time.monotonic()
        self._trim(now)
        if len(self._retries) >= max(self._min, self._ratio * len(self._requests)):
            return False
        self._retries.append(now)
        return True
