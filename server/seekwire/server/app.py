"""Wires the gateway: upstream client, services, interceptors, health, reflection, draining."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import tomllib
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from seekwire.server.auth.authenticator import Authenticator
from seekwire.server.auth.keys import KeyFile
from seekwire.server.auth.tokens import TokenSettings, TokenVerifier, load_public_keys
from seekwire.server.caller import Limits
from seekwire.server.config import Settings
from seekwire.server.fake import FakeDeepSeek
from seekwire.server.interceptors.auth import AuthInterceptor
from seekwire.server.interceptors.errors import ErrorInterceptor
from seekwire.server.interceptors.limits import LimitsInterceptor
from seekwire.server.interceptors.telemetry import TelemetryInterceptor
from seekwire.server.interceptors.wrapping import Chain, WrappingInterceptor
from seekwire.server.limits import RateLimits, parse_model_limits
from seekwire.server.services.catalog import AccountService, ModelService
from seekwire.server.services.chat import ChatService
from seekwire.server.services.completion import CompletionService
from seekwire.server.state.limits import Limiter, MemoryLimiter, RedisLimiter
from seekwire.server.state.sessions import MemorySessionStore
from seekwire.server.telemetry.instruments import Instruments
from seekwire.server.telemetry.setup import Telemetry
from seekwire.server.telemetry.setup import build as build_telemetry
from seekwire.server.upstream.breaker import BreakerSettings, State
from seekwire.server.upstream.budget import RetryBudget
from seekwire.server.upstream.pool import EndpointConfig, Pool, PoolSettings, load_endpoints
from seekwire.server.upstream.resilient import ResilientUpstream, RetryPolicy
from seekwire.server.upstream.timing import Timeouts
from seekwire.v1 import (
    account_pb2,
    account_pb2_grpc,
    chat_pb2,
    chat_pb2_grpc,
    completion_pb2,
    completion_pb2_grpc,
    model_pb2,
    model_pb2_grpc,
)

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name,
    completion_pb2.DESCRIPTOR.services_by_name["CompletionService"].full_name,
    model_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
    account_pb2.DESCRIPTOR.services_by_name["AccountService"].full_name,
)
FAKE_UPSTREAM_KEY = "sk-seekwire-fake-upstream"


def _server_options(settings: Settings) -> list[tuple[str, int]]:
    ms = 1000
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time * ms)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout * ms)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", int(settings.min_ping_interval * ms)),
        ("grpc.http2.max_ping_strikes", 2),
    ]
    if settings.max_connection_age > 0:
        options += [
            ("grpc.max_connection_age_ms", int(settings.max_connection_age * ms)),
            ("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace * ms)),
        ]
    return options


def _scopes(text: str) -> list[str]:
    return [s for s in (part.strip() for part in text.split(",")) if s]


def _token_settings(settings: Settings) -> TokenSettings:
    return TokenSettings(
        hs256_secret=settings.jwt_hs256_secret,
        public_keys=load_public_keys(settings.jwt_public_keys, settings.jwt_jwks_file),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        principal_claim=settings.jwt_principal_claim,
        scopes_claim=settings.jwt_scopes_claim,
        leeway=settings.jwt_leeway,
    )


def _server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS (1.2 at least, 1.3 when the client offers it: gRPC core's defaults), mTLS with a CA."""
    if not settings.tls_cert:
        return None
    pair = (Path(settings.tls_key).read_bytes(), Path(settings.tls_cert).read_bytes())
    client_ca = Path(settings.tls_client_ca).read_bytes() if settings.tls_client_ca else None
    # gRPC Python can require client certificates or not ask for them; there is no "ask".
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


_COMPRESSION = {
    "none": grpc.Compression.NoCompression,
    "gzip": grpc.Compression.Gzip,
    "deflate": grpc.Compression.Deflate,
}


def _endpoints(settings: Settings) -> list[EndpointConfig]:
    """The upstream endpoints: the upstreams file, or DeepSeek with DEEPSEEK_API_KEY
    (several keys may be given, comma-separated)."""
    if settings.upstreams_file:
        return load_endpoints(settings.upstreams_file)
    keys = tuple(k.strip() for k in settings.deepseek_api_key.split(",") if k.strip())
    return [EndpointConfig("deepseek", settings.deepseek_base_url, keys)]


