"""Upstream failures, classified by what went wrong; server/errors.py maps them to gRPC."""

from __future__ import annotations

import math
import re
from typing import Final

import orjson

# What DeepSeek's HTTP statuses mean for a caller (reference §6).
_REASON_BY_STATUS: Final = {
    400: "UPSTREAM_BAD_REQUEST",
    401: "UPSTREAM_AUTH",
    402: "UPSTREAM_INSUFFICIENT_BALANCE",
    403: "UPSTREAM_AUTH",
    404: "UPSTREAM_NOT_FOUND",
    422: "UPSTREAM_BAD_REQUEST",
    429: "UPSTREAM_RATE_LIMITED",
    500: "UPSTREAM_SERVER_ERROR",
    502: "UPSTREAM_BAD_GATEWAY",
    503: "UPSTREAM_OVERLOADED",
    504: "UPSTREAM_GATEWAY_TIMEOUT",
}

# DeepSeek echoes the tail of a rejected key ("****abcd"); callers must never see it.
_MASKED_KEY = re.compile(r"\*{2,}[A-Za-z0-9_-]{1,8}")
_BEARER = re.compile(r"(?i)bearer\s+\S+")
_MAX_MESSAGE = 500
_MAX_RETRY_AFTER = 86_400.0


class UpstreamError(Exception):
    """A DeepSeek call that did not produce what the caller asked for.

    `reason` is an UPPER_SNAKE ErrorInfo reason; `http_status` is set when
    DeepSeek answered with an error status.
    """

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        http_status: int | None = None,
        trace_id: str | None = None,
        retry_after: float | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.http_status = http_status
        self.trace_id = trace_id
        self.retry_after = retry_after
        self.error_type = error_type
        self.attempts = 0  # upstream attempts made, set by the retry layer


def reason_for_status(status: int) -> str:
    if status in _REASON_BY_STATUS:
        return _REASON_BY_STATUS[status]
    return "UPSTREAM_SERVER_ERROR" if status >= 500 else "UPSTREAM_REJECTED"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header; HTTP dates are not worth the parsing here."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, _MAX_RETRY_AFTER)


def scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Removes keys and masked keys from upstream text, and bounds its length."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = _BEARER.sub("Bearer [redacted]", _MASKED_KEY.sub("[redacted]", text))
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "..."


def error_from_response(
    status: int,
    body: bytes,
    *,
    trace_id: str | None,
    retry_after: str | None,
    secrets: tuple[str, ...],
) -> UpstreamError:
    """Builds the error for a non-2xx answer from DeepSeek's envelope or plain-text body."""
    reason = reason_for_status(status)
    error_type: str | None = None
    message = ""
    try:
        envelope = orjson.loads(body)
    except orjson.JSONDecodeError:
        message = body.decode("utf-8", "replace").strip()
    else:
        error = envelope.get("error") if isinstance(envelope, dict) else None
        if isinstance(error, dict):
            message = str(error.get("message") or "")
            error_type = str(error["type"]) if error.get("type") else None
        elif isinstance(error, str):
            message = error
    if reason == "UPSTREAM_AUTH":
        # Whatever DeepSeek says here is about the gateway's own key.
        message = "DeepSeek rejected the gateway's upstream credentials"
    elif not message:
        message = f"DeepSeek answered HTTP {status}"
    return UpstreamError(
        reason,
        scrub(message, secrets),
        http_status=status,
        trace_id=trace_id,
        retry_after=parse_retry_after(retry_after),
        error_type=error_type,
    )


def error_from_event(
    event: dict[str, object], *, trace_id: str | None, secrets: tuple[str, ...]
) -> UpstreamError:
    """An `error` object DeepSeek sent inside a stream."""
    error = event.get("error")
    message = "DeepSeek reported an error inside the stream"
    error_type = None
    if isinstance(error, dict):
        message = str(error.get("message") or message)
        error_type = str(error["type"]) if error.get("type") else None
    elif isinstance(error, str):
        message = error
    return UpstreamError(
        "UPSTREAM_STREAM_ERROR", scrub(message, secrets), trace_id=trace_id, error_type=error_type
    )
