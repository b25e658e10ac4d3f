"""JWT bearer tokens: HS256 with a shared secret, RS256/ES256 with PEM public keys or a JWKS file.

The algorithm is chosen by the key material configured, never by the token alone: an HS256
token is checked only against the shared secret, an RS256/ES256 token only against public keys,
so `alg: none` and HS/RS confusion fail.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import jwt.types
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

_ASYMMETRIC = {"RS256": RSAPublicKey, "ES256": EllipticCurvePublicKey}


class TokenError(Exception):
    """Why a token was refused (said to the caller without echoing the token)."""


@dataclass(slots=True)
class TokenSettings:
    hs256_secret: str = ""
    public_keys: list[Any] = field(default_factory=list)  # loaded PEM or JWKS keys
    issuer: str = ""
    audience: str = ""
    principal_claim: str = "sub"
    scopes_claim: str = "scope"
    leeway: float = 30.0


def load_public_keys(pem_path: str = "", jwks_path: str = "") -> list[Any]:
    keys: list[Any] = []
    if pem_path:
        text = Path(pem_path).read_bytes()
        for block in text.split(b"-----END PUBLIC KEY-----"):
            if b"-----BEGIN PUBLIC KEY-----" in block:
                keys.append(load_pem_public_key(block + b"-----END PUBLIC KEY-----\n"))
    if jwks_path:
        for jwk in json.loads(Path(jwks_path).read_text())["keys"]:
            algorithm = RSAAlgorithm if jwk.get("kty") == "RSA" else ECAlgorithm
            keys.append(algorithm.from_jwk(json.dumps(jwk)))
    return keys


@dataclass(frozen=True, slots=True)
class Claims:
    principal: str
    scopes: frozenset[str]


class TokenVerifier:
    def __init__(self, settings: TokenSettings) -> None:
        self._settings = settings

    @property
    def enabled(self) -> bool:
        return bool(self._settings.hs256_secret or self._settings.public_keys)

    def verify(self, token: str) -> Claims:
        s = self._settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise TokenError("malformed token header")
        if alg == "HS256" and s.hs256_secret:
            candidates: list[Any] = [s.hs256_secret]
        elif alg in _ASYMMETRIC and (
            candidates := [k for k in s.public_keys if isinstance(k, _ASYMMETRIC[alg])]
        ):
            pass
        else:
            raise TokenError(f"token algorithm {alg!r} is not accepted")
        options: jwt.types.Options = {
            "require": ["exp"],
            "verify_aud": bool(s.audience),
            "verify_iss": bool(s.issuer),
        }
        last: Exception | None = None
        for key in candidates:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[alg],
                    audience=s.audience or None,
                    issuer=s.issuer or None,
                    leeway=s.leeway,
                    options=options,
                )
            except jwt.InvalidSignatureError as exc:
                last = exc
                continue
            except jwt.ExpiredSignatureError:
                raise TokenError("token expired") from None
            except jwt.ImmatureSignatureError:
                raise TokenError("token not yet valid") from None
            except jwt.InvalidAudienceError:
                raise TokenError("token audience is not accepted") from None
            except jwt.InvalidIssuerError:
                raise TokenError("token issuer is not accepted") from None
            except jwt.PyJWTError as exc:
                raise TokenError(f"invalid token ({type(exc).__name__})") from None
            return _claims(claims, s)
        raise TokenError("token signature does not verify") from last


def _claims(claims: dict[str, Any], s: TokenSettings) -> Claims:
    principal = claims.get(s.principal_claim)
    if not isinstance(principal, str) or not principal:
        raise TokenError(f"token has no {s.principal_claim!r} claim")
    raw = claims.get(s.scopes_claim, "")
    scopes = (
        raw.split()
        if isinstance(raw, str)
        else [str(x) for x in raw]
        if isinstance(raw, list)
        else []
    )
    return Claims(principal, frozenset(scopes))
