"""Mailbox calendars: the events Graph has stored, keyed by mailbox owner.

Ids, iCalUIds and change keys imitate Exchange's: long opaque base64 strings that change key
on every update.  Start and end are kept as aware UTC instants plus the zone names the client
used, which Graph reports back as ``originalStartTimeZone``/``originalEndTimeZone``.

Every item has two ids, as in Exchange: the regular id (``AAMk…``), which changes when the item
moves to another calendar, and the immutable id (``AAkALg…``, what ``Prefer:
IdType="ImmutableId"`` shows), which stays while the item stays in its mailbox and changes only
when it is archived or exported and imported again.  Either addresses the item; a regular id
from before a move addresses nothing.  A deleted event's transactionId is remembered (see
``by_transaction_id``).
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


def new_immutable_id() -> str:
    # restImmutableEntryId values begin with "AAkALgAA"; the first bytes below encode to that.
    return _opaque(b"\x00\x09\x00\x2e\x00\x00", 66)


DEFAULT_CALENDAR = "Calendar"


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
    immutable_id: str = field(default_factory=new_immutable_id)
    calendar: str = DEFAULT_CALENDAR  # the calendar (folder) of the mailbox it is in

    def touch(self, now: datetime) -> None:
        self.change_key = new_change_key()
        self.modified = now


class CalendarStore:
    def __init__(self) -> None:
        self._events: dict[str, dict[str, Event]] = {}  # mailbox id -> immutable id -> event
        self._deleted: dict[str, list[Event]] = {}  # deleted events with a transactionId

    def clear(self) -> None:
        self._events.clear()
        self._deleted.clear()

    def events(self, mailbox_id: str, calendar: str | None = None) -> list[Event]:
        """The mailbox's events, or those of one of its calendars."""
        events = self._events.get(mailbox_id, {}).values()
        return [e for e in events if calendar is None or e.calendar == calendar]

    def all_events(self) -> list[Event]:
        return [event for events in self._events.values() for event in events.values()]

    def get(self, mailbox_id: str, event_id: str) -> Event | None:
        """The event with this immutable or (current) regular id."""
        events = self._events.get(mailbox_id, {})
        found = events.get(event_id)
        if found is None:
            found = next((e for e in events.values() if e.id == event_id), None)
        return found

    def add(self, event: Event) -> None:
        self._events.setdefault(event.mailbox_id, {})[event.immutable_id] = event

    def remove(self, mailbox_id: str, event_id: str) -> Event | None:
        event = self.get(mailbox_id, event_id)
        if event is None:
            return None
        del self._events[mailbox_id][event.immutable_id]
        if event.transaction_id:
            self._deleted.setdefault(mailbox_id, []).append(event)
        return event

    def move(
        self, mailbox_id: str, event_id: str, *, calendar: str | None, reimport: bool
    ) -> Event | None:
        """What Outlook does to an item moved to another calendar (a new regular id) or
        archived / exported and imported again (new regular and immutable ids)."""
        event = self.get(mailbox_id, event_id)
        if event is None:
            return None
        if reimport:
            del self._events[mailbox_id][event.immutable_id]
            event.immutable_id = new_immutable_id()
            self.add(event)
        event.id = new_event_id()
        event.calendar = calendar or event.calendar
        event.touch(datetime.now(UTC))
        return event

    def by_transaction_id(
        self, mailbox_id: str, transaction_id: str, window_s: float | None
    ) -> Event | None:
        """The event a POST with this transactionId gets instead of a new one.

        How long Graph deduplicates is undocumented; ``window_s`` None means as long as the
        mailbox lives. The window counts from the event's creation, deleted or not: the
        deduplication is by transactionId, not by a live item, so a POST that carries the
        id of a deleted event is answered with that event, which no longer exists.
        """
        oldest = None if window_s is None else datetime.now(UTC) - timedelta(seconds=window_s)
        live = self._events.get(mailbox_id, {}).values()
        deleted = reversed(self._deleted.get(mailbox_id, []))
        return next(
            (
                event
                for event in (*live, *deleted)
                if event.transaction_id == transaction_id
                and (oldest is None or event.created >= oldest)
            ),
            None,
        )
