"""Create, update, delete or keep: the writer's deciding logic, as a pure function.

Input: the events a task should have (one per assignee with a mailbox) and the events the
writer has recorded for it. Output: one action per assignee. Only events the writer recorded
are ever updated or deleted, so nothing the sync did not create is touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DesiredEvent:
    resource_id: str
    mailbox: str
    content: dict[str, Any]
    fingerprint: str


@dataclass(frozen=True)
class RecordedEvent:
    resource_id: str
    mailbox: str
    event_id: str
    fingerprint: str


@dataclass(frozen=True)
class Create:
    desired: DesiredEvent


@dataclass(frozen=True)
class Update:
    desired: DesiredEvent
    recorded: RecordedEvent


@dataclass(frozen=True)
class Delete:
    recorded: RecordedEvent


@dataclass(frozen=True)
class Move:
    """The resource's e-mail changed: the old mailbox loses the event, then the new one gets
    it (one step, so the map never forgets an event it has not deleted)."""

    desired: DesiredEvent
    recorded: RecordedEvent


@dataclass(frozen=True)
class Keep:
    recorded: RecordedEvent


Action = Create | Update | Move | Delete | Keep


def plan(desired: list[DesiredEvent], recorded: dict[str, RecordedEvent]) -> list[Action]:
    actions: list[Action] = []
    wanted = {event.resource_id: event for event in desired}
    for resource_id, event in wanted.items():
        existing = recorded.get(resource_id)
        if existing is None:
            actions.append(Create(event))
        elif existing.mailbox.lower() != event.mailbox.lower():
            actions.append(Move(event, existing))
        elif existing.fingerprint != event.fingerprint:
            actions.append(Update(event, existing))
        else:
            actions.append(Keep(existing))
    for resource_id, existing in recorded.items():
        if resource_id not in wanted:
            actions.append(Delete(existing))
    return actions
