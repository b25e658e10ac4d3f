"""One record per RPC, filled in by the layers it passes through and read once at its end."""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field

from opentelemetry.context import Context


@dataclass(slots=True)
class CallRecord:
    method: str
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    code: str = "OK"
    reason: str = ""
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    attempts: int = 0
    first_token: float | None = None  # perf_counter time of the first message with a token
    trace_id: str = ""
    limit: str = ""  # the rate limit that refused the call, if one did
    otel_context: Context | None = None  # the RPC's span, parent of upstream and turn spans

    def finish_usage(self, usage: object) -> None:
        """Adds a usage message's tokens (Converse may report several)."""
        self.input_tokens += int(getattr(usage, "prompt_tokens", 0))
        self.output_tokens += int(getattr(usage, "completion_tokens", 0))


_current: ContextVar[CallRecord | None] = ContextVar("seekwire_call_record", default=None)


def current_record() -> CallRecord | None:
    return _current.get()


def set_record(record: CallRecord) -> None:
    _current.set(record)
