"""What every PWA (SharePoint) endpoint shares: format negotiation, bearer authentication,
permission checks, injected latency and faults (throttling, unavailability, a failing next
page, and the transport faults of ``transport_faults``), and request statistics.

SharePoint accepts only delegated tokens for Project Online: an app-only token is refused
with 401, as Microsoft documents ("many Project Server APIs require a user context").  Token
problems are answered SharePoint's way, with a ``WWW-Authenticate: Bearer realm=…`` challenge
and an ``error_description`` body; authorisation problems with an OData error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from sandbox.context import Sandbox
from sandbox.odata_format import (
    ACCESS_DENIED,
    ACCESS_DENIED_CODE,
    Format,
    NotAcceptable,
    ODataError,
    error_response,
    negotiate,
)
from sandbox.state import User
from sandbox.tokens import BAD_SIGNATURE, EXPIRED, MISSING, Principal, TokenError, bearer_token
from sandbox.transport_faults import Dropped, serve_with_faults

# Delegated permissions of the SharePoint resource that the PWA endpoints honour.
READ_SCOPES = frozenset({"ProjectWebAppReporting.Read", "ProjectWebApp.FullControl"})
WRITE_SCOPES = frozenset({"ProjectWebApp.FullControl", "Project.Write"})
SHAREPOINT_APP_ID = "00000003-0000-0ff1-ce00-000000000000"

_TOKEN_MESSAGES = {
    MISSING: "Invalid JWT token. No token was provided.",
    BAD_SIGNATURE: "Invalid issuer or signature.",
    EXPIRED: "Invalid JWT token. The token is expired.",
}


class TokenRejected(Exception):
    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


@dataclass
class PwaCall:
    request: Request
    sandbox: Sandbox
    fmt: Format
    principal: Principal
    user: User

    def require_scope(self, accepted: frozenset[str]) -> None:
        if not self.principal.scopes & accepted:
            raise ODataError(403, ACCESS_DENIED, ACCESS_DENIED_CODE)


Handler = Callable[[PwaCall], Awaitable[Response]]


def pwa_endpoint(
    handler: Handler, path_key: Callable[[Request], str], *, json_only: bool = True
) -> Callable:
    """Wrap a PWA handler with the steps every SharePoint REST call goes through.

    Handlers that answer XML (``$metadata``) pass ``json_only=False``: they accept any
    ``Accept`` header and report errors in JSON light.
    """

    async def endpoint(request: Request) -> Response:
        sandbox: Sandbox = request.app.state.sandbox
        try:
            fmt: Format | None = negotiate(request)
        except NotAcceptable:
            fmt = None
        if fmt is None and json_only:
            response: Response | None = PlainTextResponse(
                "The sandbox serves JSON only: send Accept: application/json (or "
                "application/json;odata=verbose) or $format=json.",
                status_code=406,
            )
        else:
            response = await serve_with_faults(
                sandbox,
                "pwa",
                request,
                lambda: _handle(handler, request, sandbox, fmt or Format.MINIMAL),
            )
        if response is None:
            return Dropped()
        sandbox.stats.pwa_response(path_key(request), response.status_code)
        return response

    return endpoint


async def _handle(handler: Handler, request: Request, sandbox: Sandbox, fmt: Format) -> Response:
    try:
        _inject_fault(sandbox, request)
        ntlm = _windows_authentication(sandbox, request)
        if isinstance(ntlm, Response):
            return ntlm
        principal, user = ntlm or authenticate(sandbox, request)
        if sandbox.config.pwa_latency_ms:
            await asyncio.sleep(sandbox.config.pwa_latency_ms / 1000)
        return await handler(PwaCall(request, sandbox, fmt, principal, user))
    except TokenRejected as rejected:
        response = JSONResponse(
            {"error_description": rejected.description},
            status_code=401,
            headers={"WWW-Authenticate": _challenge(sandbox)},
        )
        # Project Server on-premises offers Windows authentication too.
        response.raw_headers.append((b"www-authenticate", b"NTLM"))
        return response
    except ODataError as error:
        return error_response(error, fmt)


def _inject_fault(sandbox: Sandbox, request: Request) -> None:
    plan = sandbox.config.faults["pwa"]
    status = plan.draw(sandbox.rng)
    if status == 429:
        sandbox.stats.fault("pwa", "throttle")
        raise ODataError(429, "The request has been throttled.", headers={"Retry-After": "2"})
    if status == 503:
        sandbox.stats.fault("pwa", "unavailable")
        raise ODataError(
            503, "The service is temporarily unavailable.", headers={"Retry-After": "5"}
        )
    if _next_page(request) and plan.draw_page_failure(sandbox.rng):
        # A page in the middle of a paged read fails, as a SQL timeout behind the feed does.
        sandbox.stats.fault("pwa", "page_failure")
        raise ODataError(500, "An error occurred while processing this request.")


def _next_page(request: Request) -> bool:
    skip = request.query_params.get("$skip", "")
    return skip.isdigit() and int(skip) > 0


def _windows_authentication(
    sandbox: Sandbox, request: Request
) -> tuple[Principal, User] | Response | None:
    """NTLM (see ``ntlm.py``): a handshake leg answers 401 with the challenge, or refuses; an
    authenticated connection yields its user with full SharePoint scopes (Windows
    authentication carries the user's own PWA permissions, not an app's delegated ones). None
    when the request uses neither, so bearer authentication applies."""
    header = request.headers.get("authorization", "")
    client = request.scope.get("client") or ("?", 0)
    connection = (str(client[0]), int(client[1]))
    if header[:5].upper() == "NTLM ":
        step = sandbox.ntlm.step(sandbox.tenant, connection, header[5:].strip())
        if step.challenge is not None:
            return PlainTextResponse(
                "401 UNAUTHORIZED",
                status_code=401,
                headers={"WWW-Authenticate": f"NTLM {step.challenge}"},
            )
        if step.refused or step.upn is None:
            return PlainTextResponse(
                "401 UNAUTHORIZED: the logon was denied",
                status_code=401,
                headers={"WWW-Authenticate": "NTLM"},
            )
        upn = step.upn
    elif not header:
        upn = sandbox.ntlm.user_of(connection)
        if upn is None:
            return None
    else:
        return None
    user = sandbox.tenant.user(upn)
    if user is None or user.locked:
        return PlainTextResponse(
            "401 UNAUTHORIZED", status_code=401, headers={"WWW-Authenticate": "NTLM"}
        )
    claims = {
        "aud": sandbox.origin,
        "upn": user.upn,
        "oid": user.id,
        "scp": "ProjectWebApp.FullControl",
        "idtyp": "user",
    }
    return Principal(claims), user


def authenticate(sandbox: Sandbox, request: Request) -> tuple[Principal, User]:
    try:
        principal = sandbox.signer.verify(bearer_token(request.headers.get("authorization")))
    except TokenError as error:
        raise TokenRejected(
            _TOKEN_MESSAGES.get(error.reason, "Invalid JWT token. Token format is not valid.")
        ) from error
    if principal.audience != sandbox.origin:
        raise TokenRejected(f"Invalid audience Uri '{principal.audience}'.")
    if principal.is_app_only:
        raise ODataError(
            401,
            "Cannot call this API with an app-only principal.",
            ACCESS_DENIED_CODE,
            {"WWW-Authenticate": _challenge(sandbox)},
        )
    user = sandbox.tenant.user(principal.upn or "")
    if user is None:
        raise TokenRejected("The user in the token does not exist in this tenant.")
    return principal, user


def _challenge(sandbox: Sandbox) -> str:
    return (
        f'Bearer realm="{sandbox.tenant.id}",client_id="{SHAREPOINT_APP_ID}",'
        'trusted_issuers="00000001-0000-0000-c000-000000000000@*",'
        f'authorization_uri="{sandbox.origin}/common/oauth2/authorize"'
    )
