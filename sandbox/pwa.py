"""What every PWA (SharePoint) endpoint shares: format negotiation, authentication (Windows
through ``windows_auth``; bearer tokens in the online edition), permission checks, injected
latency and faults (throttling, unavailability, a failing next page, and the transport faults
of ``transport_faults``), request statistics and, on premises, the health score header.

SharePoint accepts only delegated tokens for Project Online: an app-only token is refused
with 401, as Microsoft documents ("many Project Server APIs require a user context").  Token
problems are answered SharePoint's way, with a ``WWW-Authenticate: Bearer realm=…`` challenge
and an ``error_description`` body; authorisation problems with an OData error.  The se edition
(Project Server Subscription Edition) takes Windows authentication only.
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
from sandbox.windows_auth import offers, unauthorized, windows_logon

# Delegated permissions of the SharePoint resource that the PWA endpoints honour.
READ_SCOPES = frozenset({"ProjectWebAppReporting.Read", "ProjectWebApp.FullControl"})
WRITE_SCOPES = frozenset({"ProjectWebApp.FullControl", "Project.Write"})
# The ProjectServer REST reads (ProjectWebAppReporting.Read covers only ProjectData).
REST_READ_SCOPES = frozenset({"ProjectWebApp.Read", "ProjectWebApp.FullControl"})
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

    def require_permission(self, permission: str) -> None:
        if permission not in self.user.pwa_permissions:
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
        logon = windows_logon(sandbox, request)
        if isinstance(logon, Response):
            return logon  # a handshake leg or a refusal: IIS answers it, SharePoint never sees it
        if logon is not None:
            principal, user = logon.principal, logon.user
        elif sandbox.on_premises:
            return unauthorized(sandbox)  # Windows authentication only: no bearer tokens
        else:
            principal, user = authenticate(sandbox, request)
        if sandbox.config.pwa_latency_ms:
            await asyncio.sleep(sandbox.config.pwa_latency_ms / 1000)
        response = await handler(PwaCall(request, sandbox, fmt, principal, user))
        if logon is not None and logon.final_challenge:
            response.raw_headers.append((b"www-authenticate", logon.final_challenge.encode()))
    except TokenRejected as rejected:
        response = JSONResponse({"error_description": rejected.description}, status_code=401)
        # Project Online's challenge first, then the Windows providers of the zone.
        for challenge in [_challenge(sandbox), *offers(sandbox)]:
            response.raw_headers.append((b"www-authenticate", challenge.encode("latin-1")))
        return response
    except ODataError as error:
        response = error_response(error, fmt)
    if sandbox.on_premises and "x-sharepointhealthscore" not in response.headers:
        # SharePoint's HTTP throttling reports the server's load (0-10) on every answer.
        response.headers["X-SharePointHealthScore"] = "0"
    return response


def _inject_fault(sandbox: Sandbox, request: Request) -> None:
    plan = sandbox.config.faults["pwa"]
    status = plan.draw(sandbox.rng)
    if status == 429:
        sandbox.stats.fault("pwa", "throttle")
        raise ODataError(429, "The request has been throttled.", headers={"Retry-After": "2"})
    if status == 503:
        sandbox.stats.fault("pwa", "unavailable")
        headers = {"Retry-After": "5"}
        if sandbox.on_premises:  # SharePoint Server's HTTP throttling: 503 at health score 10
            headers["X-SharePointHealthScore"] = "10"
        raise ODataError(503, "The service is temporarily unavailable.", headers=headers)
    if _next_page(request) and plan.draw_page_failure(sandbox.rng):
        # A page in the middle of a paged read fails, as a SQL timeout behind the feed does.
        sandbox.stats.fault("pwa", "page_failure")
        raise ODataError(500, "An error occurred while processing this request.")


def _next_page(request: Request) -> bool:
    skip = request.query_params.get("$skip", "")
    return skip.isdigit() and int(skip) > 0


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
