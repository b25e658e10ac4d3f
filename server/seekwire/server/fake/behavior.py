"""What the fake does with one request: its answer's size and pace, and the faults to inject.

A behavior comes from the fake's queue (tests and `POST /_fake/behaviors`) and can be
steered per request from the prompt itself with a directive such as
`[fake status=503 retry_after=2]` or `[fake tokens=64 token_delay=0.01 cut_after=5]`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

_DIRECTIVE = re.compile(r"\[fake((?:\s+[a-z_]+(?:=[^\s\]]+)?)*)\s*\]")


@dataclass(slots=True)
class Behavior:
    # Faults answered before any data.
    status: int | None = None  # answer with this HTTP status and DeepSeek's error envelope
    message: str | None = None  # error message instead of DeepSeek's usual one
    retry_after: float | None = None  # Retry-After header on an error
    legacy_422: bool = False  # 2024-era 422 with a plain-text body
    blank_body: bool = False  # 200 with only whitespace (a historic DeepSeek failure)
    delay: float = 0.0  # seconds before the response headers
    fail_ratio: float = 0.0  # answer this share of requests, at random, with fail_status
    fail_status: int = 503
    # Pace and size.
    keepalives: int = 0  # keep-alive lines (stream: ": keep-alive", else "\n") before data
    keepalive_interval: float = 0.005
    token_delay: float = 0.0  # seconds between chunks
    tokens: int = 8  # answer tokens
    reasoning_tokens: int = 4  # reasoning tokens in thinking mode
    # Faults while streaming; counts are data events already sent.
    stall_after: int | None = None  # then send nothing more, leaving the socket open
    stall_keepalive: float | None = None  # while stalled, a ": keep-alive" every N seconds
    cut_after: int | None = None  # then drop the connection
    no_done: bool = False  # end the body cleanly but without "data: [DONE]"
    error_after: int | None = None  # then send an {"error": ...} event
    # Answer shape.
    finish_reason: str | None = None  # e.g. length, content_filter, insufficient_system_resource
    usage_chunk: bool = False  # OpenAI-style separate usage chunk with empty choices
    echo: bool = False  # answer with the words of the last user message (directives removed)
    token_bytes: int = 0  # pad every answer token to this many bytes (large answers)
    tool_call: bool | None = None  # force (True) or forbid (False) a tool call
    model: str | None = None  # answer with this model id (alias mapping)
    path: str | None = None  # queued behaviors only: apply to this path alone

    def merged(self, overrides: dict[str, Any]) -> Behavior:
        return dataclasses.replace(self, **overrides)


_FIELDS = {f.name: f for f in dataclasses.fields(Behavior)}


def _coerce(name: str, raw: str | None) -> Any:
    kind = str(_FIELDS[name].type)
    if raw is None:
        return True
    if kind.startswith("bool"):
        return raw.lower() in ("1", "true", "yes", "on")
    if kind.startswith("int"):
        return int(raw)
    if kind.startswith("float"):
        return float(raw)
    return raw


def directive_overrides(text: str) -> dict[str, Any]:
    """The behavior fields set by `[fake ...]` directives in `text` (unknown keys are ignored)."""
    overrides: dict[str, Any] = {}
    for match in _DIRECTIVE.finditer(text):
        for item in match.group(1).split():
            name, _, raw = item.partition("=")
            if name in _FIELDS and name != "path":
                overrides[name] = _coerce(name, raw if raw else None)
    return overrides


def strip_directives(text: str) -> str:
    return _DIRECTIVE.sub("", text).strip()


def behavior_from_json(data: dict[str, Any]) -> Behavior:
    return Behavior(**{k: v for k, v in data.items() if k in _FIELDS})
