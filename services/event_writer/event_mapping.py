"""What an Outlook event looks like for a task: the one mapping module (pure functions).

Default rules (README "Event mapping"):
- subject: the task name;
- start/end: the task's start and finish, wall-clock times of the PWA time zone, sent to Graph
  as the same instants in UTC (``timeZone: "UTC"`` is accepted by every Graph method, while
  IANA names are only a subset; Outlook shows each reader the time in their own zone);
- body: plain text naming the project and the task with its dates (plain text, so a task name
  can never inject markup);
- identity: a deterministic ``transactionId`` per (scenario, task, assignee), so a retried POST
  does not create a second event, and an extended property holding the task key, so the event
  can be found again if the writer's bookkeeping is lost.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from common.errors import BadMessage
from common.messages import TaskChanged

#: Our own property set GUID (MAPI named properties need one); never change it, or events
#: written before the change can no longer be found.
PROPERTY_SET = "{3c1d6f0e-5b2a-4f4e-9a61-7c0f8e2d9b41}"
TASK_KEY_PROPERTY = f"String {PROPERTY_SET} Name pwasyncTaskKey"
_TRANSACTION_NAMESPACE = UUID("6f1c2a9e-8d3b-4e57-b0a4-2c9e5f7d1a38")

GRAPH_DATETIME = "%Y-%m-%dT%H:%M:%S"


def task_key(scenario: str, task_id: UUID) -> str:
    return f"{scenario}/{task_id}"


def transaction_id(scenario: str, task_id: UUID, resource_id: UUID) -> str:
    return str(uuid.uuid5(_TRANSACTION_NAMESPACE, f"{scenario}/{task_id}/{resource_id}"))


def to_utc(wall_clock: datetime, zone_name: str) -> datetime:
    """A PWA wall-clock time as a UTC instant."""
    return wall_clock.replace(tzinfo=ZoneInfo(zone_name)).astimezone(UTC)


def _graph_time(wall_clock: datetime, zone_name: str) -> dict[str, str]:
    return {"dateTime": to_utc(wall_clock, zone_name).strftime(GRAPH_DATETIME), "timeZone": "UTC"}


def event_content(task: TaskChanged) -> dict[str, Any]:
    """The fields the sync owns: written on create, and patched when they change."""
    if task.start is None or task.finish is None:
        raise BadMessage("a task without start and finish has no event")
    if task.finish < task.start:
        raise BadMessage("the task finishes before it starts")
    dates = f"{task.start:%Y-%m-%d %H:%M} - {task.finish:%Y-%m-%d %H:%M} ({task.timezone})"
    body = "\n".join(
        [
            f"Project: {task.project_name}",
            f"Task: {task.task_name}",
            f"Dates: {dates}",
            "",
            "This event is kept in sync with Microsoft Project by pwasync; "
            "changes made here are overwritten when the task changes.",
        ]
    )
    return {
        "subject": task.task_name,
        "body": {"contentType": "text", "content": body},
        "start": _graph_time(task.start, task.timezone),
        "end": _graph_time(task.finish, task.timezone),
    }


def new_event(task: TaskChanged, resource_id: UUID) -> dict[str, Any]:
    """The full body of a POST: the content plus the identity fields set only at creation."""
    return {
        **event_content(task),
        "transactionId": transaction_id(task.scenario, task.task_id, resource_id),
        "singleValueExtendedProperties": [
            {"id": TASK_KEY_PROPERTY, "value": task_key(task.scenario, task.task_id)}
        ],
    }


def fingerprint(content: dict[str, Any]) -> str:
    """A stable digest of the owned fields, to PATCH only when something changed."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
