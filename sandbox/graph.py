"""Microsoft Graph v1.0 calendar endpoints: the request pipeline and its HTTP entry point.

Every request (or batch item) goes through: bearer authentication (401
``InvalidAuthenticationToken``), routing (400 for an unknown segment), mailbox resolution (404
``ErrorInvalidUser`` / ``MailboxNotEnabledForRESTAPI``), authorisation (403
``ErrorAccessDenied``: app-only tokens need the Calendars role, delegated tokens only reach the
signed-in user's own mailbox), injected faults, the per-mailbox throttle (429) and the injected
latency, during which the request holds its mailbox slot.  Every response carries
``request-id`` and ``client-request-id``.  Transport faults (a dropped connection, an answer
after the client gave up, a latency spike) apply to whole HTTP requests (``transport_faults``).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox import graph_batch, graph_events, planner
from sandbox.context import GRAPH_RESOURCE, Sandbox
from sandbox.graph_protocol import GraphError, GraphRequest, GraphResponse
from sandbox.state import MailboxKind, User
from sandbox.throttle import Throttled, format_retry_after
from sandbox.tokens import EXPIRED, MISSING, Principal, TokenError, bearer_token
from sandbox.transport_faults import Dropped, serve_with_faults

READ_ROLES = frozenset({"Calendars.Read", "Calendars.ReadWrite"})
WRITE_ROLES = frozenset({"Calendars.ReadWrite"})
ACCESS_DENIED = "Access is denied. Check credentials and try again."

_MAILBOX = r"^/(?:users/(?P<user>[^/]+)|(?P<me>me))(?:/calendar)?/events"
_ROUTES: list[tuple[re.Pattern[str], dict[str, Callable]]] = [
    (
        re.compile(_MAILBOX + "$"),
        {"GET": graph_events.list_events, "POST": graph_events.create_event},
    ),
    (
        re.compile(_MAILBOX + "/(?P<event>[^/]+)$"),
        {
            "GET": graph_events.get_event,
            "PATCH": graph_events.update_event,
            "DELETE": graph_events.delete_event,
        },
    ),
    (re.compile(_MAILBOX + "/(?P<event>[^/]+)/cancel$"), {"POST": graph_events.cancel_event}),
]

BatchGate = Callable[[str], AbstractAsyncContextManager]


@dataclass(frozen=True)
class _Route:
    handler: Callable
    user_segment: str | None  # None for /me
    event_id: str | None


class GraphApi:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    async def handle(
        self, request: GraphRequest, batch_gate: BatchGate | None = None
    ) -> GraphResponse:
        request_id = str(uuid.uuid4())
        client_request_id = request.headers.get("client-request-id") or request_id
        try:
            response = await self._process(request, batch_gate)
        except GraphError as error:
            response = error.response(request_id, client_request_id)
        response.headers.update({"request-id": request_id, "client-request-id": client_request_id})
        self.sandbox.stats.graph_response(request.method, response.status)
        return response

    async def _process(self, request: GraphRequest, batch_gate: BatchGate | None) -> GraphResponse:
        principal = self._authenticate(request)
        if planner.serves(request.path):  # Planner and directory reads: no mailbox
            return await planner.handle(self.sandbox, request, principal)
        route = _route(request)
        mailbox = self._mailbox(route, principal)
        _authorize(principal, mailbox, request.method)
        status = self.sandbox.config.faults["graph"].draw(self.sandbox.rng)
        if status:
            self.sandbox.stats.fault("graph", "throttle" if status == 429 else "unavailable")
            raise GraphError(
                status,
                "TooManyRequests" if status == 429 else "ServiceUnavailable",
                "Please retry again later."
                if status == 429
                else "The service is temporarily unavailable.",
                {"Retry-After": "1"},
            )
        gate = batch_gate(mailbox.id) if batch_gate else nullcontext()
        async with gate:
            return await self._run(request, route, mailbox)

    async def _run(self, request: GraphRequest, route: _Route, mailbox: User) -> GraphResponse:
        config = self.sandbox.config
        duration = (
            config.graph_latency_ms + self.sandbox.rng.uniform(0, config.graph_latency_jitter_ms)
        ) / 1000
        throttle = self.sandbox.throttle
        try:
            slot = throttle.admit(
                mailbox.id,
                duration,
                concurrency_limit=config.mailbox_concurrency_limit,
                budget=config.mailbox_budget,
                window_s=config.mailbox_budget_window_s,
            )
        except Throttled as throttled:
            raise GraphError(
                429,
                throttled.code,
                throttled.message,
                {"Retry-After": format_retry_after(throttled.retry_after_s)},
            ) from throttled
        self.sandbox.stats.graph_concurrency(
            mailbox.upn, throttle.in_flight(mailbox.id), throttle.in_flight_overall
        )
        try:
            if duration:
                await asyncio.sleep(duration)
            call = graph_events.EventCall(
                self.sandbox, request, mailbox, route.user_segment or "me", route.event_id
            )
            return route.handler(call)
        finally:
            throttle.release(slot)

    def _authenticate(self, request: GraphRequest) -> Principal:
        try:
            principal = self.sandbox.signer.verify(
                bearer_token(request.headers.get("authorization"))
            )
        except TokenError as error:
            message = {
                MISSING: "Access token is empty.",
                EXPIRED: "Lifetime validation failed, the token is expired.",
            }.get(error.reason, "Access token validation failure.")
            raise _unauthenticated(message) from error
        if principal.audience != GRAPH_RESOURCE:
            raise _unauthenticated("Access token validation failure. Invalid audience.")
        return principal

    def _mailbox(self, route: _Route, principal: Principal) -> User:
        if route.user_segment is None:
            if principal.is_app_only:
                raise GraphError(
                    400,
                    "BadRequest",
                    "/me request is only valid with delegated authentication flow.",
                )
            segment = principal.upn or ""
        else:
            segment = route.user_segment
        user = self.sandbox.tenant.user(segment)
        if user is None:
            raise GraphError(404, "ErrorInvalidUser", f"The requested user '{segment}' is invalid.")
        if user.mailbox is MailboxKind.NO:
            raise GraphError(
                404,
                "MailboxNotEnabledForRESTAPI",
                "REST API is not yet supported for this mailbox.",
            )
        if user.mailbox is MailboxKind.UNLICENSED:
            raise GraphError(
                404,
                "MailboxNotEnabledForRESTAPI",
                "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
            )
        return user


def _unauthenticated(message: str) -> GraphError:
    challenge = (
        'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/'
        'oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"'
    )
    return GraphError(401, "InvalidAuthenticationToken", message, {"WWW-Authenticate": challenge})


def _route(request: GraphRequest) -> _Route:
    for pattern, handlers in _ROUTES:
        match = pattern.match(request.path)
        if match:
            if request.method not in handlers:
                raise GraphError(
                    405,
                    "Request_BadRequest",
                    f"The HTTP method '{request.method}' is not allowed here.",
                )
            return _Route(
                handlers[request.method],
                match["user"],
                match["event"] if "event" in pattern.groupindex else None,
            )
    segment = next((s for s in request.path.split("/") if s), "")
    raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")


def _authorize(principal: Principal, mailbox: User, method: str) -> None:
    needed = READ_ROLES if method == "GET" else WRITE_ROLES
    if principal.is_app_only:
        allowed = bool(principal.roles & needed)
    else:  # delegated: only the signed-in user's own calendar, with a Calendars scope
        allowed = principal.object_id == mailbox.id and bool(principal.scopes & needed)
    if not allowed:
        raise GraphError(403, "ErrorAccessDenied", ACCESS_DENIED)


# ---------------------------------------------------------------------------------------------
# HTTP entry point


def _to_http(response: GraphResponse) -> Response:
    if response.body is None:
        return Response(status_code=response.status, headers=response.headers)
    return Response(
        json.dumps(response.body),
        status_code=response.status,
        headers=response.headers,
        media_type="application/json;odata.metadata=minimal;"
        "odata.streaming=true;IEEE754Compatible=false;charset=utf-8",
    )


async def _endpoint(request: Request) -> Response:
    api: GraphApi = request.app.state.graph
    response = await serve_with_faults(api.sandbox, "graph", request, lambda: _serve(request))
    return Dropped() if response is None else response


async def _serve(request: Request) -> Response:
    api: GraphApi = request.app.state.graph
    graph_request = GraphRequest(
        method=request.method,
        path="/" + request.path_params["path"],
        query=list(request.query_params.multi_items()),
        headers={k.lower(): v for k, v in request.headers.items()},
        body=await request.body(),
        base_url=f"{request.url.scheme}://{request.url.netloc}/v1.0",
    )
    if graph_request.path == "/$batch" and request.method == "POST":
        return _to_http(await graph_batch.run_batch(api, graph_request))
    return _to_http(await api.handle(graph_request))


routes = [Route("/v1.0/{path:path}", _endpoint, methods=["GET", "POST", "PATCH", "PUT", "DELETE"])]
