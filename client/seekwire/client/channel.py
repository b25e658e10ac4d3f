"""A grpc.aio channel to seekwire: TLS/mTLS, credentials as call metadata, keepalive, retries."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import grpc

SERVICES = (
    "seekwire.v1.ChatService",
    "seekwire.v1.CompletionService",
    "seekwire.v1.ModelService",
    "seekwire.v1.AccountService",
)


def service_config(max_attempts: int = 4) -> str:
    """gRPC's native retry policy: UNAVAILABLE only, exponential backoff, and the server's
    `grpc-retry-pushback-ms` honoured; streams are retried only before their first message."""
    policy = {
        "maxAttempts": max_attempts,
        "initialBackoff": "0.2s",
        "maxBackoff": "5s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    return json.dumps(
        {"methodConfig": [{"name": [{"service": s} for s in SERVICES], "retryPolicy": policy}]}
    )


class _CallMetadata:
    """Adds the caller's credentials to every call, on plaintext and TLS channels alike."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self._pairs = tuple(pairs)

    def _with_metadata(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), *self._pairs)
        replaced: grpc.aio.ClientCallDetails = details._replace(metadata=metadata)  # type: ignore[attr-defined]
        return replaced


# grpc.aio files an interceptor under the first of the four kinds it implements, so each
# kind needs its own object.
class _UnaryUnary(_CallMetadata, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._with_metadata(details), request)


class _UnaryStream(_CallMetadata, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._with_metadata(details), request)


class _StreamUnary(_CallMetadata, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._with_metadata(details), requests)


class _StreamStream(_CallMetadata, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._with_metadata(details), requests)


def create_channel(
    target: str,
    *,
    api_key: str | None = None,
    bearer_token: str | None = None,
    tls: bool = False,
    root_certificates: bytes | None = None,
    certificate_chain: bytes | None = None,
    private_key: bytes | None = None,
    keepalive_time: float = 30.0,
    max_message_bytes: int = 64 * 1024 * 1024,
    max_attempts: int = 4,
) -> grpc.aio.Channel:
    """`target` is host:port. TLS is on when `tls` or any certificate is given; a client
    certificate and key make it mTLS. Keepalive stays at or above the server's
    `min_ping_interval` (10 s by default) so the server never answers with GOAWAY.
    `max_attempts` of 1 turns retries off."""
    options: list[tuple[str, Any]] = [
        ("grpc.keepalive_time_ms", int(keepalive_time * 1000)),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]
    if max_attempts > 1:
        options += [
            ("grpc.service_config", service_config(max_attempts)),
            ("grpc.enable_retries", 1),
        ]
    else:
        options.append(("grpc.enable_retries", 0))
    pairs: list[tuple[str, str]] = []
    if api_key:
        pairs.append(("x-api-key", api_key))
    if bearer_token:
        pairs.append(("authorization", f"Bearer {bearer_token}"))
    interceptors: list[Any] | None = None
    if pairs:
        interceptors = [
            kind(pairs) for kind in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)
        ]
    if tls or root_certificates or certificate_chain:
        credentials = grpc.ssl_channel_credentials(
            root_certificates, private_key, certificate_chain
        )
        return grpc.aio.secure_channel(target, credentials, options, interceptors=interceptors)
    return grpc.aio.insecure_channel(target, options, interceptors=interceptors)
