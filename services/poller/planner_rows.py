"""Basic Planner's answers as the seam's rows (pure functions).

Planner keeps a task's start and due as instants (``DateTimeOffset``, UTC), but its UI works in
days, so a task is an all-day event over its days: from the start day (the due day when it has
no start) to the day after the due day, as midnights of the plans' zone
(``PWASYNC_PWA_TIMEZONE``). Which instant the UI stores for a picked day is not published
**[U]**: a value at exactly UTC midnight is taken as a date written in UTC (its UTC date);
any other value is the day it falls on in the plans' zone (the UI storing the picking user's
local midnight, or a time of day within that day). A task without a due date has no event.

A task is selected when a label (category) whose name is ``PWASYNC_CREATE_EVENT_LABEL`` is
applied to it (``appliedCategories.categoryN: true``; a label taken off may stay as false).
Label names are compared without regard to case or surrounding spaces, as users type them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from services.poller.source import TaskRow, UnreadableRow, field

#: Where a task opens in Planner on the web [U: the link form].
PLANNER_WEB = "https://planner.cloud.microsoft/webui/plan/{plan}/view/board/task/{task}"


def planner_task_link(plan_id: str, task_id: str) -> str:
    """The link put into a Planner task's events."""
    return PLANNER_WEB.format(plan=quote(plan_id, safe=""), task=quote(task_id, safe=""))


@dataclass(frozen=True)
class PlannerTask:
    """A task row and the user ids assigned to it."""

    row: TaskRow | UnreadableRow
    assignees: tuple[str, ...]


def label_keys(details: dict[str, Any], label: str) -> frozenset[str]:
    """The plan's category keys (``category1``…) whose description is the label's name."""
    wanted = label.strip().casefold()
    descriptions = details.get("categoryDescriptions") or {}
    if not wanted or not isinstance(descriptions, dict):  # unnamed labels are never it
        return frozenset()
    return frozenset(
        key
        for key, name in descriptions.items()
        if isinstance(name, str) and name.strip().casefold() == wanted
    )


def planner_day(value: Any, zone: ZoneInfo) -> date | None:
    """The day a Planner date stands for (module docstring); None for no date."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("not a date")
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    if moment.time() == time(0):
        return moment.date()
    return moment.astimezone(zone).date()


def all_day_span(start: date | None, due: date | None) -> tuple[datetime | None, datetime | None]:
    """Start and (exclusive) end midnights of the event; no end without a due day. A start
    after the due day is answered with the due day as end, so the task is refused as one that
    finishes before it starts."""
    if due is None:
        return (_midnight(start) if start else None), None
    first = start or due
    end = due + timedelta(days=1) if first <= due else due
    return _midnight(first), _midnight(end)


def task_row(
    plan_id: str, raw: dict[str, Any], labels: frozenset[str], zone: ZoneInfo
) -> PlannerTask:
    try:
        task_id = field(raw, "id", _text)
        start, finish = all_day_span(
            field(raw, "startDateTime", lambda v: planner_day(v, zone)),
            field(raw, "dueDateTime", lambda v: planner_day(v, zone)),
        )
        categories = field(raw, "appliedCategories", _mapping)
        row: TaskRow | UnreadableRow = TaskRow(
            project_id=plan_id,
            task_id=task_id,
            name=str(raw.get("title") or ""),
            start=start,
            finish=finish,
            is_summary=False,
            is_project_summary=False,
            flagged=any(categories.get(key) is True for key in labels),
            all_day=True,
        )
        assignees = tuple(
            sorted(u for u, a in field(raw, "assignments", _mapping).items() if a is not None)
        )
    except (ValueError, OverflowError) as exc:
        key = raw.get("id") if isinstance(raw.get("id"), str) and raw.get("id") else None
        return PlannerTask(UnreadableRow(key, str(raw.get("title") or "")[:200], str(exc)), ())
    return PlannerTask(row, assignees)


def plan_version(title: str, labels: Iterable[str], zone: ZoneInfo, tasks: list[dict]) -> str:
    """What a plan's events depend on, as one digest: its title, which categories are the
    label, the zone, and each task's ETag (which moves on every edit of the task). Equal
    versions mean nothing to read; a task without an ETag counts with its whole content."""
    entries = sorted((str(t.get("id")), str(t.get("@odata.etag") or _content(t))) for t in tasks)
    canonical = json.dumps(
        [title, sorted(labels), zone.key, entries], separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def _content(task: dict[str, Any]) -> str:
    text = json.dumps(task, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0))


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("missing")
    return value.strip()


def _mapping(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("not an object")
    return value
