"""Settings: defaults < config file (TOML) < environment < command-line flags, checked at start."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seekwire.server.limits import parse_model_limits
from seekwire.server.upstream.pool import load_endpoints

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
    upstreams_file: str = _setting("", "TOML of [[upstream]] endpoints (re-read when it changes)")
    balancer: str = _setting("p2c", "p2c (least in flight of two weighted picks) or weighted")
    connect_timeout: float = _setting(10.0, "seconds to open an upstream connection")
    first_byte_timeout: float = _setting(
        60.0, "seconds of silence before the first data (keep-alives count)"
    )
    queue_timeout: float = _setting(
        600.0, "seconds DeepSeek may keep a request queued (keep-alives only)"
    )
    idle_timeout: float = _setting(
        60.0, "seconds between data events before a stream counts as stalled"
    )
    total_timeout: float = _setting(1800.0, "seconds for a whole upstream call")
    retry_max_attempts: int = _setting(3, "upstream attempts per call, first included")
    retry_base_delay: float = _setting(
        0.2, "first backoff ceiling, seconds (full jitter, doubling)"
    )
    retry_max_delay: float = _setting(5.0, "largest backoff, seconds")
    retry_max_retry_after: float = _setting(
        30.0, "longest Retry-After waited for; longer is reported"
    )
    retry_budget_ratio: float = _setting(
        0.2, "retries may add at most this share of requests (10 s window)"
    )
    breaker_consecutive: int = _setting(10, "consecutive failures that open an endpoint's breaker")
    breaker_failure_ratio: float = _setting(0.5, "failure share over the window that opens it")
    breaker_min_calls: int = _setting(20, "calls in the window before the ratio counts")
    breaker_window: float = _setting(30.0, "seconds of outcomes the ratio looks at")
    breaker_open_seconds: float = _setting(
        10.0, "seconds an open breaker sheds calls before a probe"
    )
    key_eject_seconds: float = _setting(
        300.0, "seconds a key DeepSeek rejected (401/402) stays out"
    )
    health_interval: float = _setting(
        30.0, "seconds between checks of idle or open endpoints (0: off)"
    )
    warmup: bool = _setting(True, "open a connection to each endpoint (GET /models) before SERVING")
    upstream_gzip: bool = _setting(False, "gzip request bodies of 1 KiB or more to the upstream")
    grpc_compression: str = _setting(
        "none", "compression of responses to callers: none, gzip or deflate"
    )
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
    auth: bool = _setting(True, "authenticate every RPC but health checks (off only for local use)")
    keys_file: str = _setting("seekwire-keys.json", "API key store (JSON; re-read when it changes)")
    reflection_public: bool = _setting(
        False, "serve reflection without credentials when auth is on"
    )
    jwt_hs256_secret: str = _setting("", "shared secret for HS256 bearer tokens", secret=True)
    jwt_public_keys: str = _setting("", "PEM file of public keys for RS256/ES256 bearer tokens")
    jwt_jwks_file: str = _setting("", "JWKS file of public keys for RS256/ES256 bearer tokens")
    jwt_issuer: str = _setting("", "required `iss` of bearer tokens (empty: not checked)")
    jwt_audience: str = _setting("", "required `aud` of bearer tokens (empty: not checked)")
    jwt_principal_claim: str = _setting("sub", "claim naming the caller")
    jwt_scopes_claim: str = _setting("scope", "claim listing scopes (space-separated or a list)")
    jwt_leeway: float = _setting(30.0, "clock skew allowed on exp and nbf, seconds")
    tls_cert: str = _setting("", "PEM certificate chain of the listener (enables TLS)")
    tls_key: str = _setting("", "PEM private key of the listener")
    tls_client_ca: str = _setting("", "PEM CA bundle for client certificates (enables mTLS)")
    mtls_scopes: str = _setting("chat", "scopes of callers identified by client certificate")
    default_rpm: int = _setting(
        0, "requests per minute for callers whose key sets none (0: no limit)"
    )
    default_tpm: int = _setting(
        0, "tokens per minute for callers whose key sets none (0: no limit)"
    )
    default_streams: int = _setting(
        0, "concurrent RPCs for callers whose key sets none (0: no limit)"
    )
    model_limits: str = _setting("", "global per-model limits: model=rpm:N,tpm:N,streams:N;...")
    limits_backend: str = _setting("memory", "memory (per process) or redis (shared by replicas)")
    redis_url: str = _setting(
        "redis://127.0.0.1:6379/0",
        "Redis for limits_backend=redis (may hold a password)",
        secret=True,
    )
    limits_fail_open: bool = _setting(
        True, "admit calls while Redis is unreachable (false: refuse)"
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
    event_loop: str = _setting("uvloop", "uvloop (libuv, faster) or asyncio (the standard loop)")
    log_level: str = _setting("info", "debug, info, warning or error")
    log_format: str = _setting("json", "json (one object per line) or text")
    metrics_listen: str = _setting(
        "127.0.0.1:9464", "host:port of the Prometheus /metrics endpoint (empty: off)"
    )
    otel_traces_exporter: str = _setting("none", "none, console, otlp-grpc or otlp-http")
    otel_metrics_exporter: str = _setting(
        "none", "none, otlp-grpc or otlp-http (besides Prometheus)"
    )
    otel_endpoint: str = _setting(
        "", "OTLP endpoint (empty: the exporter's default or OTEL_EXPORTER_OTLP_ENDPOINT)"
    )
    otel_sampler_ratio: float = _setting(
        1.0, "share of new traces sampled; callers' sampled flags are followed"
    )
    otel_capture_content: bool = _setting(
        False, "put prompts and answers on upstream spans (personal data: opt in knowingly)"
    )

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
    for name in (
        "connect_timeout",
        "first_byte_timeout",
        "idle_timeout",
        "queue_timeout",
        "total_timeout",
        "retry_base_delay",
        "retry_max_delay",
        "breaker_window",
        "breaker_open_seconds",
    ):
        if getattr(settings, name) <= 0:
            problems.append(f"{name}: must be positive")
    for name in ("drain_delay", "shutdown_grace", "max_connection_age", "max_connection_age_grace"):
        if getattr(settings, name) < 0:
            problems.append(f"{name}: must not be negative")
    for name in ("session_ttl", "session_max_count", "session_max_messages"):
        if getattr(settings, name) <= 0:
            problems.append(f"{name}: must be positive")
    if settings.retry_max_attempts < 1:
        problems.append("retry_max_attempts: must be at least 1")
    if not 0 <= settings.retry_budget_ratio <= 1:
        problems.append("retry_budget_ratio: between 0 and 1")
    if not 0 < settings.breaker_failure_ratio <= 1 or settings.breaker_consecutive < 1:
        problems.append("breaker_failure_ratio in (0, 1] and breaker_consecutive >= 1")
    if settings.balancer not in ("p2c", "weighted"):
        problems.append(f"balancer: p2c or weighted, got {settings.balancer!r}")
    if settings.grpc_compression not in ("none", "gzip", "deflate"):
        problems.append(
            f"grpc_compression: none, gzip or deflate, got {settings.grpc_compression!r}"
        )
    if settings.upstreams_file:
        try:
            load_endpoints(settings.upstreams_file)
        except (OSError, ValueError, KeyError, tomllib.TOMLDecodeError) as exc:
            problems.append(f"upstreams_file: {exc}")
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
    if bool(settings.tls_cert) != bool(settings.tls_key):
        problems.append("tls_cert and tls_key: set both or neither")
    if settings.tls_client_ca and not settings.tls_cert:
        problems.append("tls_client_ca: mTLS needs tls_cert and tls_key too")
    for name in ("tls_cert", "tls_key", "tls_client_ca", "jwt_public_keys", "jwt_jwks_file"):
        path = getattr(settings, name)
        if path and not Path(path).is_file():
            problems.append(f"{name}: no such file {path!r}")
    if settings.limits_backend not in ("memory", "redis"):
        problems.append(f"limits_backend: memory or redis, got {settings.limits_backend!r}")
    for name in ("default_rpm", "default_tpm", "default_streams"):
        if getattr(settings, name) < 0:
            problems.append(f"{name}: must not be negative")
    try:
        parse_model_limits(settings.model_limits)
    except ValueError as exc:
        problems.append(f"model_limits: {exc}")
    if settings.event_loop not in ("uvloop", "asyncio"):
        problems.append(f"event_loop: uvloop or asyncio, got {settings.event_loop!r}")
    if settings.log_format not in ("json", "text"):
        problems.append(f"log_format: json or text, got {settings.log_format!r}")
    if settings.otel_traces_exporter not in ("none", "console", "otlp-grpc", "otlp-http"):
        problems.append(
            f"otel_traces_exporter: none, console, otlp-grpc or otlp-http, got {settings.otel_traces_exporter!r}"
        )
    if settings.otel_metrics_exporter not in ("none", "otlp-grpc", "otlp-http"):
        problems.append(
            f"otel_metrics_exporter: none, otlp-grpc or otlp-http, got {settings.otel_metrics_exporter!r}"
        )
    if not 0 <= settings.otel_sampler_ratio <= 1:
        problems.append("otel_sampler_ratio: between 0 and 1")
    if settings.metrics_listen:
        host, sep, port = settings.metrics_listen.rpartition(":")
        if not sep or not host or not port.isdigit():
            problems.append(f"metrics_listen: expected host:port, got {settings.metrics_listen!r}")
    if problems:
        raise SettingsError("; ".join(problems))
