"""Settings: defaults < config file (TOML) < environment < command-line flags, checked at start."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_BASE_URL = "https://api.deepseek.com"


class SettingsError(Exception):
    """A setting that cannot be used; the message says which and why."""


def _setting(default: Any, help: str, env: str | None = None, secret: bool = False) -> Any:
    return field(
        default=default, metadata={"help": help, "env": env, "secret": secret}, repr=not secret
    )


@dataclass(frozen=True)
class Settings:
    listen: str = _setting("127.0.0.1:50051", "host:port the gRPC server listens on")
    deepseek_api_key: str = _setting(
        "", "DeepSeek API key the gateway calls with", "DEEPSEEK_API_KEY", True
    )
    deepseek_base_url: str = _setting(DEFAULT_BASE_URL, "DeepSeek base URL", "DEEPSEEK_BASE_URL")
    fake_upstream: bool = _setting(False, "serve on the embedded fake DeepSeek (offline, no key)")
    connect_timeout: float = _setting(10.0, "seconds to open an upstream connection")
    idle_timeout: float = _setting(
        60.0, "seconds of upstream silence, or between data events, before a call counts as stalled"
    )
    queue_timeout: float = _setting(
        600.0, "seconds DeepSeek may keep a request queued (keep-alives only)"
    )
    total_timeout: float = _setting(1800.0, "seconds for a whole upstream call")
    upstream_pool_size: int = _setting(1024, "most open upstream connections")
    max_message_bytes: int = _setting(64 * 1024 * 1024, "largest gRPC message, either way")
    max_concurrent_rpcs: int = _setting(
        4096, "RPCs in flight before new ones get RESOURCE_EXHAUSTED (0: no cap)"
    )
    keepalive_time: float = _setting(30.0, "seconds between HTTP/2 keepalive pings to idle callers")
    keepalive_timeout: float = _setting(10.0, "seconds to wait for a keepalive ping's answer")
    min_ping_interval: float = _setting(10.0, "shortest interval between pings a caller may send")
    max_connection_age: float = _setting(
        0.0, "seconds before a connection is asked to reconnect (0: never)"
    )
    max_connection_age_grace: float = _setting(
        600.0, "seconds an aged connection may finish its RPCs"
    )
    session_ttl: float = _setting(3600.0, "seconds a Converse session lives after its last turn")
    session_max_count: int = _setting(
        10_000, "Converse sessions kept per process (least recently used go)"
    )
    session_max_messages: int = _setting(1000, "messages kept per session (oldest turns go first)")
    drain_delay: float = _setting(
        5.0, "seconds between NOT_SERVING and closing the listener on SIGTERM (Envoy health checks)"
    )
    shutdown_grace: float = _setting(30.0, "seconds in-flight RPCs may take to finish on shutdown")
    reflection: bool = _setting(True, "serve gRPC server reflection")
    log_level: str = _setting("info", "debug, info, warning or error")

    @staticmethod
    def env_name(name: str) -> str:
        return Settings.__dataclass_fields__[name].metadata["env"] or f"SEEKWIRE_{name.upper()}"

    def public(self) -> dict[str, Any]:
        """The settings with secrets masked, for a start-up log line."""
        return {
            f.name: (
                "***" if f.metadata["secret"] and getattr(self, f.name) else getattr(self, f.name)
            )
            for f in dataclasses.fields(self)
        }


def _coerce(name: str, raw: Any) -> Any:
    kind = Settings.__dataclass_fields__[name].type
    try:
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        return str(raw)
    except (TypeError, ValueError):
        raise SettingsError(f"{name}: expected {kind}, got {raw!r}") from None


def load(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> Settings:
    """Merges the sources; `flags` holds only the options given on the command line."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = config_file or env.get("SEEKWIRE_CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"config file {path}: {exc}") from None
        for key, raw in data.items():
            if key not in Settings.__dataclass_fields__:
                raise SettingsError(f"config file {path}: unknown setting {key!r}")
            values[key] = _coerce(key, raw)
    for name in Settings.__dataclass_fields__:
        raw = env.get(Settings.env_name(name))
        if raw is not None:
            values[name] = _coerce(name, raw)
    for name, raw in (flags or {}).items():
        values[name] = _coerce(name, raw)
    settings = Settings(**values)
    validate(settings)
    return settings


def validate(settings: Settings) -> None:
    problems: list[str] = []
    host, sep, port = settings.listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        problems.append(f"listen: expected host:port, got {settings.listen!r}")
    if not settings.deepseek_base_url.startswith(("http://", "https://")):
        problems.append(
            f"deepseek_base_url: expected an http(s) URL, got {settings.deepseek_base_url!r}"
        )
    for name in ("connect_timeout", "idle_timeout", "queue_timeout", "total_timeout"):
        if getattr(settings, name) <= 0:
            problems.append(f"{name}: must be positive")
    for name in ("drain_delay", "shutdown_grace", "max_connection_age", "max_connection_age_grace"):
        if getattr(settings, name) < 0:
            problems.append(f"{name}: must not be negative")
    for name in ("session_ttl", "session_max_count", "session_max_messages"):
        if getattr(settings, name) <= 0:
            problems.append(f"{name}: must be positive")
    if settings.upstream_pool_size < 1:
        problems.append("upstream_pool_size: must be at least 1")
    if settings.max_message_bytes < 1024:
        problems.append("max_message_bytes: must be at least 1024")
    if settings.max_concurrent_rpcs < 0:
        problems.append("max_concurrent_rpcs: must not be negative")
    if settings.log_level.lower() not in ("debug", "info", "warning", "error"):
        problems.append(
            f"log_level: one of debug, info, warning, error; got {settings.log_level!r}"
        )
    if problems:
        raise SettingsError("; ".join(problems))
