"""The usage report of the interface page, as JSON and as a table (pure functions).

The interface page fixes ``scenario``, ``window_days``, ``endpoints_in_use``, ``limit``,
``tasks`` and ``held``; ``expiring_within_7_days`` and ``history`` (allocations per UTC day, last
30 days) are additions in the same style.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from services.ledger.endpoints import WINDOW, Endpoint, HeldTask

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
) -> dict[str, Any]:
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
            }
            for e in endpoints
        ],
        "held": [
            {
                "task_id": str(h.task_id),
                "project_id": str(h.project_id) if h.project_id else None,
                "since": _iso(h.since),
            }
            for h in held
        ],
        "expiring_within_7_days": sum(1 for e in endpoints if e.expires_at <= now + EXPIRING_SOON),
        "history": [{"day": day, "allocated": count} for day, count in history.items()],
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
        lines.append(f"{'task':36}  {'project':36}  {'allocated (UTC)':20}  expires (UTC)")
        for task in report["tasks"]:
            lines.append(
                f"{task['task_id']:36}  {task['project_id']:36}  "
                f"{task['allocated_at']:20}  {task['expires_at']}"
            )
    if report["held"]:
        lines.append("held back by the limit (they go through as endpoints free up):")
        lines.extend(f"  {h['task_id']} (since {h['since']})" for h in report["held"])
    busy_days = [h for h in report["history"] if h["allocated"]]
    if busy_days:
        lines.append(
            "allocated per day: " + ", ".join(f"{h['day']} {h['allocated']}" for h in busy_days)
        )
    return "\n".join(lines)
