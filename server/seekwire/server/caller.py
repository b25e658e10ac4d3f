"""Who is calling: set once per RPC by the auth interceptor, read by handlers and later layers."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-principal limits; None means no limit of that kind."""

    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens per minute (prompt + completion)
    streams: int | None = None  # concurrent RPCs


@dataclass(frozen=True, slots=True)
class Caller:
    principal: str  # the tenant or service that owns the credential
    credential: str  # "key:<id>", "jwt", "mtls" or "anonymous"; never a secret
    scopes: frozenset[str] = field(default_factory=frozenset)
    limits: Limits = field(default_factory=Limits)


ANONYMOUS = Caller("anonymous", "anonymous", frozenset({"*"}))
_current: ContextVar[Caller] = ContextVar("seekwire_caller", default=ANONYMOUS)


def current_caller() -> Caller:
    """The caller of the RPC being handled (ANONYMOUS when auth is off)."""
    return _current.get()


def set_caller(caller: Caller) -> None:
    _current.set(caller)
