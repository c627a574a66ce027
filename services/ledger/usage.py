"""The usage report of the interface page, as JSON and as a table (pure functions)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.ledger.endpoints import WINDOW, Endpoint


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def usage_report(scenario: str, endpoints: list[Endpoint], limit: int | None) -> dict[str, Any]:
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
        "held": [],
    }


def usage_table(report: dict[str, Any]) -> str:
    limit = report["limit"] if report["limit"] is not None else "none"
    lines = [
        f"scenario {report['scenario']}: {report['endpoints_in_use']} endpoint(s) in use over "
        f"the rolling {report['window_days']} days (limit: {limit})",
    ]
    if report["tasks"]:
        lines.append(f"{'task':36}  {'project':36}  {'allocated (UTC)':20}  expires (UTC)")
        for task in report["tasks"]:
            lines.append(
                f"{task['task_id']:36}  {task['project_id']:36}  "
                f"{task['allocated_at']:20}  {task['expires_at']}"
            )
    if report["held"]:
        lines.append(f"held back by the limit: {len(report['held'])} task(s)")
        lines.extend(f"  {h['task_id']} (since {h['since']})" for h in report["held"])
    return "\n".join(lines)
