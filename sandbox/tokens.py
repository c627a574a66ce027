"""JSON Web Tokens as the sandbox's Entra ID issues them.

Access tokens are signed with HS256 and a key made per process: the services under test never
verify signatures (only Microsoft's resource servers do), so a symmetric key is enough for the
sandbox's own resource servers to reject forged or tampered tokens.  ID tokens are unsigned
(``alg: none``), which MSAL accepts because it only decodes them to build its account cache.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any


class TokenError(Exception):
    """The bearer token is missing, malformed, forged or expired; ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


MISSING = "missing"
MALFORMED = "malformed"
BAD_SIGNATURE = "bad_signature"
EXPIRED = "expired"


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json_segment(value: dict[str, Any]) -> str:
    return b64url_encode(json.dumps(value, separators=(",", ":")).encode())


def unsigned_jwt(claims: dict[str, Any]) -> str:
    """An ``alg: none`` JWT, the shape MSAL expects for ``id_token``."""
    return f"{_json_segment({'typ': 'JWT', 'alg': 'none'})}.{_json_segment(claims)}."


@dataclass(frozen=True)
class Principal:
    """Who an access token speaks for, as the resource servers see it."""

    claims: dict[str, Any]

    @property
    def audience(self) -> str:
        return self.claims.get("aud", "")

    @property
    def is_app_only(self) -> bool:
        # Entra marks app-only tokens by the absence of `scp` (and `idtyp: app`).
        return "scp" not in self.claims

    @property
    def scopes(self) -> frozenset[str]:
        return frozenset(self.claims.get("scp", "").split())

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(self.claims.get("roles", []))

    @property
    def upn(self) -> str | None:
        return self.claims.get("upn")

    @property
    def object_id(self) -> str:
        return self.claims.get("oid", "")


class TokenSigner:
    """Mints and verifies the sandbox's HS256 access tokens."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)
        self._header = _json_segment({"typ": "JWT", "alg": "HS256", "kid": "sandbox"})

    def mint(self, claims: dict[str, Any]) -> str:
        signing_input = f"{self._header}.{_json_segment(claims)}"
        return f"{signing_input}.{self._sign(signing_input)}"

    def verify(self, token: str | None, now: float | None = None) -> Principal:
        if not token:
            raise TokenError(MISSING)
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError(MALFORMED)
        header, payload, signature = parts
        try:
            claims = json.loads(b64url_decode(payload))
        except ValueError as exc:
            raise TokenError(MALFORMED) from exc
        if not isinstance(claims, dict):
            raise TokenError(MALFORMED)
        if not hmac.compare_digest(signature, self._sign(f"{header}.{payload}")):
            raise TokenError(BAD_SIGNATURE)
        if claims.get("exp", 0) <= (time.time() if now is None else now):
            raise TokenError(EXPIRED)
        return Principal(claims)

    def mac(self, text: str) -> str:
        """A hex MAC under the same per-process key, for other opaque tokens (form digests)."""
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest().upper()

    def _sign(self, signing_input: str) -> str:
        return b64url_encode(hmac.new(self._key, signing_input.encode(), hashlib.sha256).digest())


def bearer_token(authorization_header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, or None."""
    if not authorization_header:
        return None
    scheme, _, token = authorization_header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None
