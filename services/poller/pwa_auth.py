"""How requests to the PWA site authenticate, as ``httpx.Auth`` flows.

- ``BearerAuth`` (``oauth``, ``sharepoint_online``): a delegated Entra token from a
  ``TokenSource``; a 401 makes the source forget the token and the request is sent once more
  with a fresh one.
- ``NtlmAuth`` (``sharepoint_onprem``): Windows NTLM, as Project Server on IIS asks for it. The
  NTLM messages and their cryptography are pyspnego's (a maintained library, also behind
  requests-ntlm); this class only carries them in headers. NTLM authenticates a *connection*:
  a request is sent as it is first, and only a 401 that offers NTLM starts the three-leg
  handshake on that connection, so requests on an authenticated keep-alive connection cost one
  round trip.
"""

from __future__ import annotations

import base64
from collections.abc import Generator

import httpx
import spnego
import spnego.exceptions

from common.errors import AuthenticationError
from common.identity import TokenSource

NTLM = "NTLM"


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


class NtlmAuth(httpx.Auth):
    requires_response_body = True

    def __init__(self, username: str, password: str) -> None:
        # DOMAIN\\user (down-level logon name) or user@domain (UPN); pyspnego accepts both.
        self._username = username
        self._password = password

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        response = yield request
        if response.status_code != 401 or _ntlm_token(response) is None:
            return
        context = spnego.client(self._username, self._password, protocol="ntlm")
        request.headers["Authorization"] = f"{NTLM} {_b64(context.step())}"
        response = yield request
        challenge = _ntlm_token(response)
        if response.status_code != 401 or not challenge:
            return
        try:
            answer = context.step(base64.b64decode(challenge))
        except spnego.exceptions.SpnegoError as exc:
            raise AuthenticationError(
                f"Project Server: the NTLM challenge could not be answered ({exc.message})"
            ) from None
        request.headers["Authorization"] = f"{NTLM} {_b64(answer)}"
        response = yield request
        if response.status_code == 401:
            raise AuthenticationError(
                f"Project Server refused the Windows (NTLM) sign-in of {self._username}: wrong "
                "user name or password, or the account is locked or disabled"
            )


def _b64(token: bytes | None) -> str:
    return base64.b64encode(token or b"").decode("ascii")


def _ntlm_token(response: httpx.Response) -> str | None:
    """The NTLM part of the WWW-Authenticate headers: "" for a bare offer, the base64 token of a
    challenge, None when NTLM is not offered."""
    for header in response.headers.get_list("www-authenticate"):
        for offer in header.split(","):
            scheme, _, token = offer.strip().partition(" ")
            if scheme.upper() == NTLM:
                return token.strip()
    return None
