"""Admission by rate limits: requests and tokens per minute, concurrent RPCs, per principal and
per upstream model. Over a limit is RESOURCE_EXHAUSTED with RetryInfo, QuotaFailure and
`retry-after` / `x-ratelimit-*` trailers, before any upstream work."""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import grpc

from seekwire.server.caller import Caller, Limits
from seekwire.server.errors import GatewayError
from seekwire.server.state.limits import Decision, Limiter, LimiterUnavailable

log = logging.getLogger(__name__)
_CHARS_PER_TOKEN = 1 / 0.3  # DeepSeek's rule of thumb for English (reference §7)
_NAMES = {"rpm": "requests per minute", "tpm": "tokens per minute", "streams": "concurrent RPCs"}


def estimate_tokens(text_length: int, messages: int = 0) -> int:
    return math.ceil(text_length / _CHARS_PER_TOKEN) + 4 * messages


def estimate_request(request: Any) -> int:
    """Prompt tokens of a chat or FIM request, estimated before DeepSeek counts them."""
    messages = getattr(request, "messages", None)
    if messages is not None:
        length = sum(len(m.content) + len(m.reasoning_content) for m in messages)
        return estimate_tokens(length, len(messages))
    return estimate_tokens(
        len(getattr(request, "prompt", "")) + len(getattr(request, "suffix", ""))
    )


def parse_model_limits(text: str) -> dict[str, Limits]:
    """`model=rpm:600,tpm:1000000;other=streams:50` -> {model: Limits}."""
    result: dict[str, Limits] = {}
    for entry in filter(None, (e.strip() for e in text.split(";"))):
        model, sep, spec = entry.partition("=")
        if not sep or not model.strip():
            raise ValueError(f"expected model=kind:N,...; got {entry!r}")
        values: dict[str, int] = {}
        for item in spec.split(","):
            kind, _, number = item.strip().partition(":")
            if kind not in _NAMES or not number.isdigit():
                raise ValueError(f"expected rpm:N, tpm:N or streams:N; got {item!r}")
            values[kind] = int(number)
        result[model.strip()] = Limits(**values)
    return result


def _rejection(kind: str, subject: str, limit: int, decision: Decision) -> GatewayError:
    wait = decision.retry_after
    what = _NAMES[kind]
    if math.isinf(wait):
        return GatewayError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "REQUEST_EXCEEDS_LIMIT",
            f"this request alone exceeds the {what} limit ({limit}) of {subject}",
            quota_violations=[(subject, f"{what} limit {limit}")],
        )
    return GatewayError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "RATE_LIMITED",
        f"{what} limit ({limit}) of {subject} reached; retry in {wait:.1f}s",
        metadata={"limit": kind, "subject": subject},
        retry_delay=wait,
        quota_violations=[(subject, f"{what} limit {limit}")],
        trailers=(
            ("retry-after", str(max(1, math.ceil(wait)))),
            ("x-ratelimit-kind", kind),
            ("x-ratelimit-limit", str(limit)),
            ("x-ratelimit-remaining", "0"),
        ),
    )


def _limiter_down() -> GatewayError:
    return GatewayError(
        grpc.StatusCode.UNAVAILABLE,
        "LIMITER_UNAVAILABLE",
        "the rate-limit backend is unreachable and seekwire is set to fail closed",
        retry_delay=1.0,
    )


@dataclass(slots=True)
class _Taken:
    key: str
    limit: int
    amount: float


@dataclass(slots=True)
class Admission:
    """What one RPC holds: its concurrency leases, and the token estimates to settle."""

    limiter: Limiter
    leases: list[tuple[str, str]] = field(default_factory=list)
    tokens: list[_Taken] = field(default_factory=list)

    async def settle(self, actual_tokens: int) -> None:
        """Corrects the estimates with real usage; best effort (the answer is already paid for)."""
        tokens, self.tokens = self.tokens, []
        for taken in tokens:
            try:
                await self.limiter.adjust(taken.key, taken.limit, actual_tokens - taken.amount)
            except LimiterUnavailable:
                log.warning("usage correction lost: rate-limit backend unreachable")

    async def release(self) -> None:
        leases, self.leases = self.leases, []
        for key, lease in leases:
            await self.limiter.release(key, lease)


class RateLimits:
    """Checks one caller's RPC against its limits and the model's."""

    def __init__(
        self, limiter: Limiter, *, defaults: Limits, model_limits: Mapping[str, Limits]
    ) -> None:
        self._limiter = limiter
        self._defaults = defaults
        self._models = dict(model_limits)

    def _subjects(self, caller: Caller, model: str | None) -> list[tuple[str, Limits]]:
        own, default = caller.limits, self._defaults
        limits = Limits(
            own.rpm or default.rpm, own.tpm or default.tpm, own.streams or default.streams
        )
        subjects = [(f"principal:{caller.principal}", limits)]
        if model and model in self._models:
            subjects.append((f"model:{model}", self._models[model]))
        return subjects

    async def admit(
        self,
        caller: Caller,
        model: str | None,
        estimate: int | None,
        *,
        slots: bool = True,
        request: bool = True,
    ) -> Admission:
        """Takes a concurrency slot, a request and (with an estimate) its prompt tokens, or
        raises the rejection having given back what it took."""
        admission = Admission(self._limiter)
        taken: list[_Taken] = []
        try:
            for subject, limits in self._subjects(caller, model):
                if limits.streams and slots:
                    lease = secrets.token_hex(8)
                    decision = await self._limiter.acquire(subject, limits.streams, lease)
                    if not decision.allowed:
                        raise _rejection("streams", subject, limits.streams, decision)
                    admission.leases.append((subject, lease))
                requests = 1 if request else None
                for kind, limit, amount in (
                    ("rpm", limits.rpm, requests),
                    ("tpm", limits.tpm, estimate),
                ):
                    if not limit or amount is None:
                        continue
                    key = f"{kind}:{subject}"
                    decision = await self._limiter.take(key, limit, amount)
                    if not decision.allowed:
                        raise _rejection(kind, subject, limit, decision)
                    taken.append(_Taken(key, limit, amount))
        except LimiterUnavailable:
            await self._undo(admission, taken)
            raise _limiter_down() from None
        except GatewayError:
            await self._undo(admission, taken)
            raise
        admission.tokens = [t for t in taken if t.key.startswith("tpm:")]
        return admission

    async def _undo(self, admission: Admission, taken: list[_Taken]) -> None:
        """Gives back what a refused call took; best effort when the backend is down."""
        for item in taken:
            try:
                await self._limiter.adjust(item.key, item.limit, -item.amount)
            except LimiterUnavailable:
                break
        await admission.release()

    async def admit_turn(self, caller: Caller, model: str, estimate: int) -> Admission:
        """A request and its prompt tokens, for one Converse turn (the stream holds the slot)."""
        return await self.admit(caller, model, estimate, slots=False)


_current: ContextVar[RateLimits | None] = ContextVar("seekwire_limits", default=None)


def set_current_limits(limits: RateLimits) -> None:
    _current.set(limits)


def current_limits() -> RateLimits | None:
    """The limits checker of this RPC, for handlers that meter per turn (Converse)."""
    return _current.get()
