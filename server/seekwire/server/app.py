"""Wires the gateway: upstream client, services, interceptors, health, reflection, draining."""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from seekwire.server.config import Settings
from seekwire.server.fake import FakeDeepSeek
from seekwire.server.interceptors.errors import ErrorInterceptor
from seekwire.server.services.catalog import AccountService, ModelService
from seekwire.server.services.chat import ChatService
from seekwire.server.services.completion import CompletionService
from seekwire.server.state.sessions import MemorySessionStore
from seekwire.server.upstream.client import DeepSeekClient
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


class Gateway:
    """One gateway process: `await start()`, then `await drain()` to stop gracefully."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = 0
        self.fake: FakeDeepSeek | None = None
        self.health = health.aio.HealthServicer()
        self._upstream: DeepSeekClient | None = None
        self._server: grpc.aio.Server | None = None

    async def start(self) -> int:
        settings = self.settings
        base_url, api_key = settings.deepseek_base_url, settings.deepseek_api_key
        if settings.fake_upstream:
            self.fake = FakeDeepSeek()
            base_url, api_key = await self.fake.start(), FAKE_UPSTREAM_KEY
            log.info("serving on the embedded fake DeepSeek at %s", base_url)
        timeouts = Timeouts(
            connect=settings.connect_timeout,
            idle=settings.idle_timeout,
            queue=settings.queue_timeout,
            total=settings.total_timeout,
        )
        upstream = self._upstream = DeepSeekClient(
            base_url, api_key, timeouts=timeouts, pool_size=settings.upstream_pool_size
        )
        server = self._server = grpc.aio.server(
            interceptors=[ErrorInterceptor()],
            options=_server_options(settings),
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs or None,
        )
        sessions = MemorySessionStore(
            ttl=settings.session_ttl,
            max_sessions=settings.session_max_count,
            max_entries=settings.session_max_messages,
        )
        chat_pb2_grpc.add_ChatServiceServicer_to_server(ChatService(upstream, sessions), server)
        completion_pb2_grpc.add_CompletionServiceServicer_to_server(
            CompletionService(upstream), server
        )
        model_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(upstream), server)
        account_pb2_grpc.add_AccountServiceServicer_to_server(AccountService(upstream), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if settings.reflection:
            names = (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME)
            reflection.enable_server_reflection(names, server)
        self.port = server.add_insecure_port(settings.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {settings.listen}")
        await server.start()
        await upstream.start()
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("seekwire listening on %s", settings.listen.rpartition(":")[0] + f":{self.port}")
        return self.port

    async def drain(self, *, delay: float | None = None) -> None:
        """NOT_SERVING first (Envoy stops routing here), then let in-flight RPCs finish."""
        await self.health.enter_graceful_shutdown()
        wait = self.settings.drain_delay if delay is None else delay
        if wait > 0:
            log.info("draining: NOT_SERVING for %.1fs before closing the listener", wait)
            await asyncio.sleep(wait)
        if self._server is not None:
            await self._server.stop(self.settings.shutdown_grace)
        if self._upstream is not None:
            await self._upstream.close()
        if self.fake is not None:
            await self.fake.stop()
        log.info("seekwire stopped")