def _pool_settings(settings: Settings) -> PoolSettings:
    return PoolSettings(
        timeouts=Timeouts(
            connect=settings.connect_timeout,
            first_byte=settings.first_byte_timeout,
            queue=settings.queue_timeout,
            idle=settings.idle_timeout,
            total=settings.total_timeout,
        ),
        breaker=BreakerSettings(
            consecutive=settings.breaker_consecutive,
            failure_ratio=settings.breaker_failure_ratio,
            min_calls=settings.breaker_min_calls,
            window=settings.breaker_window,
            open_seconds=settings.breaker_open_seconds,
        ),
        pool_size=settings.upstream_pool_size,
        balancer=settings.balancer,
        key_eject_seconds=settings.key_eject_seconds,
        health_interval=settings.health_interval,
        gzip_requests=settings.upstream_gzip,
    )


_BREAKER_GAUGE = {State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2}


class Gateway:
    """One gateway process: `await start()`, then `await drain()` to stop gracefully."""

    def __init__(self, settings: Settings, telemetry: Telemetry | None = None) -> None:
        """`telemetry` is injected by tests (in-memory spans); by default it follows settings."""
        self.settings = settings
        self._own_telemetry = telemetry is None
        self.telemetry = telemetry or build_telemetry(
            traces=settings.otel_traces_exporter,
            metrics_exporter=settings.otel_metrics_exporter,
            otlp_endpoint=settings.otel_endpoint,
            sampler_ratio=settings.otel_sampler_ratio,
            prometheus_listen=settings.metrics_listen,
        )
        self.instruments = Instruments(self.telemetry.metrics)
        self.tracer = self.telemetry.tracer_provider.get_tracer("seekwire")
        self.port = 0
        self.fake: FakeDeepSeek | None = None
        self.health = health.aio.HealthServicer()
        self.pool: Pool | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._server: grpc.aio.Server | None = None
        self._limiter: Limiter | None = None
        self.keys: KeyFile | None = None

    async def start(self) -> int:
        settings = self.settings
        await self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        if settings.fake_upstream:
            self.fake = FakeDeepSeek(keep_requests=1000)
            url = await self.fake.start()
            log.info("serving on the embedded fake DeepSeek at %s", url)
            endpoints = [EndpointConfig("fake", url, (FAKE_UPSTREAM_KEY,))]
        else:
            endpoints = _endpoints(settings)
        pool = self.pool = Pool(endpoints, _pool_settings(settings))
        retry = RetryPolicy(
            max_attempts=settings.retry_max_attempts,
            base_delay=settings.retry_base_delay,
            max_delay=settings.retry_max_delay,
            max_retry_after=settings.retry_max_retry_after,
        )
        upstream = ResilientUpstream(
            pool,
            retry,
            RetryBudget(ratio=settings.retry_budget_ratio),
            tracer=self.tracer,
            instruments=self.instruments,
            capture_content=settings.otel_capture_content,
        )
        self.instruments.observe(
            # Read from the exporters' threads: list() copies the dict in one step under the GIL.
            breakers=lambda: [
                (e.name, _BREAKER_GAUGE[e.breaker.state]) for e in list(pool.endpoints.values())
            ],
            limiter_errors=lambda: getattr(self._limiter, "failures", 0),
            keys_ejected=lambda: pool.stats["keys_ejected"],
        )
        server = self._server = grpc.aio.server(
            interceptors=self._interceptors(),
            options=_server_options(settings),
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs or None,
            compression=_COMPRESSION[settings.grpc_compression],
        )
        sessions = MemorySessionStore(
            ttl=settings.session_ttl,
            max_sessions=settings.session_max_count,
            max_entries=settings.session_max_messages,
        )
        chat_pb2_grpc.add_ChatServiceServicer_to_server(
            ChatService(upstream, sessions, self.tracer), server
        )
        completion_pb2_grpc.add_CompletionServiceServicer_to_server(
            CompletionService(upstream), server
        )
        model_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(upstream), server)
        account_pb2_grpc.add_AccountServiceServicer_to_server(AccountService(upstream), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if settings.reflection:
            names = (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME)
            reflection.enable_server_reflection(names, server)
        credentials = _server_credentials(settings)
        if credentials is None:
            self.port = server.add_insecure_port(settings.listen)
        else:
            self.port = server.add_secure_port(settings.listen, credentials)
        if self.port == 0:
            raise OSError(f"cannot listen on {settings.listen}")
        await pool.start(warm=settings.warmup)  # before the first caller can arrive
        await server.start()
        if settings.upstreams_file:
            self._watcher = asyncio.create_task(self._watch_upstreams(settings.upstreams_file))
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("seekwire listening on %s", settings.listen.rpartition(":")[0] + f":{self.port}")
        return self.port

    async def _watch_upstreams(self, path: str, interval: float = 2.0) -> None:
        """Re-reads the endpoint file when it changes: keys and endpoints rotate without a restart."""
        seen = (await asyncio.to_thread(os.stat, path)).st_mtime_ns
        while True:
            await asyncio.sleep(interval)
            try:
                mtime = (await asyncio.to_thread(os.stat, path)).st_mtime_ns
                if mtime == seen:
                    continue
                seen = mtime
                configs = load_endpoints(path)
            except (OSError, ValueError, KeyError, tomllib.TOMLDecodeError) as exc:
                log.error("upstreams_file %s not reloaded: %s", path, exc)
                continue
            if self.pool is not None:
                try:
                    await self.pool.reload(configs)
                except Exception:  # a bad reload keeps the endpoints there were
                    log.exception("upstreams_file %s not applied", path)

    def _interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """Outermost first: telemetry, auth, limits, then error mapping around the handlers."""
        settings = self.settings
        interceptors: list[WrappingInterceptor] = [
            TelemetryInterceptor(self.tracer, self.instruments)
        ]
        if settings.auth:
            self.keys = KeyFile(settings.keys_file)
            authenticator = Authenticator(
                keys=self.keys,
                tokens=TokenVerifier(_token_settings(settings)),
                mtls_scopes=_scopes(settings.mtls_scopes) if settings.tls_client_ca else None,
            )
            interceptors.append(
                AuthInterceptor(authenticator, reflection_public=settings.reflection_public)
            )
            if (settings.jwt_public_keys or settings.jwt_jwks_file) and not (
                settings.jwt_audience and settings.jwt_issuer
            ):
                log.warning(
                    "bearer tokens are checked without jwt_audience or jwt_issuer: tokens your "
                    "identity provider issued for other services will be accepted"
                )
            if not any(r.active(time.time()) for r in self.keys.records().values()):
                log.warning(
                    "auth is on and %s holds no API key yet: mint one with "
                    "`seekwire keys create --name demo` and send it as `x-api-key`",
                    settings.keys_file,
                )
        else:
            log.warning("AUTH IS OFF: every caller is trusted. Never run this way in production.")
        defaults = Limits(settings.default_rpm, settings.default_tpm, settings.default_streams)
        model_limits = parse_model_limits(settings.model_limits)
        # With auth off and nothing configured there is nothing to limit: skip the interceptor.
        if settings.auth or model_limits or defaults != Limits(0, 0, 0):
            self._limiter = (
                RedisLimiter(settings.redis_url, fail_open=settings.limits_fail_open)
                if settings.limits_backend == "redis"
                else MemoryLimiter()
            )
            interceptors.append(
                LimitsInterceptor(
                    RateLimits(self._limiter, defaults=defaults, model_limits=model_limits)
                )
            )
        interceptors.append(ErrorInterceptor())
        return [Chain(interceptors)]

    async def drain(self, *, delay: float | None = None) -> None:
        """NOT_SERVING first (Envoy stops routing here), then let in-flight RPCs finish."""
        await self.health.enter_graceful_shutdown()
        wait = self.settings.drain_delay if delay is None else delay
        if wait > 0:
            log.info("draining: NOT_SERVING for %.1fs before closing the listener", wait)
            await asyncio.sleep(wait)
        if self._server is not None:
            await self._server.stop(self.settings.shutdown_grace)
        if self._watcher is not None:
            self._watcher.cancel()
        if self.pool is not None:
            await self.pool.close()
        if self._limiter is not None:
            await self._limiter.close()
        if self.fake is not None:
            await self.fake.stop()
        if self._own_telemetry:
            self.telemetry.shutdown()
        log.info("seekwire stopped")
