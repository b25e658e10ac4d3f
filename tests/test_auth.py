"""Caller authentication and authorization over a real server: keys, JWT, scopes, reflection."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from jwt.algorithms import ECAlgorithm

from seekwire.server.auth.keys import KeyFile
from seekwire.server.caller import Limits
from seekwire.v1 import account_pb2, chat_pb2, model_pb2
from tests.conftest import Stack, StackFactory, eventually, refused, rich_details
from tests.test_chat import chat_request

HS_SECRET = "hs256-shared-secret-of-at-least-32-bytes!"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: Any) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def token(key: Any, alg: str, **claims: Any) -> str:
    body = {
        "sub": "svc-jwt",
        "aud": "seekwire",
        "iss": "https://idp.test",
        "exp": time.time() + 300,
    }
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=alg)


@pytest.fixture
async def secured(make_stack: StackFactory, tmp_path: Path) -> tuple[Stack, KeyFile]:
    public_keys = tmp_path / "rsa.pem"
    public_keys.write_bytes(pem(RSA_KEY))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [json.loads(ECAlgorithm.to_jwk(EC_KEY.public_key()))]}))
    keys = KeyFile(tmp_path / "keys.json", check_interval=0)
    stack = await make_stack(
        auth=True,
        keys_file=str(keys.path),
        jwt_hs256_secret=HS_SECRET,
        jwt_public_keys=str(public_keys),
        jwt_jwks_file=str(jwks),
        jwt_audience="seekwire",
        jwt_issuer="https://idp.test",
    )
    return stack, keys


def with_key(key: str) -> tuple[tuple[str, str], ...]:
    return (("x-api-key", key),)


def bearer(credential: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {credential}"),)


async def test_api_key_accepted_by_either_header(secured: tuple[Stack, KeyFile]) -> None:
    stack, keys = secured
    secret, _ = keys.create("svc-a")
    for metadata in (with_key(secret), bearer(secret)):
        answer = await stack.chat.CreateChatCompletion(chat_request(), metadata=metadata)
        assert answer.choices[0].message.content


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ((), "MISSING_CREDENTIALS"),
        ((("authorization", "Basic dXNlcjpwdw=="),), "BAD_AUTHORIZATION"),
        (with_key("sk-sw-000000000000-nope"), "INVALID_API_KEY"),
        (with_key("not-a-key"), "INVALID_API_KEY"),
        (bearer("eyJhbGciOiJIUzI1NiJ9.e30.bad"), "INVALID_TOKEN"),
    ],
)
async def test_bad_credentials_are_unauthenticated_before_any_work(
    secured: tuple[Stack, KeyFile], metadata: tuple[tuple[str, str], ...], reason: str
) -> None:
    stack, _ = secured
    for call in (
        stack.chat.CreateChatCompletion(chat_request(), metadata=metadata),
        stack.chat.StreamChatCompletion(chat_request(), metadata=metadata).read(),
    ):
        error = await refused(call)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert rich_details(error)["ErrorInfo"].reason == reason
    converse = stack.chat.Converse(metadata=metadata)
    error = await refused(converse.read())
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert stack.fake.requests == []


async def test_wrong_secret_for_a_real_key_id_is_never_echoed(
    secured: tuple[Stack, KeyFile],
) -> None:
    stack, keys = secured
    secret, record = keys.create("svc-a")
    forged = f"sk-sw-{record.id}-guessedsecretvalue123"
    error = await refused(
        stack.chat.CreateChatCompletion(chat_request(), metadata=with_key(forged))
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    everything = error.details() + repr(error.trailing_metadata())
    assert "guessedsecretvalue123" not in everything
    assert secret.split("-")[-1] not in everything


async def test_store_changes_apply_without_restart(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    keys = KeyFile(tmp_path / "keys.json")
    stack = await make_stack(auth=True, keys_file=str(keys.path))
    secret, record = keys.create("late")  # minted after the gateway started

    async def works(key: str) -> bool:
        try:
            await stack.models.ListModels(model_pb2.ListModelsRequest(), metadata=with_key(key))
        except grpc.aio.AioRpcError:
            return False
        return True

    await eventually(lambda: works(secret))
    keys.revoke(record.id)
    await eventually(lambda: _not(works(secret)))


async def _not(check: Awaitable[bool]) -> bool:
    return not await check


async def test_rotation_keeps_two_live_keys(secured: tuple[Stack, KeyFile]) -> None:
    stack, keys = secured
    old, record = keys.create("svc-rot", scopes=["chat"], limits=Limits(rpm=100))
    new, successor = keys.rotate(record.id, grace=3600)
    assert successor.principal == record.principal
    assert successor.rpm == 100
    for key in (old, new):
        await stack.chat.CreateChatCompletion(chat_request(), metadata=with_key(key))
    keys.revoke(record.id)

    async def old_refused() -> bool:
        try:
            await stack.chat.CreateChatCompletion(chat_request(), metadata=with_key(old))
        except grpc.aio.AioRpcError as error:
            return error.code() == grpc.StatusCode.UNAUTHENTICATED
        return False

    await eventually(old_refused)  # revocations apply within the store's 1 s check
    await stack.chat.CreateChatCompletion(chat_request(), metadata=with_key(new))


async def test_expired_key(secured: tuple[Stack, KeyFile]) -> None:
    stack, keys = secured
    secret, _ = keys.create("brief", expires_in=0.2)
    await asyncio.sleep(0.3)
    error = await refused(
        stack.chat.CreateChatCompletion(chat_request(), metadata=with_key(secret))
    )
    assert rich_details(error)["ErrorInfo"].reason == "INVALID_API_KEY"


async def test_scopes(secured: tuple[Stack, KeyFile]) -> None:
    stack, keys = secured
    chat_only, _ = keys.create("chatter")
    admin, _ = keys.create("operator", scopes=["chat", "admin"])
    error = await refused(
        stack.account.GetBalance(account_pb2.GetBalanceRequest(), metadata=with_key(chat_only))
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    info = rich_details(error)["ErrorInfo"]
    assert (info.reason, info.metadata["scope"]) == ("MISSING_SCOPE", "admin")
    balance = await stack.account.GetBalance(
        account_pb2.GetBalanceRequest(), metadata=with_key(admin)
    )
    assert balance.is_available


async def test_jwt_kinds_accepted(secured: tuple[Stack, KeyFile]) -> None:
    stack, _ = secured
    for credential in (
        token(HS_SECRET, "HS256", scope="chat"),
        token(RSA_KEY, "RS256", scope="chat admin"),
        token(EC_KEY, "ES256", scope=["chat"]),
        token(HS_SECRET, "HS256", scope="chat", exp=time.time() - 10),  # within the 30 s leeway
    ):
        answer = await stack.chat.CreateChatCompletion(chat_request(), metadata=bearer(credential))
        assert answer.choices[0].message.content


def _none_token() -> str:
    return jwt.encode(
        {"sub": "x", "aud": "seekwire", "iss": "https://idp.test", "exp": time.time() + 60},
        None,
        algorithm="none",
    )


def _confused_token() -> str:
    """HS256 signed with the RSA public key as the HMAC secret: the classic confusion attack."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {
        "sub": "attacker",
        "aud": "seekwire",
        "iss": "https://idp.test",
        "exp": time.time() + 60,
        "scope": "chat admin",
    }
    payload = b64(json.dumps(claims).encode())
    signature = b64(hmac.new(pem(RSA_KEY), header + b"." + payload, hashlib.sha256).digest())
    return (header + b"." + payload + b"." + signature).decode()


