"""Project Server's server events: ``Events``, ``EventHandlers`` and the calls a publish makes.

Registered remote handlers are kept per sandbox (a reset forgets them, as it forgets events).
Every publish calls each handler of Project/Published asynchronously, after the publish has
answered, with a timeout and no retry, in one concrete form of the call the reference infers:
SOAP 1.1, WCF's default namespace and action, the arguments' members named by .NET backing
fields (``_projectGuid``). The receiver's parser is tested on the other plausible forms.

Managing handlers needs the global permission "Manage Server Events"; the Published event's
numeric id is deliberately not 0 or 1, so a client that guesses instead of looking it up fails.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from typing import Any
from xml.sax.saxutils import escape

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.odata_format import ODataError
from sandbox.pwa import WRITE_SCOPES, PwaCall, pwa_endpoint
from sandbox.server_event_store import RegisteredHandler, ServerEvents
from sandbox.sharepoint_rest import INVALID_QUERY, NOT_FOUND, collection, entity, single

MANAGE_SERVER_EVENTS = "manage_server_events"  # the global permission "Manage Server Events"
CALL_TIMEOUT_S = 10.0
SOAP_ACTION = "http://tempuri.org/IProjectEventReceiverRemote/OnPublishedRemote"
#: A few of the server's events (PSEventID runs 0..227), Project/Published among them.
EVENTS = [
    (15, "Created", "Project"),
    (44, "Publishing", "Project"),
    (45, "Published", "Project"),
    (46, "Saved", "Project"),
    (47, "Deleted", "Project"),
    (60, "Changed", "CustomField"),
    (88, "Updated", "Resource"),
    (150, "Submitted", "Timesheet"),
]
PUBLISHED_EVENT_ID = 45
_HANDLER_PATH = re.compile(r"^EventHandlers\((?:guid)?'(?P<id>[0-9A-Fa-f-]{36})'\)$")


# --- the REST side --------------------------------------------------------------------------


def handles(path: str) -> bool:
    return path in ("Events", "EventHandlers", "EventHandlers/Add") or bool(
        _HANDLER_PATH.match(path)
    )


async def route(call: PwaCall, path: str) -> Response:
    call.require_permission(MANAGE_SERVER_EVENTS)
    store: ServerEvents = call.sandbox.server_events
    method = _method(call.request)
    if path == "Events" and method == "GET":
        return collection(call, "PS.Events", [_event(call, *e) for e in EVENTS])
    if path == "EventHandlers" and method == "GET":
        expand = "Event" in call.request.query_params.get("$expand", "")
        rows = [_handler(call, h, expand) for h in store.handlers.values()]
        return collection(call, "PS.EventHandlers", rows)
    if path == "EventHandlers/Add" and method == "POST":
        return await _add(call, store)
    match = _HANDLER_PATH.match(path)
    if match:
        handler = store.handlers.get(match["id"].lower())
        if handler is None:
            raise ODataError(404, "The event handler does not exist.", NOT_FOUND)
        if method == "DELETE":
            _check_write(call)
            del store.handlers[handler.id]
            return Response(status_code=200)
        if method == "GET":
            return single(call, _handler(call, handler, expand=False))
    raise ODataError(404, f"Cannot find resource for the request {path}.", NOT_FOUND)


def _method(request: Request) -> str:
    return request.headers.get("x-http-method", request.method).upper()


def _check_write(call: PwaCall) -> None:
    from sandbox.projectserver import check_digest  # the same form digest as every write

    call.require_scope(WRITE_SCOPES)
    check_digest(call)


async def _add(call: PwaCall, store: ServerEvents) -> Response:
    _check_write(call)
    try:
        body = json.loads(await call.request.body() or b"{}")
        parameters = {k.lower(): v for k, v in body["parameters"].items() if k != "__metadata"}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ODataError(
            400, "The parameter parameters does not exist in method Add.", INVALID_QUERY
        ) from error
    event_id = parameters.get("eventid")
    if event_id not in {e[0] for e in EVENTS}:
        raise ODataError(400, "EventHandlerInvalidEventId", INVALID_QUERY)
    if parameters.get("assemblyname") or parameters.get("classname"):
        raise ODataError(400, "the sandbox runs remote handlers only", INVALID_QUERY)
    url = str(parameters.get("endpointurl") or "")
    if not url.startswith(("http://", "https://")):
        raise ODataError(400, "EventHandlerInvalidEndpointUrl", INVALID_QUERY)
    handler_id = str(uuid.UUID(str(parameters.get("id") or uuid.uuid4()))).lower()
    if handler_id in store.handlers:
        raise ODataError(400, "EventHandlerUidAlreadyExists", INVALID_QUERY)
    handler = RegisteredHandler(
        id=handler_id,
        name=str(parameters.get("name") or ""),
        event_id=int(event_id),
        endpoint_url=url,
        order=int(parameters.get("order") or 1),
        description=str(parameters.get("description") or ""),
    )
    store.handlers[handler_id] = handler
    return single(call, _handler(call, handler, expand=False))


def _event(call: PwaCall, event_id: int, name: str, source: str) -> dict[str, Any]:
    props = {"Id": event_id, "EventName": name, "SourceName": source}
    return entity(call, "PS.Event", f"ProjectServer/Events({event_id})", props, {})


def _handler(call: PwaCall, handler: RegisteredHandler, expand: bool) -> dict[str, Any]:
    props = {
        "Id": handler.id,
        "Name": handler.name,
        "EndpointUrl": handler.endpoint_url,
        "Order": handler.order,
        "Description": handler.description,
        "AssemblyName": "",
        "ClassName": "",
    }
    event = next(e for e in EVENTS if e[0] == handler.event_id)
    navigation = {"Event": _event(call, *event) if expand else None}
    link = f"ProjectServer/EventHandlers('{handler.id}')"
    return entity(call, "PS.EventHandler", link, props, navigation)


async def _site_id(call: PwaCall) -> Response:
    return single(call, {"Id": site_id(call.sandbox)})


def site_id(sandbox: Any) -> str:
    """The PWA site collection's id: stable for one sandbox origin."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, sandbox.pwa_site_url))


