"""Converse sessions: a conversation's history, kept per principal.

The store holds serialized sessions (bytes), so no two streams ever share a
mutable history, and a Redis store with encryption at rest can stand behind the
same interface.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson


@dataclass(slots=True)
class Entry:
    """One message of the history and how its turn ended."""

    message: dict[str, Any]  # DeepSeek's message JSON
    turn_id: str = ""
    # "complete" entries go upstream; "cancelled" and "failed" are kept for the record only.
    status: str = "complete"


@dataclass(slots=True)
class Session:
    id: str
    principal: str
    entries: list[Entry] = field(default_factory=list)
    # A turn that ended with tool calls waits for their results, across streams too.
    pending_tools: list[str] = field(default_factory=list)
    tool_turn: str = ""

    def upstream_messages(self) -> list[dict[str, Any]]:
        return [e.message for e in self.entries if e.status == "complete"]

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "id": self.id,
                "principal": self.principal,
                "entries": [[e.message, e.turn_id, e.status] for e in self.entries],
                "pending_tools": self.pending_tools,
                "tool_turn": self.tool_turn,
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> Session:
        data = orjson.loads(raw)
        entries = [Entry(m, t, s) for m, t, s in data["entries"]]
        return cls(data["id"], data["principal"], entries, data["pending_tools"], data["tool_turn"])


def new_session_id() -> str:
    return "ses_" + secrets.token_urlsafe(18)


class SessionStore(Protocol):
    async def load(self, principal: str, session_id: str) -> Session | None:
        """The session if it exists, belongs to `principal` and has not expired."""
        ...

    async def save(self, session: Session) -> None:
        """Stores the session, bounded by the store's history cap; refreshes its TTL."""
        ...


class MemorySessionStore:
    """In-process sessions with a TTL, a cap on sessions (least recently used go first)
    and a cap on history entries per session (oldest turns go first, initial
    system messages stay)."""

    def __init__(self, *, ttl: float = 3600.0, max_sessions: int = 10_000, max_entries: int = 1000):
        self._ttl = ttl
        self._max_sessions = max_sessions
        self._max_entries = max_entries
        self._sessions: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    async def load(self, principal: str, session_id: str) -> Session | None:
        stored = self._sessions.get(session_id)
        if stored is None:
            return None
        expires, raw = stored
        if expires < time.monotonic():
            del self._sessions[session_id]
            return None
        session = Session.from_bytes(raw)
        if session.principal != principal:  # an identity, not a secret: plain comparison
            return None
        self._sessions.move_to_end(session_id)
        return session

    async def save(self, session: Session) -> None:
        trim(session, self._max_entries)
        async with self._lock:
            self._sessions[session.id] = (time.monotonic() + self._ttl, session.to_bytes())
            self._sessions.move_to_end(session.id)
            while len(self._sessions) > self._max_sessions:
                self._sessions.popitem(last=False)


def trim(session: Session, max_entries: int) -> None:
    """Drops whole turns, oldest first, past `max_entries`; the leading system messages and the
    latest turn always stay (a tool answer without the call that asked for it is invalid)."""
    entries = session.entries
    excess = len(entries) - max_entries
    if excess <= 0:
        return
    head = 0
    while head < len(entries) and entries[head].message.get("role") == "system":
        head += 1
    turn_starts = [i for i in range(head, len(entries)) if entries[i].message.get("role") == "user"]
    cut = head
    for start in turn_starts[1:]:
        cut = start
        if cut - head >= excess:
            break
    del entries[head:cut]
