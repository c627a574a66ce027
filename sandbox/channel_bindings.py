"""TLS channel bindings for Extended Protection (RFC 5929 ``tls-server-end-point``).

IIS with Extended Protection refuses a Windows logon over TLS unless the client's NTLM or
Kerberos answer carries a hash of the server certificate it saw: a relay that terminates TLS
with its own certificate cannot forward the logon.  The hash is SHA-256 of the DER certificate,
or the certificate's own signature hash when that is stronger (SHA-384, SHA-512).
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from spnego.channel_bindings import GssChannelBindings

_STRONGER = {hashes.SHA384.name: "sha384", hashes.SHA512.name: "sha512"}


def certificate_hash(certificate_der: bytes) -> bytes:
    certificate = x509.load_der_x509_certificate(certificate_der)
    algorithm = certificate.signature_hash_algorithm
    name = _STRONGER.get(algorithm.name if algorithm else "", "sha256")  # MD5, SHA-1 -> SHA-256
    return hashlib.new(name, certificate_der).digest()


def server_end_point(certificate_der: bytes) -> GssChannelBindings:
    """The bindings a client that saw this certificate sends (and the acceptor expects)."""
    return GssChannelBindings(
        application_data=b"tls-server-end-point:" + certificate_hash(certificate_der)
    )
