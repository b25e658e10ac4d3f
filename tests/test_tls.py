"""TLS on the listener (1.2 at least, 1.3 preferred) and mTLS with the principal from the certificate."""

from __future__ import annotations

import asyncio
import socket
import ssl
import warnings
from pathlib import Path

import grpc
import pytest

from seekwire.client import AsyncClient, Unauthenticated, Unavailable, create_channel
from seekwire.v1 import account_pb2
from tests.certs import Authority, write
from tests.conftest import StackFactory, rich_details


@pytest.fixture(scope="module")
def pki() -> dict[str, object]:
    ca = Authority.create("seekwire test CA")
    rogue = Authority.create("rogue CA")
    return {
        "ca": ca,
        "server": ca.issue("localhost", server=True),
        "client": ca.issue("billing-service"),
        "rogue_client": rogue.issue("billing-service"),
    }


async def test_tls_serves_and_plaintext_is_refused(
    make_stack: StackFactory, pki: dict, tmp_path: Path
) -> None:  # type: ignore[type-arg]
    server = pki["server"]
    stack = await make_stack(
        tls_cert=write(tmp_path, "s.pem", server.cert), tls_key=write(tmp_path, "s.key", server.key)
    )
    target = f"127.0.0.1:{stack.gateway.port}"
    async with AsyncClient(create_channel(target, root_certificates=pki["ca"].pem)) as client:
        assert (await client.chat("Hello")).choices[0].message.content
    async with AsyncClient(create_channel(target, max_attempts=1)) as plaintext:
        with pytest.raises(Unavailable):
            await plaintext.chat("Hello", timeout=5)


def _handshake(port: int, ca: bytes, maximum: ssl.TLSVersion | None = None) -> str:
    context = ssl.create_default_context(cadata=ca.decode())
    context.set_alpn_protocols(["h2"])
    if maximum is not None:
        with warnings.catch_warnings():  # offering TLS 1.1 is the point here
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = maximum
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # so that only the server can say no
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return str(tls.version())


async def test_tls_versions(make_stack: StackFactory, pki: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    server = pki["server"]
    stack = await make_stack(
        tls_cert=write(tmp_path, "s.pem", server.cert), tls_key=write(tmp_path, "s.key", server.key)
    )
    port, ca = stack.gateway.port, pki["ca"].pem
    assert await asyncio.to_thread(_handshake, port, ca) == "TLSv1.3"
    assert await asyncio.to_thread(_handshake, port, ca, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    # BoringSSL answers TLS 1.1 with UNSUPPORTED_PROTOCOL and closes the connection.
    with pytest.raises(ssl.SSLError, match=r"(?i)eof|protocol.version"):
        await asyncio.to_thread(_handshake, port, ca, ssl.TLSVersion.TLSv1_1)


async def test_mtls_principal_from_the_certificate(
    make_stack: StackFactory, pki: dict, tmp_path: Path
) -> None:  # type: ignore[type-arg]
    server, client, rogue, ca = pki["server"], pki["client"], pki["rogue_client"], pki["ca"]
    stack = await make_stack(
        auth=True,
        keys_file=str(tmp_path / "keys.json"),
        tls_cert=write(tmp_path, "s.pem", server.cert),
        tls_key=write(tmp_path, "s.key", server.key),
        tls_client_ca=write(tmp_path, "ca.pem", ca.pem),
    )
    target = f"127.0.0.1:{stack.gateway.port}"
    trusted = create_channel(
        target, root_certificates=ca.pem, certificate_chain=client.cert, private_key=client.key
    )
    async with AsyncClient(trusted) as caller:
        assert (await caller.chat("Hello")).choices[0].message.content
        conversation = await caller.conversation()
        assert (await conversation.ask("[fake echo] hi")).content == "hi"
        await conversation.close()
        # mtls_scopes defaults to chat: admin RPCs are refused for certificate callers.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await caller.channel.unary_unary(
                "/seekwire.v1.AccountService/GetBalance",
                request_serializer=account_pb2.GetBalanceRequest.SerializeToString,
                response_deserializer=account_pb2.GetBalanceResponse.FromString,
            )(account_pb2.GetBalanceRequest())
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert rich_details(caught.value)["ErrorInfo"].reason == "MISSING_SCOPE"
    for certificate in (None, rogue):
        options = (
            {}
            if certificate is None
            else {"certificate_chain": certificate.cert, "private_key": certificate.key}
        )
        channel = create_channel(target, root_certificates=ca.pem, max_attempts=1, **options)
        async with AsyncClient(channel) as refused:
            with pytest.raises((Unavailable, Unauthenticated)):
                await refused.chat("Hello", timeout=5)
    assert [r.body["messages"][-1]["content"] for r in stack.fake.requests] == [
        "Hello",
        "[fake echo] hi",
    ]
