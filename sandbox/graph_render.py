"""How Graph represents an event: the full JSON, ``$select``/``$expand`` shaping, the
``Prefer`` headers it honours, and the typed row its ``$filter`` runs against.

Ids come back in the regular form unless ``Prefer: IdType="ImmutableId"`` asks for immutable
ones (see calendar.py).

Start and end come back in UTC unless ``Prefer: outlook.timezone="…"`` names another zone;
bodies come back as HTML (Outlook stores them so) unless
``Prefer: outlook.body-content-type="text"``.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from sandbox.calendar import Event
from sandbox.graph_protocol import GraphError
from sandbox.odata_filter import FilterError, Schema, check, matches, parse_filter
from sandbox.timezones import UnknownTimeZone, graph_date_time, resolve

if TYPE_CHECKING:
    from sandbox.graph_events import EventCall

_DATE_TIME = Schema(
    "microsoft.graph.dateTimeTimeZone", {"dateTime": "Edm.String", "timeZone": "Edm.String"}
)
_EXTENDED = Schema(
    "microsoft.graph.singleValueLegacyExtendedProperty", {"id": "Edm.String", "value": "Edm.String"}
)
EVENT_SCHEMA = Schema(
    "microsoft.graph.event",
    {
        "id": "Edm.String",
        "subject": "Edm.String",
        "transactionId": "Edm.String",
        "iCalUId": "Edm.String",
        "showAs": "Edm.String",
        "importance": "Edm.String",
        "sensitivity": "Edm.String",
        "isAllDay": "Edm.Boolean",
        "isCancelled": "Edm.Boolean",
        "isReminderOn": "Edm.Boolean",
        "reminderMinutesBeforeStart": "Edm.Int32",
        "createdDateTime": "Edm.DateTimeOffset",
        "lastModifiedDateTime": "Edm.DateTimeOffset",
        "start": _DATE_TIME,
        "end": _DATE_TIME,
        "type": "Edm.String",
    },
    {"singleValueExtendedProperties": _EXTENDED},
)


def _graph_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def _prefer(call: EventCall, name: str) -> str | None:
    match = re.search(rf'{name}="([^"]+)"', call.request.headers.get("prefer", ""))
    return match[1] if match else None


def _response_zone(call: EventCall) -> str:
    zone = _prefer(call, "outlook.timezone")
    if zone:
        try:
            resolve(zone)
            return zone
        except UnknownTimeZone:
            pass  # Graph ignores a preference it cannot apply
    return "UTC"


def wants_immutable_ids(call: EventCall) -> bool:
    """``Prefer: IdType="ImmutableId"``: this request's answer carries immutable ids (the
    header applies to the request it comes with only)."""
    return (_prefer(call, "IdType") or "").lower() == "immutableid"


def event_id(call: EventCall, event: Event) -> str:
    return event.immutable_id if wants_immutable_ids(call) else event.id


def preference_headers(call: EventCall) -> dict[str, str]:
    applied = []
    zone = _response_zone(call)
    if zone != "UTC":
        applied.append(f'outlook.timezone="{zone}"')
    if wants_immutable_ids(call):
        applied.append('IdType="ImmutableId"')
    return {"Preference-Applied": ", ".join(applied)} if applied else {}


def _body(call: EventCall, event: Event) -> dict[str, str]:
    body = event.properties.get("body") or {"contentType": "text", "content": ""}
    content, is_html = str(body.get("content", "")), str(body.get("contentType")).lower() == "html"
    if _prefer(call, "outlook.body-content-type") == "text":
        return {"contentType": "text", "content": _text(content) if is_html else content}
    if not is_html:
        content = (
            (
                '<html><head><meta http-equiv="Content-Type" content="text/html; '
                'charset=utf-8"></head><body>'
                + html.escape(content).replace("\n", "<br>")
                + "</body></html>"
            )
            if content
            else ""
        )
    return {"contentType": "html", "content": content}


def _text(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", re.sub(r"<br\s*/?>", "\n", markup))).strip()


def representation(call: EventCall, event: Event) -> dict[str, Any]:
    zone = _response_zone(call)
    props = event.properties
    body = _body(call, event)
    full: dict[str, Any] = {
        "@odata.etag": f'W/"{event.change_key}"',
        "id": event_id(call, event),
        "createdDateTime": _graph_time(event.created),
        "lastModifiedDateTime": _graph_time(event.modified),
        "changeKey": event.change_key,
        "categories": props.get("categories", []),
        "transactionId": event.transaction_id,
        "originalStartTimeZone": event.start_zone,
        "originalEndTimeZone": event.end_zone,
        "iCalUId": event.ical_uid,
        "uid": event.ical_uid,
        "reminderMinutesBeforeStart": props.get("reminderMinutesBeforeStart", 15),
        "isReminderOn": props.get("isReminderOn", True),
        "hasAttachments": False,
        "subject": props.get("subject", ""),
        "bodyPreview": _text(body["content"])[:255],
        "importance": props.get("importance", "normal"),
        "sensitivity": props.get("sensitivity", "normal"),
        "isAllDay": props.get("isAllDay", False),
        "isCancelled": False,
        "isOrganizer": True,
        "responseRequested": props.get("responseRequested", True),
        "seriesMasterId": None,
        "showAs": props.get("showAs", "busy"),
        "type": "singleInstance",
        "webLink": f"{call.sandbox.origin}/owa/?itemid={quote(event.id, safe='')}"
        "&exfcal=1&path=/calendar/item",
        "onlineMeetingUrl": None,
        "isOnlineMeeting": props.get("isOnlineMeeting", False),
        "onlineMeetingProvider": props.get("onlineMeetingProvider", "unknown"),
        "allowNewTimeProposals": props.get("allowNewTimeProposals", True),
        "isDraft": False,
        "hideAttendees": props.get("hideAttendees", False),
        "responseStatus": {"response": "organizer", "time": "0001-01-01T00:00:00Z"},
        "body": body,
        "start": graph_date_time(event.start, zone),
        "end": graph_date_time(event.end, zone),
        "location": props.get(
            "location",
            {
                "displayName": "",
                "locationType": "default",
                "uniqueIdType": "unknown",
                "address": {},
                "coordinates": {},
            },
        ),
        "locations": props.get("locations", []),
        "recurrence": props.get("recurrence"),
        "attendees": props.get("attendees", []),
        "organizer": {
            "emailAddress": {"name": call.mailbox.display_name, "address": call.mailbox.upn}
        },
        "onlineMeeting": None,
    }
    return _shaped(call, event, full)


def _shaped(call: EventCall, event: Event, full: dict[str, Any]) -> dict[str, Any]:
    """Apply ``$select`` and ``$expand=singleValueExtendedProperties($filter=…)``."""
    select = call.request.query_value("$select")
    if select:
        names = [n.strip() for n in select.split(",")]
        unknown = [n for n in names if n not in full]
        if unknown:
            raise GraphError(
                400,
                "BadRequest",
                "Parsing OData Select and Expand failed: Could "
                f"not find a property named '{unknown[0]}' on type "
                "'microsoft.graph.event'.",
            )
        full = {k: v for k, v in full.items() if k in ("@odata.etag", "id") or k in names}
    expand = call.request.query_value("$expand")
    if expand:
        full["singleValueExtendedProperties"] = _expanded_properties(event, expand)
    return full


def _expanded_properties(event: Event, expand: str) -> list[dict[str, str]]:
    match = re.fullmatch(
        r"singleValueExtendedProperties(?:\(\$filter=(?P<filter>.+)\))?", expand.strip()
    )
    if not match:
        raise GraphError(
            400,
            "BadRequest",
            "Parsing OData Select and Expand failed: Could not "
            f"find a property named '{expand.split('(')[0]}' on type "
            "'microsoft.graph.event'.",
        )
    properties = [{"id": k, "value": v} for k, v in event.extended.items()]
    if match["filter"]:
        try:
            expression = parse_filter(match["filter"])
            check(expression, _EXTENDED)
        except FilterError as error:
            raise GraphError(400, "BadRequest", str(error)) from error
        properties = [p for p in properties if matches(expression, p)]
    return properties


def filter_row(event: Event) -> dict[str, Any]:
    """The filterable properties with their Edm types (instants, not strings)."""
    props = event.properties
    return {
        "id": event.id,
        "subject": props.get("subject", ""),
        "transactionId": event.transaction_id,
        "iCalUId": event.ical_uid,
        "showAs": props.get("showAs", "busy"),
        "importance": props.get("importance", "normal"),
        "sensitivity": props.get("sensitivity", "normal"),
        "isAllDay": props.get("isAllDay", False),
        "isCancelled": False,
        "isReminderOn": props.get("isReminderOn", True),
        "reminderMinutesBeforeStart": props.get("reminderMinutesBeforeStart", 15),
        "createdDateTime": event.created,
        "lastModifiedDateTime": event.modified,
        "start": graph_date_time(event.start, "UTC"),
        "end": graph_date_time(event.end, "UTC"),
        "type": "singleInstance",
        "singleValueExtendedProperties": [{"id": k, "value": v} for k, v in event.extended.items()],
    }
