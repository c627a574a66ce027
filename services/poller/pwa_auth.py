"""How requests to the PWA site authenticate, as ``httpx.Auth`` flows.

- ``BearerAuth`` (``oauth``, ``sharepoint_online``): a delegated Entra token from a
  ``TokenSource``; a 401 makes the source forget the token and the request is sent once more
  with a fresh one.
- ``WindowsAuth`` (``sharepoint_onprem``): Windows authentication as IIS offers it to Project
  Server: ``Negotiate`` (SPNEGO: Kerberos where the host has a ticket or keytab and GSSAPI is
  installed, else NTLM inside it) when offered, else ``NTLM``. The messages and their
  cryptography are pyspnego's (a maintained library, also behind requests-ntlm); this class
  only carries them in headers. Every sign-in carries the TLS channel binding (RFC 5929
  ``tls-server-end-point``), so IIS with Extended Protection accepts it. Windows sign-ins
  authenticate a *connection*: a request is sent as it is first, and only a 401 starts the
  handshake on that connection, so requests on an authenticated keep-alive connection cost one
  round trip.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Generator
from urllib.parse import urlsplit

import httpx
import spnego
import spnego.exceptions
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from spnego.channel_bindings import GssChannelBindings

from common.errors import AuthenticationError
from common.identity import TokenSource

#: The schemes we speak, in the order we prefer them.
WINDOWS_SCHEMES = ("Negotiate", "NTLM")
#: Kerberos takes one leg, NTLM three (two of them ours); more means the server is looping.
MAX_LEGS = 4


class BearerAuth(httpx.Auth):
    def __init__(self, tokens: TokenSource) -> None:
        self._tokens = tokens

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._tokens.token()}"
        response = yield request
        if response.status_code == 401:
            self._tokens.invalidate()
            request.headers["Authorization"] = f"Bearer {self._tokens.token()}"
            yield request


class WindowsAuth(httpx.Auth):
    requires_response_body = True

    def __init__(self, username: str | None, password: str | None) -> None:
        # DOMAIN\\user (down-level logon name) or user@domain (UPN); pyspnego accepts both.
        # Neither: the host's Kerberos credentials (ticket cache or keytab).
        self._username = username
        self._password = password

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        response = yield request
        if response.status_code != 401:
            return
        offers = _offers(response)
        schemes = [s for s in WINDOWS_SCHEMES if s.upper() in offers]
        if not schemes:
            raise AuthenticationError(
                "Project Server offers no Windows sign-in pwasync speaks (it offers: "
                f"{', '.join(sorted(offers)) or 'nothing'}); enable Windows authentication "
                "(Negotiate or NTLM) on the web application zone pwasync uses"
            )
        bindings = channel_bindings(response)
        for scheme in schemes:
            outcome = yield from self._handshake(request, scheme, bindings)
            if outcome == "done":
                return
            if outcome == "refused":
                break  # the credentials were judged: another scheme would only try them again
            # "not understood": the server took none of our first token (a Kerberos-only
            # Negotiate, say); the next scheme it offers is tried, without any logon having failed
        raise AuthenticationError(
            f"Project Server refused the Windows sign-in ({scheme}) of {self._account}: wrong "
            "user name or password, an expired password, or a locked or disabled account"
        )

    def _handshake(
        self, request: httpx.Request, scheme: str, bindings: GssChannelBindings | None
    ) -> Generator[httpx.Request, httpx.Response, str]:
        """One scheme's legs: "done", "refused", or "not understood" (the first leg answered
        without a challenge)."""
        context = spnego.client(
            self._username,
            self._password,
            hostname=urlsplit(str(request.url)).hostname or "unspecified",
            service="HTTP",
            protocol=scheme.lower(),
            channel_bindings=bindings,
        )
        token = self._step(context, None, scheme)
        for leg in range(MAX_LEGS):
            request.headers["Authorization"] = f"{scheme} {_b64(token)}"
            response = yield request
            if response.status_code != 401:
                return "done"
            challenge = _offers(response).get(scheme.upper())
            if not challenge and leg == 0 and not context.complete:
                return "not understood"
            if not challenge or context.complete:
                return "refused"
            token = self._step(context, base64.b64decode(challenge), scheme)
        return "refused"

    @property
    def _account(self) -> str:
        return self._username or "the host's Kerberos identity"

    def _step(self, context: spnego.ContextProxy, token: bytes | None, scheme: str) -> bytes:
        try:
            return context.step(token) or b""
        except spnego.exceptions.SpnegoError as exc:
            raise AuthenticationError(
                f"Project Server: the Windows sign-in ({scheme}) of {self._account} could not "
                f"go on ({exc.message})"
            ) from None


def channel_bindings(response: httpx.Response) -> GssChannelBindings | None:
    """RFC 5929 ``tls-server-end-point`` of the connection the response came on: the hash of
    the server's certificate (SHA-256, or the certificate's own signature hash when stronger).
    None over plain http (a lab), where there is nothing to bind to."""
    stream = response.extensions.get("network_stream")
    ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
    der = ssl_object.getpeercert(True) if ssl_object is not None else None
    if not der:
        return None
    return GssChannelBindings(application_data=b"tls-server-end-point:" + _endpoint_hash(der))


def _endpoint_hash(der: bytes) -> bytes:
    try:
        algorithm = x509.load_der_x509_certificate(der).signature_hash_algorithm
    except (ValueError, x509.UnsupportedAlgorithm):
        algorithm = None
    name = algorithm.name if isinstance(algorithm, hashes.SHA384 | hashes.SHA512) else "sha256"
    return hashlib.new(name, der).digest()


def _b64(token: bytes | None) -> str:
    return base64.b64encode(token or b"").decode("ascii")


def _offers(response: httpx.Response) -> dict[str, str]:
    """The schemes of the WWW-Authenticate headers (upper case) with their tokens ("" for a
    bare offer)."""
    offers: dict[str, str] = {}
    for header in response.headers.get_list("www-authenticate"):
        for offer in header.split(","):
            scheme, _, token = offer.strip().partition(" ")
            if scheme and "=" not in scheme:
                offers.setdefault(scheme.upper(), token.strip())
    return offers
