"""Who a call comes from, and whether it may call this method."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import grpc

from seekwire.server.auth.keys import PREFIX, KeyFile
from seekwire.server.auth.tokens import TokenError, TokenVerifier
from seekwire.server.caller import Caller
from seekwire.server.errors import GatewayError

# The scope each service needs; reflection needs a valid caller but no scope.
SCOPES: Mapping[str, str] = {
    "seekwire.v1.ChatService": "chat",
    "seekwire.v1.CompletionService": "chat",
    "seekwire.v1.ModelService": "chat",
    "seekwire.v1.AccountService": "admin",
}
_HOW = "send `authorization: Bearer <API key or JWT>` or `x-api-key: <API key>`"


def _unauthenticated(reason: str, message: str) -> GatewayError:
    return GatewayError(grpc.StatusCode.UNAUTHENTICATED, reason, message)


class Authenticator:
    def __init__(
        self,
        *,
        keys: KeyFile | None,
        tokens: TokenVerifier | None,
        mtls_scopes: Iterable[str] | None,
    ) -> None:
        self._keys = keys
        self._tokens = tokens
        self._mtls_scopes = frozenset(mtls_scopes) if mtls_scopes is not None else None

    def authenticate(
        self, metadata: Iterable[tuple[str, str | bytes]], auth_context: Mapping[str, Any]
    ) -> Caller:
        api_key = token = ""
        for name, value in metadata:
            if name == "x-api-key" and isinstance(value, str):
                api_key = value.strip()
            elif name == "authorization" and isinstance(value, str):
                scheme, _, credential = value.strip().partition(" ")
                if scheme.lower() != "bearer" or not credential.strip():
                    raise _unauthenticated(
                        "BAD_AUTHORIZATION", f"unsupported authorization; {_HOW}"
                    )
                credential = credential.strip()
                if credential.startswith(PREFIX):
                    api_key = credential
                else:
                    token = credential
        if api_key:
            return self._by_key(api_key)
        if token:
            return self._by_token(token)
        cert = self._by_certificate(auth_context)
        if cert is not None:
            return cert
        raise _unauthenticated("MISSING_CREDENTIALS", f"no credentials; {_HOW}")

    def _by_key(self, key: str) -> Caller:
        record = self._keys.verify(key) if self._keys is not None else None
        if record is None:
            raise _unauthenticated("INVALID_API_KEY", "API key is invalid, expired or revoked")
        return Caller(record.principal, f"key:{record.id}", frozenset(record.scopes), record.limits)

    def _by_token(self, token: str) -> Caller:
        if self._tokens is None or not self._tokens.enabled:
            raise _unauthenticated("INVALID_TOKEN", "bearer tokens are not accepted here")
        try:
            claims = self._tokens.verify(token)
        except TokenError as exc:
            raise _unauthenticated("INVALID_TOKEN", str(exc)) from None
        # Namespaced so an identity provider's subject never collides with a key's principal.
        return Caller(f"jwt:{claims.principal}", "jwt", claims.scopes)

    def _by_certificate(self, auth_context: Mapping[str, Any]) -> Caller | None:
        if self._mtls_scopes is None:
            return None
        names = auth_context.get("x509_common_name") or ()
        if not names:
            return None
        common_name = names[0].decode() if isinstance(names[0], bytes) else str(names[0])
        return Caller(f"cn:{common_name}", "mtls", self._mtls_scopes)

    @staticmethod
    def authorize(caller: Caller, method: str) -> None:
        service = method[1:].split("/", 1)[0]
        scope = SCOPES.get(service)
        if scope is None or scope in caller.scopes or "*" in caller.scopes:
            return
        raise GatewayError(
            grpc.StatusCode.PERMISSION_DENIED,
            "MISSING_SCOPE",
            f"this caller lacks the {scope!r} scope for {service}",
            metadata={"scope": scope},
        )
