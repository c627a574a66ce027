"""Mailbox calendars: the events Graph has stored, keyed by mailbox owner.

Ids, iCalUIds and change keys imitate Exchange's: long opaque base64 strings that change key
on every update.  Start and end are kept as aware UTC instants plus the zone names the client
used, which Graph reports back as ``originalStartTimeZone``/``originalEndTimeZone``.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any


def _opaque(prefix: bytes, size: int) -> str:
    return base64.urlsafe_b64encode(prefix + secrets.token_bytes(size)).decode("ascii")


def new_event_id() -> str:
    # Exchange ids are ~150 base64 characters beginning with "AAMk"; the first bytes below
    # encode to that prefix.
    return _opaque(b"\x00\x03\x24", 108)


def new_change_key() -> str:
    return base64.b64encode(b"\x0f\x00\x00\x00" + secrets.token_bytes(20)).decode("ascii")


def new_ical_uid() -> str:
    return "040000008200E00074C5B7101A82E00800000000" + secrets.token_hex(28).upper()


@dataclass
class Event:
    id: str
    mailbox_id: str
    mailbox_upn: str
    ical_uid: str
    change_key: str
    created: datetime
    modified: datetime
    start: datetime
    end: datetime
    start_zone: str
    end_zone: str
    transaction_id: str | None
    # Writable Graph properties other than start/end/transactionId, as the client sent them.
    properties: dict[str, Any] = field(default_factory=dict)
    # Extended property id (canonical form) -> value.
    extended: dict[str, str] = field(default_factory=dict)

    def touch(self, now: datetime) -> None:
        self.change_key = new_change_key()
        self.modified = now


class CalendarStore:
    def __init__(self) -> None:
        self._events: dict[str, dict[str, Event]] = {}  # mailbox id -> event id -> event

    def clear(self) -> None:
        self._events.clear()

    def events(self, mailbox_id: str) -> list[Event]:
        return list(self._events.get(mailbox_id, {}).values())

    def all_events(self) -> list[Event]:
        return [event for events in self._events.values() for event in events.values()]

    def get(self, mailbox_id: str, event_id: str) -> Event | None:
        return self._events.get(mailbox_id, {}).get(event_id)

    def add(self, event: Event) -> None:
        self._events.setdefault(event.mailbox_id, {})[event.id] = event

    def remove(self, mailbox_id: str, event_id: str) -> Event | None:
        return self._events.get(mailbox_id, {}).pop(event_id, None)

    def by_transaction_id(
        self, mailbox_id: str, transaction_id: str, window_s: float | None
    ) -> Event | None:
        """The event a retried POST with this transactionId should return instead of a new one.

        How long Graph deduplicates is undocumented; ``window_s`` None means as long as the
        earlier event exists.
        """
        oldest = None if window_s is None else datetime.now(UTC) - timedelta(seconds=window_s)
        return next(
            (
                event
                for event in self._events.get(mailbox_id, {}).values()
                if event.transaction_id == transaction_id
                and (oldest is None or event.created >= oldest)
            ),
            None,
        )
