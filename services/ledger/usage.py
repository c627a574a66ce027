"""The usage report of the interface page, as JSON and as a table (pure functions).

The interface page fixes ``scenario``, ``window_days``, ``endpoints_in_use``, ``limit``,
``tasks`` and ``held``; ``expiring_within_7_days``, ``history`` (allocations per UTC day, last
30 days), each task's ``task_name`` and ``project_name`` (as the plans name them now; null when
unknown) and ``names_unreadable`` (why the plans could not name them) are additions in the
same style.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.ledger.endpoints import WINDOW, Endpoint, HeldTask


@dataclass(frozen=True)
class Names:
    """A task's and its project's names, as the plans give them (None: not known)."""

    task: str | None
    project: str | None


NO_NAMES = Names(None, None)

EXPIRING_SOON = timedelta(days=7)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def usage_report(
    scenario: str,
    endpoints: list[Endpoint],
    limit: int | None,
    *,
    held: list[HeldTask],
    history: dict[str, int],
    now: datetime,
    names: dict[str, Names] | None = None,
    names_unreadable: str | None = None,
) -> dict[str, Any]:
    """``names``: by task id, from the plans; a held task falls back on the names its held
    snapshot carries."""
    names = names or {}

    def named(task_id: Any, fallback: Names = NO_NAMES) -> dict[str, str | None]:
        found = names.get(str(task_id), NO_NAMES)
        return {
            "task_name": found.task or fallback.task or None,
            "project_name": found.project or fallback.project or None,
        }

    return {
        "scenario": scenario,
        "window_days": WINDOW.days,
        "endpoints_in_use": len(endpoints),
        "limit": limit,
        "tasks": [
            {
                "task_id": str(e.task_id),
                "project_id": str(e.project_id),
                "allocated_at": _iso(e.allocated_at),
                "expires_at": _iso(e.expires_at),
                **named(e.task_id),
            }
            for e in endpoints
        ],
        "held": [
            {
                "task_id": str(h.task_id),
                "project_id": str(h.project_id) if h.project_id else None,
                "since": _iso(h.since),
                **named(h.task_id, Names(h.task_name, h.project_name)),
            }
            for h in held
        ],
        "expiring_within_7_days": sum(1 for e in endpoints if e.expires_at <= now + EXPIRING_SOON),
        "history": [{"day": day, "allocated": count} for day, count in history.items()],
        "names_unreadable": names_unreadable,
    }


def usage_table(report: dict[str, Any]) -> str:
    limit = report["limit"] if report["limit"] is not None else "none"
    lines = [
        f"scenario {report['scenario']}: {report['endpoints_in_use']} endpoint(s) in use over "
        f"the rolling {report['window_days']} days (limit: {limit}); "
        f"{report['expiring_within_7_days']} expire within 7 days; "
        f"{len(report['held'])} task(s) held back",
    ]
    if report["tasks"]:
        lines.append(f"{'task':36}  {'allocated (UTC)':20}  {'expires (UTC)':20}  name (project)")
        for task in report["tasks"]:
            lines.append(
                f"{task['task_id']:36}  {task['allocated_at']:20}  {task['expires_at']:20}  "
                f"{_named(task)}"
            )
    if report["held"]:
        lines.append("held back by the limit (they go through as endpoints free up):")
        lines.extend(f"  {h['task_id']}  since {h['since']}  {_named(h)}" for h in report["held"])
    busy_days = [h for h in report["history"] if h["allocated"]]
    if busy_days:
        lines.append(
            "allocated per day: " + ", ".join(f"{h['day']} {h['allocated']}" for h in busy_days)
        )
    if report.get("names_unreadable"):
        lines.append(f"names not shown: {report['names_unreadable']}")
    return "\n".join(lines)


def _named(task: dict[str, Any]) -> str:
    name = task.get("task_name") or "?"
    return f"{name} ({task.get('project_name') or task.get('project_id') or '?'})"
