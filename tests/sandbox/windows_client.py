"""A Windows-authentication client for the sandbox's PWA endpoints (tests only): Negotiate or
NTLM through pyspnego, with or without Extended Protection's channel bindings."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Generator
from typing import Literal

import httpx
import spnego
from spnego.channel_bindings import GssChannelBindings

Bindings = Literal["tls", "none", "wrong"]
SERVICE_USER = "CONTOSO\\svc-pwasync"


def server_certificate(response: httpx.Response) -> bytes:
    """The DER certificate the server presented on this response's connection."""
    ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
    return ssl_object.getpeercert(True)


def end_point_bindings(certificate: bytes) -> GssChannelBindings:
    """RFC 5929 tls-server-end-point (the sandbox's certificate is signed with SHA-256)."""
    digest = hashlib.sha256(certificate).digest()
    return GssChannelBindings(application_data=b"tls-server-end-point:" + digest)


def challenge(response: httpx.Response, scheme: str) -> str | None:
    """The token ``scheme`` offers in the response ("" for a bare offer), or None."""
    for header in response.headers.get_list("www-authenticate"):
        name, _, token = header.partition(" ")
        if name.lower() == scheme.lower():
            return token.strip()
    return None


class WindowsAuth(httpx.Auth):
    """Sends the request; on a 401 that offers ``scheme``, logs on with ``protocol`` tokens
    ("negotiate" for SPNEGO, "ntlm" for raw NTLM, which Windows also sends as Negotiate)."""

    def __init__(
        self,
        password: str,
        username: str = SERVICE_USER,
        scheme: str = "Negotiate",
        protocol: str | None = None,
        bindings: Bindings = "tls",
    ) -> None:
        self.username, self.password = username, password
        self.scheme, self.protocol = scheme, protocol or scheme.lower()
        self.bindings = bindings
        self.legs: list[int] = []  # the status of every answer the flow saw
        self.final: str | None = None  # Negotiate's last token, on the authenticated answer

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        response = yield request
        self.legs.append(response.status_code)
        if response.status_code != 401 or challenge(response, self.scheme) is None:
            return
        context = spnego.client(
            self.username,
            self.password,
            hostname="127.0.0.1",
            service="HTTP",
            protocol=self.protocol,
            channel_bindings=self._bindings(server_certificate(response)),
        )
        request.headers["Authorization"] = f"{self.scheme} {_b64(context.step())}"
        response = yield request
        self.legs.append(response.status_code)
        token = challenge(response, self.scheme)
        if response.status_code != 401 or not token:
            return
        answer = context.step(base64.b64decode(token))
        request.headers["Authorization"] = f"{self.scheme} {_b64(answer)}"
        response = yield request
        self.legs.append(response.status_code)
        self.final = challenge(response, self.scheme) if response.status_code == 200 else None

    def _bindings(self, certificate: bytes) -> GssChannelBindings | None:
        if self.bindings == "none":
            return None
        if self.bindings == "wrong":  # what a relay with its own certificate would hash
            return end_point_bindings(certificate[::-1])
        return end_point_bindings(certificate)


def _b64(token: bytes | None) -> str:
    return base64.b64encode(token or b"").decode("ascii")
