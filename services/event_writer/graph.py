"""Graph calendar events at the edge: create, update, delete and find, per mailbox.

Failures are translated here. A mailbox that does not exist or has no Exchange Online licence
is ``MailboxUnavailable`` (permanent, for that assignee only); an event that is gone is
``EventNotFound``; 429 and 503 wait out ``Retry-After`` a bounded number of times (releasing the
mailbox's slot meanwhile) and then surface as retryable, so the message goes to a delayed retry
instead of holding a handler thread.
"""

from __future__ import annotations

import random
import threading
from typing import Any
from urllib.parse import quote

import httpx

from common.errors import PermanentApiError, RetryableApiError
from common.http import api_error, transport_errors
from common.identity import TokenSource
from common.logging import get_logger
from services.event_writer.mailbox_gate import MailboxGate

log = get_logger(__name__)

SERVICE = "Graph"
#: Error codes Graph uses for a mailbox that cannot be written (unknown user, unlicensed,
#: guest, on-premises, inactive).
_MAILBOX_CODES = {
    "ErrorInvalidUser",
    "MailboxNotEnabledForRESTAPI",
    "MailboxNotSupportedForRESTAPI",
    "ErrorNonExistentMailbox",
    "ResourceNotFound",
    "Request_ResourceNotFound",
}
_ITEM_GONE_CODES = {"ErrorItemNotFound"}


class MailboxUnavailable(PermanentApiError):
    """This mailbox cannot receive events; other assignees of the task are unaffected."""


class EventNotFound(PermanentApiError):
    """The event is not in the mailbox any more (deleted by its owner, or never created)."""


class GraphCalendar:
    def __init__(
        self,
        http: httpx.Client,
        base_url: str,
        tokens: TokenSource,
        *,
        gate: MailboxGate | None = None,
        max_throttle_waits: int = 3,
        max_wait_seconds: float = 30.0,
        stop: threading.Event | None = None,
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._tokens = tokens
        self._gate = gate or MailboxGate()
        self._max_throttle_waits = max_throttle_waits
        self._max_wait_seconds = max_wait_seconds
        self._stop = stop or threading.Event()

    # --- operations --------------------------------------------------------------------------

    def create_event(self, mailbox: str, event: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", mailbox, "/events", json=event).json()

    def update_event(self, mailbox: str, event_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        path = f"/events/{quote(event_id, safe='')}"
        return self._call("PATCH", mailbox, path, json=changes).json()

    def delete_event(self, mailbox: str, event_id: str) -> bool:
        """Delete; False when the event was already gone."""
        try:
            self._call("DELETE", mailbox, f"/events/{quote(event_id, safe='')}")
        except EventNotFound:
            return False
        return True

    def find_event_id(self, mailbox: str, property_id: str, value: str) -> str | None:
        """The id of the event carrying extended property ``property_id`` = ``value``."""
        escaped = value.replace("'", "''")
        params = {
            "$filter": (
                f"singleValueExtendedProperties/any(ep: ep/id eq '{property_id}' "
                f"and ep/value eq '{escaped}')"
            ),
            "$select": "id",
            "$top": "2",
        }
        found = self._call("GET", mailbox, "/events", params=params).json().get("value", [])
        if len(found) > 1:
            log.warning("several events carry one task key; using the first", mailbox=mailbox)
        return found[0]["id"] if found else None

    # --- transport ---------------------------------------------------------------------------

    def _call(self, method: str, mailbox: str, path: str, **kwargs: Any) -> httpx.Response:
        url = f"{self._base}/users/{quote(mailbox, safe='@')}{path}"
        refreshed_token = False
        waits = 0
        while True:
            headers = {"Authorization": f"Bearer {self._tokens.token()}"}
            with self._gate.slot(mailbox), transport_errors(SERVICE):
                response = self._http.request(method, url, headers=headers, **kwargs)
            if response.is_success:
                return response
            if response.status_code == 401 and not refreshed_token:
                refreshed_token = True
                self._tokens.invalidate()
                continue
            error = self._error(response, path)
            if (
                isinstance(error, RetryableApiError)
                and waits < self._max_throttle_waits
                and (error.retry_after or 0) <= self._max_wait_seconds
            ):
                waits += 1
                delay = (error.retry_after or 0.5 * 2**waits) * random.uniform(1.0, 1.1)
                log.info(
                    "Graph asked to wait",
                    mailbox=mailbox,
                    status=response.status_code,
                    wait_seconds=round(delay, 2),
                )
                if self._stop.wait(delay):
                    raise error  # stopping: hand the work to a delayed retry
                continue
            raise error

    def _error(self, response: httpx.Response, path: str) -> Exception:
        code, message = _graph_error(response)
        detail = f"{code}: {message}" if code else message
        if response.status_code in (403, 404) and code in _MAILBOX_CODES:
            return MailboxUnavailable(
                f"{SERVICE}: mailbox cannot receive events ({detail})",
                status=response.status_code,
                code=code,
            )
        if response.status_code == 404 and (code in _ITEM_GONE_CODES or path != "/events"):
            return EventNotFound(f"{SERVICE}: {detail}", status=404, code=code)
        return api_error(SERVICE, response, detail, code)


def _graph_error(response: httpx.Response) -> tuple[str | None, str]:
    try:
        error = response.json().get("error", {})
    except ValueError:
        return None, response.text.strip()[:300] or response.reason_phrase
    return error.get("code"), str(error.get("message", ""))[:300]