@pytest.mark.parametrize(
    ("make_token", "message"),
    [
        (lambda: token(HS_SECRET, "HS256", exp=time.time() - 120), "expired"),
        (lambda: token(HS_SECRET, "HS256", nbf=time.time() + 600), "not yet valid"),
        (lambda: token(HS_SECRET, "HS256", aud="someone-else"), "audience"),
        (lambda: token(HS_SECRET, "HS256", iss="https://evil.test"), "issuer"),
        (lambda: token("another-secret-of-at-least-32-bytes!!", "HS256"), "signature"),
        (lambda: token(OTHER_RSA, "RS256"), "signature"),
        (lambda: token(HS_SECRET, "HS256", exp=None), "invalid token"),
        (_none_token, "algorithm 'none'"),
        (lambda: token(HS_SECRET, "HS256", sub=None), "no 'sub' claim"),
    ],
    ids=[
        "expired",
        "nbf",
        "audience",
        "issuer",
        "hs-wrong-secret",
        "rs-wrong-key",
        "no-exp",
        "alg-none",
        "no-sub",
    ],
)
async def test_jwt_refusals(
    secured: tuple[Stack, KeyFile], make_token: Callable[[], str], message: str
) -> None:
    stack, _ = secured
    error = await refused(
        stack.chat.CreateChatCompletion(chat_request(), metadata=bearer(make_token()))
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert message in error.details()


async def test_hs_rs_confusion_is_refused(make_stack: StackFactory, tmp_path: Path) -> None:
    public_keys = tmp_path / "rsa.pem"
    public_keys.write_bytes(pem(RSA_KEY))
    stack = await make_stack(
        auth=True, keys_file=str(tmp_path / "k.json"), jwt_public_keys=str(public_keys)
    )
    error = await refused(
        stack.chat.CreateChatCompletion(chat_request(), metadata=bearer(_confused_token()))
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "'HS256' is not accepted" in error.details()
    answer = await stack.chat.CreateChatCompletion(
        chat_request(), metadata=bearer(token(RSA_KEY, "RS256", scope="chat"))
    )
    assert answer.choices[0].message.content


async def test_jwt_scopes_apply(secured: tuple[Stack, KeyFile]) -> None:
    stack, _ = secured
    error = await refused(
        stack.account.GetBalance(
            account_pb2.GetBalanceRequest(),
            metadata=bearer(token(HS_SECRET, "HS256", scope="chat")),
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_health_is_open_and_reflection_needs_a_caller(secured: tuple[Stack, KeyFile]) -> None:
    stack, keys = secured
    health = health_pb2_grpc.HealthStub(stack.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(stack.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    call = reflection.ServerReflectionInfo()
    await call.write(request)
    error = await refused(call.read())
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    secret, _ = keys.create("browser")
    call = reflection.ServerReflectionInfo(metadata=with_key(secret))
    await call.write(request)
    reply = await call.read()
    assert "seekwire.v1.ChatService" in {s.name for s in reply.list_services_response.service}


async def test_sessions_belong_to_their_principal(secured: tuple[Stack, KeyFile]) -> None:
    stack, keys = secured
    alice, _ = keys.create("alice")
    bob, _ = keys.create("bob")
    call = stack.chat.Converse(metadata=with_key(alice))
    await call.write(
        chat_pb2.ConverseRequest(start=chat_pb2.ConverseStart(model="deepseek-v4-flash"))
    )
    started = (await call.read()).session_started
    await call.done_writing()
    intruder = stack.chat.Converse(metadata=with_key(bob))
    await intruder.write(
        chat_pb2.ConverseRequest(
            start=chat_pb2.ConverseStart(model="deepseek-v4-flash", session_id=started.session_id)
        )
    )
    error = await refused(intruder.read())
    assert error.code() == grpc.StatusCode.NOT_FOUND
    again = stack.chat.Converse(metadata=with_key(alice))
    await again.write(
        chat_pb2.ConverseRequest(
            start=chat_pb2.ConverseStart(model="deepseek-v4-flash", session_id=started.session_id)
        )
    )
    assert (await again.read()).session_started.session_id == started.session_id
    await again.done_writing()


async def test_auth_off_is_logged_loudly(
    make_stack: StackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    stack = await make_stack(auth=False)
    assert "AUTH IS OFF" in caplog.text
    await stack.chat.CreateChatCompletion(chat_request())


async def test_a_malformed_token_header_is_unauthenticated(secured: tuple[Stack, KeyFile]) -> None:
    stack, _ = secured
    import base64

    header = base64.urlsafe_b64encode(b'{"alg":["RS256"],"typ":"JWT"}').rstrip(b"=").decode()
    error = await refused(
        stack.chat.CreateChatCompletion(chat_request(), metadata=bearer(f"{header}.e30.c2ln"))
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_jwt_principals_are_namespaced(secured: tuple[Stack, KeyFile]) -> None:
    stack, keys = secured
    key, _ = keys.create("svc-jwt")  # the same name as the token's subject
    call = stack.chat.Converse(metadata=with_key(key))
    await call.write(
        chat_pb2.ConverseRequest(start=chat_pb2.ConverseStart(model="deepseek-v4-flash"))
    )
    session = (await call.read()).session_started.session_id
    await call.done_writing()
    intruder = stack.chat.Converse(metadata=bearer(token(HS_SECRET, "HS256", scope="chat")))
    await intruder.write(
        chat_pb2.ConverseRequest(
            start=chat_pb2.ConverseStart(model="deepseek-v4-flash", session_id=session)
        )
    )
    assert (await refused(intruder.read())).code() == grpc.StatusCode.NOT_FOUND


async def test_non_ascii_principals_resume_their_sessions(secured: tuple[Stack, KeyFile]) -> None:
    stack, keys = secured
    key, _ = keys.create("équipe-données")
    call = stack.chat.Converse(metadata=with_key(key))
    await call.write(
        chat_pb2.ConverseRequest(start=chat_pb2.ConverseStart(model="deepseek-v4-flash"))
    )
    session = (await call.read()).session_started.session_id
    await call.done_writing()
    again = stack.chat.Converse(metadata=with_key(key))
    await again.write(
        chat_pb2.ConverseRequest(
            start=chat_pb2.ConverseStart(model="deepseek-v4-flash", session_id=session)
        )
    )
    assert (await again.read()).session_started.session_id == session
    await again.done_writing()


def test_key_store_file_is_private_and_survives_corruption(tmp_path: Path) -> None:
    keys = KeyFile(tmp_path / "keys.json", check_interval=0)
    secret, _ = keys.create("svc")
    assert (keys.path.stat().st_mode & 0o777) == 0o600
    assert "salt" in keys.path.read_text()
    assert secret.split("-")[-1] not in keys.path.read_text()
    assert keys.verify(secret) is not None
    keys.path.write_text('{"keys": [{"id": "x", "unexpected": true}]}')
    assert keys.verify(secret) is not None  # the last good records stay in force