def routes(site_path: str) -> list[Route]:
    return [
        Route(
            f"{site_path}/_api/site/id",
            pwa_endpoint(_site_id, lambda _request: "site/id"),
            methods=["GET"],
        )
    ]


# --- the calls a publish makes ----------------------------------------------------------------


def announce_published(sandbox: Any, projects: list[Any]) -> None:
    """Call every Project/Published handler for each project, in the background."""
    store: ServerEvents = sandbox.server_events
    handlers = sorted(
        (h for h in store.handlers.values() if h.event_id == PUBLISHED_EVENT_ID),
        key=lambda h: h.order,
    )
    for project in projects:
        for handler in handlers:
            body = published_call(sandbox, project, handler.id)
            task = asyncio.get_running_loop().create_task(_call(store, handler, project, body))
            store._tasks.add(task)
            task.add_done_callback(store._tasks.discard)


def published_call(sandbox: Any, project: Any, handler_id: str) -> bytes:
    """The SOAP 1.1 request of ``OnPublishedRemote`` for one project."""
    name = project.published.name if project.published else project.draft.name
    wss_url = f"{sandbox.pwa_site_url}/{name}".replace(" ", "%20")
    context = (
        '<contextInfo xmlns:a="http://schemas.datacontract.org/2004/07/'
        'Microsoft.Office.Project.Server.Library" '
        'xmlns:i="http://www.w3.org/2001/XMLSchema-instance">'
        "<a:_isWindowsUser>true</a:_isWindowsUser>"
        "<a:_lcid>1033</a:_lcid>"
        f"<a:_siteGuid>{site_id(sandbox)}</a:_siteGuid>"
        f"<a:_trackingGuid>{uuid.uuid4()}</a:_trackingGuid>"
        "<a:_userGuid>c22369c3-799d-5da9-9433-2aaafb702a77</a:_userGuid>"
        "<a:_userName>CONTOSO\\svc-pwasync</a:_userName>"
        "</contextInfo>"
    )
    arguments = (
        '<e xmlns:a="http://schemas.datacontract.org/2004/07/'
        'Microsoft.Office.Project.Server.Events" '
        'xmlns:i="http://www.w3.org/2001/XMLSchema-instance">'
        "<a:_fullPublish>true</a:_fullPublish>"
        f"<a:_jobGuid>{uuid.uuid4()}</a:_jobGuid>"
        f"<a:_projectGuid>{project.id}</a:_projectGuid>"
        f"<a:_projectName>{escape(name)}</a:_projectName>"
        f"<a:_wssUrl>{escape(wss_url)}</a:_wssUrl>"
        "</e>"
    )
    return (
        '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
        '<OnPublishedRemote xmlns="http://tempuri.org/">'
        f"{context}<eventHandlerUid>{handler_id}</eventHandlerUid>{arguments}"
        "</OnPublishedRemote></s:Body></s:Envelope>"
    ).encode()


async def _call(store: ServerEvents, handler: RegisteredHandler, project: Any, body: bytes):
    started = time.time()
    record: dict[str, Any] = {"handler_id": handler.id, "project_id": project.id, "at": started}
    headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{SOAP_ACTION}"'}
    try:
        async with httpx.AsyncClient(timeout=CALL_TIMEOUT_S) as client:
            response = await client.post(handler.endpoint_url, content=body, headers=headers)
        record["status"] = response.status_code
    except httpx.HTTPError as error:  # no retry: Project Server logs the failure and goes on
        record["error"] = error.__class__.__name__
    record["seconds"] = round(time.time() - started, 3)
    store.calls.append(record)


# --- the control surface ------------------------------------------------------------------------


async def _control_calls(request: Request) -> Response:
    store: ServerEvents = request.app.state.sandbox.server_events
    return JSONResponse(
        {
            "handlers": [h.__dict__ for h in store.handlers.values()],
            "calls": list(store.calls),
        }
    )


control_routes = [Route("/_sandbox/server-events", _control_calls, methods=["GET"])]
