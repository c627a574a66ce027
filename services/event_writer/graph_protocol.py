"""Graph calendar calls as data: requests, results, ``$batch`` envelopes and error meaning.

Pure: no HTTP here (that is ``graph.py``). Every call the writer makes targets one mailbox,
which is what Outlook's limits are counted by, so a request always names its mailbox.

Every request asks for **immutable ids** (``Prefer: IdType="ImmutableId"``; the header applies
to the request it comes with only, a ``$batch`` item included): a regular id changes when the
item moves to another calendar, so a stored one would stop addressing the event. An immutable
id changes only when the item is archived or exported and imported again; a stored id that
answers 404 is therefore looked up by the event's task key before anything else (``handler``).

What a failed result means:

- 404/403 with a mailbox code (unknown user, no Exchange Online licence, guest, on-premises,
  the app not allowed in that mailbox): ``MailboxUnavailable``, permanent for that assignee;
- 404 on an event id: ``EventNotFound`` (deleted by its owner, or never created);
- 429, and 503 with Retry-After: throttled; the dispatcher pauses the mailbox and retries;
- 408, other 5xx, transport failures: retryable; a POST among them may have been carried out;
- any other 4xx: permanent.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import orjson

from common.errors import PermanentApiError, RetryableApiError
from common.http import MAX_RETRY_AFTER_SECONDS, is_retryable_status

SERVICE = "Graph"
#: $batch takes at most 20 requests.
MAX_BATCH = 20

#: Codes Graph uses for a mailbox that cannot be written (unknown user, unlicensed, guest,
#: on-premises, inactive, or outside the app's Exchange RBAC / access-policy scope).
_MAILBOX_CODES = {
    "ErrorInvalidUser",
    "MailboxNotEnabledForRESTAPI",
    "MailboxNotSupportedForRESTAPI",
    "ErrorNonExistentMailbox",
    "ResourceNotFound",
    "Request_ResourceNotFound",
    "ErrorAccessDenied",
}
_ITEM_GONE_CODES = {"ErrorItemNotFound"}
#: Sent with every request (see the module doc).
IMMUTABLE_IDS = {"Prefer": 'IdType="ImmutableId"'}


class MailboxUnavailable(PermanentApiError):
    """This mailbox cannot receive events; other assignees of the task are unaffected."""


class EventNotFound(PermanentApiError):
    """The event is not in the mailbox any more (deleted by its owner, or never created)."""


@dataclass(frozen=True)
class GraphRequest:
    method: str
    mailbox: str
    path: str  # below /users/{mailbox}, e.g. "/events" or "/events/{id}"
    body: dict[str, Any] | None = None
    params: tuple[tuple[str, str], ...] = ()

    @property
    def relative_url(self) -> str:
        url = f"/users/{quote(self.mailbox, safe='@')}{self.path}"
        if self.params:
            url += "?" + urlencode(self.params, quote_via=quote)
        return url

    @property
    def headers(self) -> dict[str, str]:
        return dict(IMMUTABLE_IDS)

    @property
    def creates(self) -> bool:
        return self.method == "POST" and self.path == "/events"


@dataclass(frozen=True)
class GraphResult:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def retry_after(self) -> float | None:
        value = self.headers.get("retry-after")
        try:
            return min(max(float(value), 0.0), MAX_RETRY_AFTER_SECONDS) if value else None
        except ValueError:
            return None

    @property
    def throttled(self) -> bool:
        return self.status == 429 or (self.status == 503 and self.retry_after is not None)

    def error_code(self) -> tuple[str | None, str]:
        error = self.body.get("error", {}) if isinstance(self.body, dict) else {}
        if not isinstance(error, dict):
            return None, str(error)[:300]
        return error.get("code"), str(error.get("message", ""))[:300]


# --- the calls the writer makes ---------------------------------------------------------------


def _event_path(event_id: str) -> str:
    return f"/events/{quote(event_id, safe='')}"


def create(mailbox: str, event: dict[str, Any]) -> GraphRequest:
    return GraphRequest("POST", mailbox, "/events", event)


def update(mailbox: str, event_id: str, changes: dict[str, Any]) -> GraphRequest:
    return GraphRequest("PATCH", mailbox, _event_path(event_id), changes)


def delete(mailbox: str, event_id: str) -> GraphRequest:
    return GraphRequest("DELETE", mailbox, _event_path(event_id))


def find_by_property(mailbox: str, property_id: str, value: str, *, top: int = 5) -> GraphRequest:
    """The events carrying single-value extended property ``property_id`` = ``value`` (the
    documented ``any(...)`` filter shape)."""
    escaped = value.replace("'", "''")
    return GraphRequest(
        "GET",
        mailbox,
        "/events",
        params=(
            (
                "$filter",
                f"singleValueExtendedProperties/any(ep: ep/id eq '{property_id}' "
                f"and ep/value eq '{escaped}')",
            ),
            ("$select", "id"),
            ("$top", str(top)),
        ),
    )


def event_ids(result: GraphResult) -> list[str]:
    values = result.body.get("value", []) if isinstance(result.body, dict) else []
    return [item["id"] for item in values if isinstance(item, dict) and "id" in item]


def created_id(result: GraphResult) -> str:
    if not isinstance(result.body, dict) or not result.body.get("id"):
        raise RetryableApiError(f"{SERVICE} answered {result.status} without an event id")
    return str(result.body["id"])


# --- errors ----------------------------------------------------------------------------------


def error_for(request: GraphRequest, result: GraphResult) -> Exception:
    """The error a failed result stands for (see the module doc)."""
    code, message = result.error_code()
    detail = f"{code}: {message}" if code else (message or f"HTTP {result.status}")
    status = result.status
    if status in (403, 404) and code in _MAILBOX_CODES:
        return MailboxUnavailable(
            f"{SERVICE}: mailbox {request.mailbox} cannot receive events ({detail})",
            status=status,
            code=code,
        )
    if status == 404 and (code in _ITEM_GONE_CODES or request.path != "/events"):
        return EventNotFound(f"{SERVICE}: {detail}", status=404, code=code)
    text = f"{SERVICE} answered {status} to {request.method} in {request.mailbox}: {detail}"
    if is_retryable_status(status):
        return RetryableApiError(text, status=status, code=code, retry_after=result.retry_after)
    return PermanentApiError(text, status=status, code=code)


def outcome_uncertain(request: GraphRequest, error: BaseException) -> bool:
    """Might a create that failed like this have been carried out all the same?

    A throttled or refused request was not; a timeout, a lost connection or a 5xx may have
    been (the server can fail after storing the event).
    """
    if not request.creates:
        return False
    status = getattr(error, "status", None)
    if status is None:
        return True  # transport failure: no answer at all
    return status == 408 or status >= 500


# --- $batch ----------------------------------------------------------------------------------


def batch_body(requests: list[GraphRequest]) -> dict[str, Any]:
    if not 1 <= len(requests) <= MAX_BATCH:
        raise ValueError(f"a batch holds 1 to {MAX_BATCH} requests, not {len(requests)}")
    items = []
    for index, request in enumerate(requests):
        item: dict[str, Any] = {
            "id": str(index),
            "method": request.method,
            "url": request.relative_url,
            "headers": request.headers,
        }
        if request.body is not None:
            item["headers"]["Content-Type"] = "application/json"
            item["body"] = request.body
        items.append(item)
    return {"requests": items}


def batch_results(count: int, payload: Any) -> list[GraphResult]:
    """Per-item results in request order; an item the answer lacks counts as a 502."""
    results = [
        GraphResult(502, {"error": {"code": "MissingBatchItem", "message": "no answer"}})
    ] * count
    responses = payload.get("responses", []) if isinstance(payload, dict) else []
    for response in responses:
        try:
            index = int(response["id"])
        except (KeyError, TypeError, ValueError):
            continue
        if 0 <= index < count:
            headers = {str(k).lower(): str(v) for k, v in (response.get("headers") or {}).items()}
            body = response.get("body")
            if isinstance(body, str) and "json" in headers.get("content-type", ""):
                with contextlib.suppress(ValueError):
                    body = orjson.loads(body)
            results[index] = GraphResult(int(response.get("status", 502)), body, headers)
    return results
