"""Graph ``event`` operations on one mailbox: create, list, get, update, delete, cancel.

Bodies are validated the way Graph's OData layer does it: unknown properties and wrongly typed
values fail with ``RequestBodyRead``, unknown time zones with ``TimeZoneNotSupportedException``.
How events are rendered lives in graph_render.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sandbox.calendar import (
    DEFAULT_CALENDAR,
    Event,
    new_change_key,
    new_event_id,
    new_ical_uid,
)
from sandbox.context import Sandbox
from sandbox.graph_protocol import GraphError, GraphRequest, GraphResponse
from sandbox.graph_render import EVENT_SCHEMA, filter_row, preference_headers, representation
from sandbox.odata_filter import FilterError, check, matches, parse_filter
from sandbox.odata_query import apply_orderby, parse_count, parse_orderby, with_query
from sandbox.state import User
from sandbox.timezones import UnknownTimeZone, resolve

MAX_PAGE = 1000

_ENUMS = {
    "showAs": {"free", "tentative", "busy", "oof", "workingElsewhere", "unknown"},
    "importance": {"low", "normal", "high"},
    "sensitivity": {"normal", "personal", "private", "confidential"},
}
_WRITABLE: dict[str, type | tuple[type, ...]] = {
    "subject": str,
    "body": dict,
    "start": dict,
    "end": dict,
    "location": dict,
    "locations": list,
    "attendees": list,
    "categories": list,
    "importance": str,
    "sensitivity": str,
    "showAs": str,
    "isAllDay": bool,
    "isReminderOn": bool,
    "reminderMinutesBeforeStart": int,
    "responseRequested": bool,
    "allowNewTimeProposals": bool,
    "hideAttendees": bool,
    "isOnlineMeeting": bool,
    "onlineMeetingProvider": str,
    "transactionId": str,
    "singleValueExtendedProperties": list,
    "recurrence": (dict, type(None)),
    "originalStartTimeZone": str,
    "originalEndTimeZone": str,
}
# Server-set properties a client may echo back; Graph ignores them on write.
_IGNORED = {
    "@odata.type",
    "@odata.etag",
    "id",
    "createdDateTime",
    "lastModifiedDateTime",
    "changeKey",
    "iCalUId",
    "uid",
    "webLink",
    "organizer",
    "bodyPreview",
    "type",
}
_EDM_NAMES = {
    str: "Edm.String",
    bool: "Edm.Boolean",
    int: "Edm.Int32",
    dict: "complex type",
    list: "collection",
}
_EXTENDED_ID = re.compile(
    r"^(?P<type>\w+)\s+(?:\{(?P<guid>[0-9a-fA-F-]{36})\}\s+(?P<kind>Name|Id)\s+(?P<name>.+)"
    r"|(?P<tag>0x[0-9a-fA-F]{1,4}))$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class EventCall:
    sandbox: Sandbox
    request: GraphRequest
    mailbox: User
    user_segment: str
    event_id: str | None

    def event(self) -> Event:
        event = self.sandbox.calendar.get(self.mailbox.id, self.event_id or "")
        if event is None:
            raise GraphError(
                404, "ErrorItemNotFound", "The specified object was not found in the store."
            )
        return event


# ---------------------------------------------------------------------------------------------
# Operations


def create_event(call: EventCall) -> GraphResponse:
    payload = _payload(call.request)
    if "start" not in payload or "end" not in payload:
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            "Your request can't be completed. An event needs a start and an end.",
        )
    start, start_zone = _date_time(payload["start"])
    end, end_zone = _date_time(payload["end"])
    _check_span(start, end, start_zone, end_zone, payload)
    transaction_id = payload.get("transactionId")
    calendar = call.sandbox.calendar
    if transaction_id:
        earlier = calendar.by_transaction_id(
            call.mailbox.id, transaction_id, call.sandbox.config.transaction_id_window_s
        )
        if earlier:  # a retried POST: hand back the event the first attempt created
            return _rendered(call, earlier, 201)
    now = datetime.now(UTC)
    event = Event(
        id=new_event_id(),
        mailbox_id=call.mailbox.id,
        mailbox_upn=call.mailbox.upn,
        ical_uid=new_ical_uid(),
        change_key=new_change_key(),
        created=now,
        modified=now,
        start=start,
        end=end,
        start_zone=payload.get("originalStartTimeZone", start_zone),
        end_zone=payload.get("originalEndTimeZone", end_zone),
        transaction_id=transaction_id,
    )
    _apply(event, payload)
    calendar.add(event)
    return _rendered(call, event, 201)


def get_event(call: EventCall) -> GraphResponse:
    return _rendered(call, call.event(), 200)


def update_event(call: EventCall) -> GraphResponse:
    event = call.event()
    payload = _payload(call.request)
    if "transactionId" in payload and payload["transactionId"] != event.transaction_id:
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            "The property 'transactionId' cannot be changed after creation.",
        )
    start, start_zone = (
        _date_time(payload["start"]) if "start" in payload else (event.start, event.start_zone)
    )
    end, end_zone = _date_time(payload["end"]) if "end" in payload else (event.end, event.end_zone)
    _check_span(start, end, start_zone, end_zone, {**event.properties, **payload})
    event.start, event.end = start, end
    event.start_zone, event.end_zone = start_zone, end_zone
    _apply(event, payload)
    event.touch(datetime.now(UTC))
    return _rendered(call, event, 200)


def delete_event(call: EventCall) -> GraphResponse:
    call.sandbox.calendar.remove(call.mailbox.id, call.event().id)
    return GraphResponse(204)


def cancel_event(call: EventCall) -> GraphResponse:
    # The organizer's copy is removed; attendees would get a cancellation (not emulated).
    call.sandbox.calendar.remove(call.mailbox.id, call.event().id)
    return GraphResponse(202)


def list_events(call: EventCall) -> GraphResponse:
    request = call.request
    # /users/{id}/events and /calendar/events list the default calendar only.
    events = call.sandbox.calendar.events(call.mailbox.id, DEFAULT_CALENDAR)
    try:
        if request.query_value("$filter"):
            expression = parse_filter(request.query_value("$filter") or "")
            check(expression, EVENT_SCHEMA)
            events = [e for e in events if matches(expression, filter_row(e))]
        order = parse_orderby(request.query_value("$orderby"), EVENT_SCHEMA)
        top = parse_count("$top", request.query_value("$top"))
        skip = parse_count("$skip", request.query_value("$skip")) or 0
    except FilterError as error:
        raise GraphError(400, "BadRequest", str(error)) from error
    if order:
        by_id = {e.id: e for e in events}
        events = [by_id[row["id"]] for row in apply_orderby([filter_row(e) for e in events], order)]
    size = min(top or call.sandbox.config.graph_page_size, MAX_PAGE)
    page = events[skip : skip + size]
    body: dict[str, Any] = {
        "@odata.context": f"{request.base_url}/$metadata#users('{call.user_segment}')/events",
        "value": [representation(call, e) for e in page],
    }
    if len(events) > skip + len(page):
        body["@odata.nextLink"] = with_query(
            f"{request.base_url}{request.path}", request.query, {"$skip": str(skip + len(page))}
        )
    return GraphResponse(200, body, preference_headers(call))


# ---------------------------------------------------------------------------------------------
# Validation


def _payload(request: GraphRequest) -> dict[str, Any]:
    payload = request.json_body()
    if not isinstance(payload, dict):
        raise GraphError(400, "UnableToDeserializePostBody", "were unable to deserialize ")
    for name, value in payload.items():
        if name in _IGNORED:
            continue
        expected = _WRITABLE.get(name)
        if expected is None:
            raise GraphError(
                400,
                "RequestBodyRead",
                f"The property '{name}' does not exist on "
                "type 'microsoft.graph.event'. Make sure to only use property names "
                "that are defined by the type or mark the type as open type.",
            )
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            type_name = _EDM_NAMES.get(expected if isinstance(expected, type) else dict)
            raise GraphError(
                400,
                "RequestBodyRead",
                "Cannot convert a primitive value to the "
                f"expected type '{type_name}'. See the inner exception for more "
                "details.",
            )
        if name in _ENUMS and value not in _ENUMS[name]:
            raise GraphError(400, "RequestBodyRead", f"Requested value '{value}' was not found.")
    payload = {k: v for k, v in payload.items() if k not in _IGNORED}
    if "singleValueExtendedProperties" in payload:
        payload["singleValueExtendedProperties"] = [
            _extended_property(p) for p in payload["singleValueExtendedProperties"]
        ]
    return payload


def _date_time(value: dict[str, Any]) -> tuple[datetime, str]:
    zone = value.get("timeZone") or "UTC"
    text = value.get("dateTime")
    if not isinstance(text, str):
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            "Your request can't be completed. A dateTimeTimeZone needs a dateTime.",
        )
    try:
        resolve(zone)
    except UnknownTimeZone as error:
        raise GraphError(
            400,
            "TimeZoneNotSupportedException",
            "A valid TimeZone value must be "
            f"specified. The following TimeZone value is not supported: '{zone}'.",
        ) from error
    try:  # Graph writes seven fractional digits; Python reads at most six
        moment = datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", text))
    except ValueError as error:
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            f"Your request can't be completed. '{text}' is not a valid dateTime value.",
        ) from error
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=resolve(zone))
    return moment.astimezone(UTC), zone


def _check_span(
    start: datetime, end: datetime, start_zone: str, end_zone: str, properties: dict[str, Any]
) -> None:
    if end < start:
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            "Your request can't be completed. The "
            "event's end time must be later than or equal to its start time.",
        )
    if properties.get("isAllDay") and any(
        moment.astimezone(resolve(zone)).time() != datetime.min.time()
        for moment, zone in ((start, start_zone), (end, end_zone))
    ):
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            "Your request can't be completed. An all-day event must start and end at midnight.",
        )


def _extended_property(value: Any) -> dict[str, str]:
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("id"), str)
        or not isinstance(value.get("value"), str)
    ):
        raise GraphError(
            400, "RequestBodyRead", "An extended property needs a string 'id' and a string 'value'."
        )
    return {"id": canonical_property_id(value["id"]), "value": value["value"]}


def canonical_property_id(property_id: str) -> str:
    """Exchange's spelling of an extended property id (lower-case GUID, capitalised type)."""
    match = _EXTENDED_ID.match(property_id.strip())
    if not match:
        raise GraphError(
            400, "ErrorInvalidRequest", f"The extended property id '{property_id}' is not valid."
        )
    kind = match["type"][0].upper() + match["type"][1:]
    if match["tag"]:
        return f"{kind} {match['tag'].lower()}"
    return f"{kind} {{{match['guid'].lower()}}} {match['kind'].capitalize()} {match['name']}"


def _apply(event: Event, payload: dict[str, Any]) -> None:
    for name, value in payload.items():
        if name == "singleValueExtendedProperties":
            event.extended.update({p["id"]: p["value"] for p in value})
        elif name not in (
            "start",
            "end",
            "transactionId",
            "originalStartTimeZone",
            "originalEndTimeZone",
        ):
            event.properties[name] = value


# ---------------------------------------------------------------------------------------------


def _rendered(call: EventCall, event: Event, status: int) -> GraphResponse:
    context = f"{call.request.base_url}/$metadata#users('{call.user_segment}')/events/$entity"
    body = {"@odata.context": context, **representation(call, event)}
    return GraphResponse(status, body, preference_headers(call))
