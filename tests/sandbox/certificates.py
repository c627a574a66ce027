"""Self-signed app certificates, as `New-SelfSignedCertificate` or openssl make them for Entra."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class AppCertificate:
    key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    @property
    def key_pem(self) -> str:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    @property
    def certificate_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def thumbprint(self) -> str:
        """SHA-1 of the DER, in hex: what PWASYNC_*_CLIENT_CERT_THUMBPRINT holds."""
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        return hashlib.sha1(der).hexdigest().upper()  # noqa: S324 - the thumbprint is SHA-1

    def write_key(self, directory: Path, name: str = "client.pem") -> Path:
        path = directory / name
        path.write_text(self.key_pem)
        return path


def app_certificate(
    name: str = "pwasync", valid_from: datetime | None = None, days: int = 365
) -> AppCertificate:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = valid_from or datetime.now(UTC) - timedelta(hours=1)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return AppCertificate(key, certificate)
