"""When the next byte from DeepSeek must arrive before the call counts as stalled."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Upstream timeouts in seconds, each reported with its own ErrorInfo reason.

    connect: TCP and TLS set-up (UPSTREAM_CONNECT_TIMEOUT).
    first_byte: silence before the first data event; DeepSeek's keep-alives while it
        queues the request count as life (UPSTREAM_FIRST_BYTE_TIMEOUT).
    queue: how long DeepSeek may keep a request queued, sending only keep-alives
        (UPSTREAM_QUEUE_TIMEOUT).
    idle: once data flows, the longest gap between data events; keep-alive comments
        do not reset it (UPSTREAM_STALLED).
    total: the whole call (UPSTREAM_TIMEOUT). The caller's deadline bounds them all.
    """

    connect: float = 10.0
    first_byte: float = 60.0
    queue: float = 600.0
    idle: float = 60.0
    total: float = 1800.0


class StallClock:
    """Tracks one upstream call against its timeouts and the caller's deadline."""

    __slots__ = (
        "_deadline",
        "_first_byte",
        "_first_data_by",
        "_idle",
        "_last_data",
        "deadline_is_callers",
    )

    def __init__(self, timeouts: Timeouts, now: float, caller_deadline: float | None) -> None:
        self._deadline = now + timeouts.total
        self.deadline_is_callers = False
        if caller_deadline is not None and caller_deadline < self._deadline:
            self._deadline = caller_deadline
            self.deadline_is_callers = True
        self._first_data_by = min(now + timeouts.queue, self._deadline)
        self._first_byte = timeouts.first_byte
        self._idle = timeouts.idle
        self._last_data: float | None = None

    @property
    def deadline(self) -> float:
        return self._deadline

    @property
    def started(self) -> bool:
        return self._last_data is not None

    def read_by(self, now: float) -> float:
        """The time by which the next read must return."""
        if self._last_data is None:
            return min(now + self._first_byte, self._first_data_by)
        return min(self._last_data + self._idle, self._deadline)

    def data(self, now: float) -> None:
        self._last_data = now

    def expired_reason(self, now: float) -> str:
        """Which limit a read that timed out at `now` ran into, as an ErrorInfo reason."""
        if now >= self._deadline:
            return "DEADLINE_EXCEEDED" if self.deadline_is_callers else "UPSTREAM_TIMEOUT"
        if self._last_data is None:
            return (
                "UPSTREAM_QUEUE_TIMEOUT"
                if now >= self._first_data_by
                else "UPSTREAM_FIRST_BYTE_TIMEOUT"
            )
        return "UPSTREAM_STALLED"
