"""Our remote event handler on Project Server: found, added, replaced and removed by name.

The Project/Published event is looked up in ``/_api/ProjectServer/Events`` by its names (its
numeric id is not documented). Our handler is the one named ``pwasync <scenario>``: register
adds it once (a second register changes nothing, a changed URL replaces it), and list and
unregister never touch a handler someone else made. Its endpoint URL carries the receiver's
secret, so every line shown replaces that segment with ``…``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from common.errors import PermanentApiError
from services.poller.paging import paged_rows
from services.poller.pwa_http import PwaHttp

HANDLER_DESCRIPTION = "pwasync: a published project becomes a sync of that project"
_PUBLISHED_SOURCES = {"project", "projects"}
_PUBLISHED_NAMES = {"published", "onpublished"}


@dataclass(frozen=True)
class ServerEvent:
    id: int
    name: str
    source: str


@dataclass(frozen=True)
class Handler:
    id: str
    name: str
    event_id: int | None
    endpoint_url: str
    order: int | None


def handler_name(scenario: str) -> str:
    return f"pwasync {scenario}"


def endpoint_url(receiver_url: str, secret: str) -> str:
    return f"{receiver_url.rstrip('/')}/project-server/events/{secret}"


def shown_url(url: str) -> str:
    """The endpoint URL with its secret segment hidden."""
    head, separator, _secret = url.rstrip("/").rpartition("/")
    return f"{head}/…" if separator else url


def is_published_event(event: ServerEvent) -> bool:
    name = event.name.replace(" ", "").lower()
    source = event.source.replace(" ", "").lower()
    return name == "projectpublished" or (source in _PUBLISHED_SOURCES and name in _PUBLISHED_NAMES)


class ServerEvents:
    """``/_api/ProjectServer/Events`` and ``EventHandlers`` through the PWA's HTTP edge."""

    def __init__(self, http: PwaHttp) -> None:
        self._http = http
        self._api = f"{http.site_url}/_api/ProjectServer"

    def published_event(self) -> ServerEvent:
        events = [_event(row) for row in paged_rows(self._http, f"{self._api}/Events")]
        found = [event for event in events if is_published_event(event)]
        if not found:
            raise PermanentApiError(
                f"{self._http.service}: no Project Published event among its {len(events)} "
                "server events (looked for source 'Project', name 'Published')"
            )
        return found[0]

    def handlers(self) -> list[Handler]:
        """Every handler, with its event expanded (a server that refuses the expansion is read
        without it: a handler then matches any event by name)."""
        url = f"{self._api}/EventHandlers"
        try:
            rows = list(paged_rows(self._http, f"{url}?$expand=Event"))
        except PermanentApiError as exc:
            if exc.status not in (400, 404):
                raise
            rows = list(paged_rows(self._http, url))
        return [_handler(row) for row in rows]

    def add(self, *, name: str, event: ServerEvent, url: str, order: int) -> str:
        handler_id = str(uuid.uuid4())
        parameters = {
            "Name": name,
            "EventId": event.id,
            "EndpointUrl": url,
            "Order": order,
            "Description": HANDLER_DESCRIPTION,
            "Id": handler_id,
            # Both empty: a remote handler (an assembly and class would make it a local one).
            "AssemblyName": "",
            "ClassName": "",
        }
        self._write("POST", f"{self._api}/EventHandlers/Add", {"parameters": parameters})
        return handler_id

    def delete(self, handler_id: str) -> None:
        # SharePoint's REST form of DELETE, which every proxy in front of a farm lets through.
        self._write(
            "POST",
            f"{self._api}/EventHandlers('{handler_id}')",
            None,
            {"X-HTTP-Method": "DELETE", "IF-MATCH": "*"},
        )

    def site_id(self) -> uuid.UUID:
        data = self._http.get_json(f"{self._http.site_url}/_api/site/id")
        value = data.get("d", data)
        if isinstance(value, dict):
            value = value.get("Id") or value.get("value")
        try:
            return uuid.UUID(str(value))
        except ValueError:
            raise PermanentApiError(
                f"{self._http.service}: _api/site/id returned no site id"
            ) from None

    def _write(
        self, method: str, url: str, body: Any, headers: dict[str, str] | None = None
    ) -> None:
        self._http.request_json(
            method,
            url,
            json_body=body,
            headers={
                "X-RequestDigest": self._http.form_digest(),
                "Content-Type": "application/json;odata=verbose",
                **(headers or {}),
            },
        )


@dataclass(frozen=True)
class Registration:
    """What ``events register`` found and did, for its one line of output."""

    action: str  # "added", "unchanged", "replaced"
    handler_id: str
    event: ServerEvent
    url: str


def register(events: ServerEvents, *, scenario: str, url: str) -> Registration:
    """Make exactly one handler of ours call ``url`` on Project/Published."""
    event = events.published_event()
    name = handler_name(scenario)
    existing = events.handlers()
    ours = [h for h in existing if h.name == name]
    matching = [h for h in ours if h.endpoint_url == url and h.event_id in (None, event.id)]
    if matching and len(ours) == 1:
        return Registration("unchanged", matching[0].id, event, url)
    for handler in ours:
        events.delete(handler.id)
    taken = {h.order for h in existing if h.event_id == event.id and h not in ours}
    order = next(n for n in range(1, len(taken) + 2) if n not in taken)
    handler_id = events.add(name=name, event=event, url=url, order=order)
    return Registration("replaced" if ours else "added", handler_id, event, url)


def ours(events: ServerEvents, scenario: str) -> list[Handler]:
    return [h for h in events.handlers() if h.name == handler_name(scenario)]


def unregister(events: ServerEvents, scenario: str) -> list[Handler]:
    removed = ours(events, scenario)
    for handler in removed:
        events.delete(handler.id)
    return removed


# --- rows ----------------------------------------------------------------------------------------


def _event(row: dict[str, Any]) -> ServerEvent:
    return ServerEvent(
        id=int(row.get("Id", row.get("ID", -1))),
        name=str(row.get("EventName") or row.get("Name") or ""),
        source=str(row.get("SourceName") or ""),
    )


def _handler(row: dict[str, Any]) -> Handler:
    event = row.get("Event")
    event_id = row.get("EventId")
    if event_id is None and isinstance(event, dict) and "__deferred" not in event:
        event_id = event.get("Id")
    order = row.get("Order")
    return Handler(
        id=str(row.get("Id") or ""),
        name=str(row.get("Name") or ""),
        event_id=int(event_id) if event_id is not None else None,
        endpoint_url=str(row.get("EndpointUrl") or ""),
        order=int(order) if order is not None else None,
    )
