"""Certificate credentials: the ``client_assertion`` JWT a confidential client signs instead of
sending a secret (``private_key_jwt``), checked as Entra checks it.

Rules (learn.microsoft.com/entra/identity-platform/certificate-credentials, and what MSAL
Python sends): header ``alg`` RS256 or PS256 with ``x5t`` (base64url SHA-1 of the certificate's
DER) or ``x5t#S256`` (SHA-256) naming a certificate registered for the app; claims ``aud`` the
token endpoint, ``iss`` = ``sub`` = the client id, ``exp`` in the future, ``nbf`` (optional:
MSAL sends none) in the past, ``jti`` present. Each refusal carries the AADSTS code Entra uses
for it; a ``jti`` seen before is accepted, as MSAL reuses one assertion for ten minutes.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = ("RS256", "PS256")
#: Entra's tolerance for the clocks of the client and the service (a few minutes) [U: 5].
CLOCK_SKEW_S = 300
CERTIFICATE_DOCS = "https://learn.microsoft.com/entra/identity-platform/certificate-credentials"


class AssertionRefused(Exception):
    """The assertion is not accepted; ``code`` is the AADSTS number."""

    def __init__(self, code: int, description: str) -> None:
        super().__init__(description)
        self.code, self.description = code, description


@dataclass(frozen=True)
class RegisteredCertificate:
    """A certificate of an app registration (its public part, as uploaded in the portal)."""

    certificate: x509.Certificate

    @classmethod
    def from_pem(cls, pem: str | bytes) -> RegisteredCertificate:
        data = pem.encode() if isinstance(pem, str) else pem
        return cls(x509.load_pem_x509_certificate(data))

    @property
    def sha1(self) -> bytes:
        return hashlib.sha1(self._der).digest()  # noqa: S324 - x5t is SHA-1 by definition

    @property
    def sha256(self) -> bytes:
        return hashlib.sha256(self._der).digest()

    @property
    def thumbprint(self) -> str:
        """The SHA-1 thumbprint in hex, as the portal shows it and Entra's errors name it."""
        return self.sha1.hex().upper()

    @property
    def _der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def window(self) -> str:
        start = self.certificate.not_valid_before_utc
        end = self.certificate.not_valid_after_utc
        return f"Start={start:%m/%d/%Y %H:%M:%S}, End={end:%m/%d/%Y %H:%M:%S}"

    def summary(self) -> dict[str, str]:
        return {
            "thumbprint": self.thumbprint,
            "x5t": _b64url(self.sha1),
            "x5t#S256": _b64url(self.sha256),
            "not_before": self.certificate.not_valid_before_utc.isoformat(),
            "not_after": self.certificate.not_valid_after_utc.isoformat(),
        }


def verify_client_assertion(
    assertion: str,
    client_id: str,
    certificates: list[RegisteredCertificate],
    audiences: set[str],
    now: float,
) -> RegisteredCertificate:
    """The certificate that signed ``assertion`` for ``client_id``, or AssertionRefused."""
    header = _header(assertion)
    if header.get("alg") not in ALGORITHMS:
        raise AssertionRefused(
            50027,
            f"JWT token is invalid or malformed. The algorithm '{header.get('alg')}' is not "
            f"supported for client assertions; use {' or '.join(ALGORITHMS)}.",
        )
    certificate, used = _certificate(header, certificates, client_id)
    try:
        claims = jwt.decode(
            assertion,
            certificate.certificate.public_key(),  # type: ignore[arg-type]
            algorithms=[header["alg"]],
            options={"verify_exp": False, "verify_nbf": False, "verify_aud": False,
                     "verify_iat": False, "verify_iss": False},
        )  # fmt: skip
    except jwt.InvalidSignatureError:
        raise AssertionRefused(
            700027,
            "Client assertion contains an invalid signature. [Reason - The provided signature "
            "value did not match the expected signature value., Thumbprint of key used by "
            f"client: '{used}', Found key '{certificate.window()}']",
        ) from None
    except jwt.PyJWTError as error:
        raise AssertionRefused(50027, f"JWT token is invalid or malformed. {error}.") from None
    _check_claims(claims, client_id, audiences, now)
    _check_certificate_dates(certificate, used, now)
    return certificate


def _header(assertion: str) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError:
        raise AssertionRefused(50027, "JWT token is invalid or malformed.") from None
    return header


def _certificate(
    header: dict[str, Any], certificates: list[RegisteredCertificate], client_id: str
) -> tuple[RegisteredCertificate, str]:
    by_sha256, by_sha1 = header.get("x5t#S256"), header.get("x5t")
    if not by_sha256 and not by_sha1:
        raise AssertionRefused(
            50027, "Invalid JWT token. No certificate thumbprint specified in token header."
        )
    wanted = _thumbprint_bytes(by_sha256 or by_sha1)
    for certificate in certificates:
        if wanted == (certificate.sha256 if by_sha256 else certificate.sha1):
            return certificate, wanted.hex().upper()
    raise AssertionRefused(
        700027,
        "Client assertion contains an invalid signature. [Reason - The key was not found., "
        f"Thumbprint of key used by client: '{wanted.hex().upper()}', Please visit the Azure "
        "Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id "
        f"'{client_id}'.]",
    )


def _thumbprint_bytes(value: Any) -> bytes:
    try:
        return base64.urlsafe_b64decode(str(value) + "=" * (-len(str(value)) % 4))
    except ValueError:
        raise AssertionRefused(
            50027, "Invalid JWT token. The certificate thumbprint in the header is not base64url."
        ) from None


def _check_claims(claims: dict[str, Any], client_id: str, audiences: set[str], now: float) -> None:
    for claim in ("aud", "iss", "sub", "exp", "jti"):
        if claims.get(claim) in (None, ""):
            raise AssertionRefused(
                50027,
                f"Invalid JWT token. The token has no '{claim}' claim. See {CERTIFICATE_DOCS}",
            )
    if str(claims["iss"]).lower() != client_id or str(claims["sub"]).lower() != client_id:
        raise AssertionRefused(
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter. "
            f"Review the documentation at {CERTIFICATE_DOCS} .",
        )
    audience = claims["aud"]
    if not isinstance(audience, str) or audience.rstrip("/").lower() not in audiences:
        raise AssertionRefused(
            50027,
            f"Invalid JWT token. The audience '{audience}' of the client assertion is not the "
            "token endpoint it was sent to.",
        )
    expires, not_before = _number(claims["exp"], "exp"), _number(claims.get("nbf", 0), "nbf")
    if expires + CLOCK_SKEW_S <= now or not_before - CLOCK_SKEW_S > now:
        raise AssertionRefused(
            700024,
            f"Client assertion is not within its valid time range. Current time: {_iso(now)}, "
            f"assertion valid from {_iso(not_before)}, expiry time of assertion "
            f"{_iso(expires)}. Review the documentation at {CERTIFICATE_DOCS} .",
        )


def _check_certificate_dates(certificate: RegisteredCertificate, used: str, now: float) -> None:
    moment = datetime.fromtimestamp(now, UTC)
    cert = certificate.certificate
    if not cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc:
        raise AssertionRefused(
            700027,
            "Client assertion contains an invalid signature. [Reason - The key used is expired., "
            f"Thumbprint of key used by client: '{used}', Found key '{certificate.window()}']",
        )


def _number(value: Any, claim: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AssertionRefused(
            50027, f"Invalid JWT token. The '{claim}' claim is not a number of seconds."
        )
    return float(value)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
