"""API keys: minted once, stored as salted SHA-256 hashes with their metadata, in a JSON file
that every replica reads and re-reads when it changes (rotation and revocation need no restart).

A key reads `sk-sw-<id>-<secret>`: the id finds the record, the secret is checked in constant
time. Secrets are 32 random bytes, so a fast salted hash is as strong as a slow KDF here.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from seekwire.server.caller import Limits

log = logging.getLogger(__name__)
PREFIX = "sk-sw-"
DEFAULT_SCOPES = ("chat",)
NO_LIMITS = Limits()


@dataclass(slots=True)
class KeyRecord:
    id: str
    name: str
    principal: str
    salt: str
    hash: str
    scopes: list[str] = field(default_factory=lambda: list(DEFAULT_SCOPES))
    rpm: int | None = None
    tpm: int | None = None
    streams: int | None = None
    created: float = 0.0
    expires: float | None = None
    revoked: float | None = None

    @property
    def limits(self) -> Limits:
        return Limits(self.rpm, self.tpm, self.streams)

    def active(self, now: float) -> bool:
        return self.revoked is None and (self.expires is None or now < self.expires)

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        del data["salt"], data["hash"]
        return data


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def parse(key: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed key, else None."""
    if not key.startswith(PREFIX):
        return None
    key_id, sep, secret = key[len(PREFIX) :].partition("-")
    if not sep or not key_id or not secret:
        return None
    return key_id, secret


class KeyFile:
    """The key store on disk. Readers call `find`; writers (the `seekwire keys` CLI) lock the file."""

    def __init__(
        self, path: str | Path, *, check_interval: float = 1.0, miss_interval: float = 0.0
    ) -> None:
        self.path = Path(path)
        self._check_interval = check_interval
        self._miss_interval = miss_interval
        self._checked = 0.0
        self._mtime: float | None = None
        self._records: dict[str, KeyRecord] = {}

    def _load(self) -> dict[str, KeyRecord]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        return {item["id"]: KeyRecord(**item) for item in orjson.loads(raw)["keys"]}

    def _reload(self) -> dict[str, KeyRecord]:
        """The file's records, or the last good ones when it cannot be read as a key store."""
        try:
            return self._load()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error(
                "key store %s unreadable (%s); keeping the keys it had",
                self.path,
                type(exc).__name__,
            )
            return self._records

    def records(self, *, missed: bool = False) -> dict[str, KeyRecord]:
        """The current records, re-read when the file changed: checked at most every
        `check_interval` seconds, or every `miss_interval` after an unknown key id, so a new
        key works at once and a revocation applies within `check_interval`."""
        now = time.monotonic()
        interval = self._miss_interval if missed else self._check_interval
        if now - self._checked >= interval:
            self._checked = now
            try:
                mtime: float | None = self.path.stat().st_mtime_ns
            except FileNotFoundError:
                mtime = None
            if mtime != self._mtime:
                self._records = self._reload()
                self._mtime = mtime
        return self._records

    def verify(self, key: str) -> KeyRecord | None:
        """The active record the key belongs to, else None. Constant-time in the secret."""
        parsed = parse(key)
        if parsed is None:
            return None
        key_id, secret = parsed
        record = self.records().get(key_id) or self.records(missed=True).get(key_id)
        if record is None:
            # Same work as a real check, so timing does not tell ids apart.
            hmac.compare_digest(_digest("00" * 16, secret), "0" * 64)
            return None
        if not hmac.compare_digest(_digest(record.salt, secret), record.hash):
            return None
        return record if record.active(time.time()) else None

    # -- writing (CLI) ------------------------------------------------------------

    @contextlib.contextmanager
    def _edit(self) -> Iterator[dict[str, KeyRecord]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            records = self._load()
            yield records
            payload = {"keys": [asdict(r) for r in records.values()]}
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".keys-")
            with os.fdopen(fd, "wb") as out:
                out.write(orjson.dumps(payload, option=orjson.OPT_INDENT_2))
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        self._checked = 0.0

    def create(
        self,
        name: str,
        *,
        principal: str | None = None,
        scopes: list[str] | None = None,
        limits: Limits = NO_LIMITS,
        expires_in: float | None = None,
    ) -> tuple[str, KeyRecord]:
        """Mints a key; the secret is returned here and never stored."""
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32).replace("-", "_")
        salt = secrets.token_hex(16)
        now = time.time()
        record = KeyRecord(
            id=key_id,
            name=name,
            principal=principal or name,
            salt=salt,
            hash=_digest(salt, secret),
            scopes=list(scopes or DEFAULT_SCOPES),
            rpm=limits.rpm,
            tpm=limits.tpm,
            streams=limits.streams,
            created=now,
            expires=now + expires_in if expires_in else None,
        )
        with self._edit() as records:
            records[key_id] = record
        return f"{PREFIX}{key_id}-{secret}", record

    def revoke(self, key_id: str) -> KeyRecord:
        with self._edit() as records:
            record = records.get(key_id)
            if record is None:
                raise KeyError(key_id)
            record.revoked = record.revoked or time.time()
            return record

    def rotate(self, key_id: str, *, grace: float) -> tuple[str, KeyRecord]:
        """A new key for the same principal, scopes and limits; the old one expires after `grace`."""
        old = self._load().get(key_id)
        if old is None or old.revoked is not None:
            raise KeyError(key_id)
        secret, new = self.create(
            old.name, principal=old.principal, scopes=old.scopes, limits=old.limits
        )
        with self._edit() as records:
            current = records[key_id]
            deadline = time.time() + grace
            current.expires = min(current.expires or deadline, deadline)
        return secret, new
