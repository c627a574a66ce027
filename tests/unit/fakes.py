"""In-memory doubles of our own ports (never of RabbitMQ or Redis), for unit tests."""

from __future__ import annotations

import itertools
from typing import Any
from uuid import UUID

from services.event_writer.graph import EventNotFound, MailboxUnavailable
from services.event_writer.planner import RecordedEvent


class FakeCalendar:
    """Behaves like GraphCalendar over a dict of mailboxes; failures can be scripted."""

    def __init__(self, mailboxes: list[str]) -> None:
        self.events: dict[str, dict[str, dict[str, Any]]] = {m.lower(): {} for m in mailboxes}
        self.calls: list[tuple[str, str]] = []
        self.fail_next: dict[str, Exception] = {}
        self._ids = itertools.count(1)

    def _mailbox(self, mailbox: str, op: str) -> dict[str, dict[str, Any]]:
        self.calls.append((op, mailbox))
        if mailbox in self.fail_next:
            raise self.fail_next.pop(mailbox)
        if mailbox not in self.events:
            raise MailboxUnavailable(f"no mailbox {mailbox}", status=404, code="ErrorInvalidUser")
        return self.events[mailbox]

    def create_event(self, mailbox: str, event: dict[str, Any]) -> dict[str, Any]:
        box = self._mailbox(mailbox, "create")
        for existing in box.values():
            if existing.get("transactionId") == event.get("transactionId"):
                return existing
        event_id = f"evt-{next(self._ids)}"
        box[event_id] = {**event, "id": event_id}
        return box[event_id]

    def update_event(self, mailbox: str, event_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        box = self._mailbox(mailbox, "update")
        if event_id not in box:
            raise EventNotFound("gone", status=404, code="ErrorItemNotFound")
        box[event_id].update(changes)
        return box[event_id]

    def delete_event(self, mailbox: str, event_id: str) -> bool:
        box = self._mailbox(mailbox, "delete")
        return box.pop(event_id, None) is not None

    def find_event_id(self, mailbox: str, property_id: str, value: str) -> str | None:
        box = self._mailbox(mailbox, "find")
        for event_id, event in box.items():
            for prop in event.get("singleValueExtendedProperties", []):
                if prop["id"] == property_id and prop["value"] == value:
                    return event_id
        return None


class MemoryEventMap:
    def __init__(self) -> None:
        self.entries: dict[UUID, dict[UUID, RecordedEvent]] = {}

    def load(self, task_id: UUID) -> dict[UUID, RecordedEvent]:
        return dict(self.entries.get(task_id, {}))

    def record(self, task_id: UUID, event: RecordedEvent) -> None:
        self.entries.setdefault(task_id, {})[event.resource_id] = event

    def forget(self, task_id: UUID, resource_id: UUID) -> None:
        self.entries.get(task_id, {}).pop(resource_id, None)
