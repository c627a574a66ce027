"""Windows authentication on the PWA endpoints as IIS does it: the 401 offers, the handshake
legs over HTTP, and the user an authenticated connection stands for.

``pwa_auth_schemes`` is the zone's list of providers, in order: each one is a
``WWW-Authenticate`` header of its own on a 401 (``Negotiate``, ``NTLM``, or
``Basic realm="127.0.0.1"``, which the sandbox offers but never accepts). A scheme the list
does not name is refused like a wrong password. The cryptography is in ``ntlm.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from sandbox.context import Sandbox
from sandbox.state import User
from sandbox.tokens import Principal
from sandbox.transport_faults import connection_of

WINDOWS_SCHEMES = ("Negotiate", "NTLM")  # what the acceptor speaks


@dataclass(frozen=True)
class WindowsLogon:
    principal: Principal
    user: User
    # Negotiate's last leg ("Negotiate <token>"): IIS sends it on the answer to the request.
    final_challenge: str | None = None


def offers(sandbox: Sandbox) -> list[str]:
    """The zone's ``WWW-Authenticate`` values, one header each."""
    host = urlsplit(sandbox.origin).hostname
    return [
        f'Basic realm="{host}"' if scheme == "Basic" else scheme
        for scheme in sandbox.config.pwa_auth_schemes
    ]


def unauthorized(
    sandbox: Sandbox, text: str = "401 UNAUTHORIZED", challenges: list[str] | None = None
) -> Response:
    """A 401 with one ``WWW-Authenticate`` header per challenge (the zone's offers by default)."""
    response = PlainTextResponse(text, status_code=401)
    for challenge in offers(sandbox) if challenges is None else challenges:
        response.raw_headers.append((b"www-authenticate", challenge.encode("latin-1")))
    return response


def windows_logon(sandbox: Sandbox, request: Request) -> WindowsLogon | Response | None:
    """A handshake leg answers 401 with the challenge, or refuses; an authenticated connection
    yields its user with full SharePoint scopes (Windows authentication carries the user's own
    PWA permissions, not an app's delegated ones). None when the request carries another
    scheme, or no header on a connection that has not logged on."""
    header = request.headers.get("authorization", "")
    name, _, token = header.partition(" ")
    scheme = next((s for s in WINDOWS_SCHEMES if s.lower() == name.lower()), None)
    connection = connection_of(request)
    final = None
    if scheme is not None:
        if scheme not in sandbox.config.pwa_auth_schemes:
            return unauthorized(sandbox)
        step = sandbox.ntlm.step(
            sandbox.tenant, connection, scheme, token.strip(), sandbox.channel_bindings
        )
        if step.challenge is not None:
            return unauthorized(sandbox, challenges=[f"{scheme} {step.challenge}".strip()])
        if step.refused or step.upn is None:
            return unauthorized(sandbox, "401 UNAUTHORIZED: the logon was denied")
        upn = step.upn
        final = f"{scheme} {step.final}" if step.final else None
    elif not header:
        upn = sandbox.ntlm.user_of(connection)
        if upn is None:
            return None
    else:
        return None
    user = sandbox.tenant.user(upn)
    if user is None or not user.can_log_on:  # locked or expired since the connection logged on
        return unauthorized(sandbox)
    claims = {
        "aud": sandbox.origin,
        "upn": user.upn,
        "oid": user.id,
        "scp": "ProjectWebApp.FullControl",
        "idtyp": "user",
    }
    return WindowsLogon(Principal(claims), user, final)
