"""The poller's state as metrics for the alert rules (deploy/prometheus): read from Redis when
Prometheus scrapes, not kept per process, so every replica reports the scenario's truth (the
replica that ran the last sync, or raised the alarm, may not be the one scraped)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Protocol

from common import metrics
from common.schedule import Schedule

DAY_SECONDS = 86_400


class ObservedState(Protocol):
    def runs(self, limit: int = 20) -> list[dict[str, Any]]: ...

    def deletion_alarm(self) -> dict[str, Any] | None: ...


def schedule_interval_seconds(schedule: Schedule) -> int:
    """The longest time between two scheduled runs; 0 for on_demand."""
    if schedule.kind == "every":
        assert schedule.every_minutes is not None
        return schedule.every_minutes * 60
    return {"on_demand": 0, "daily": DAY_SECONDS, "weekly": 7 * DAY_SECONDS}[schedule.kind]


def last_success(runs: list[dict[str, Any]]) -> float | None:
    """Unix time of the newest succeeded run in the history (newest first), if any."""
    for run in runs:
        if run.get("status") == "succeeded" and run.get("finished_at"):
            return datetime.fromisoformat(run["finished_at"]).timestamp()
    return None


def observe_poller_state(
    state: ObservedState, schedule: Schedule, *, started: float | None = None
) -> None:
    """Register the scrape-time readings. Without a successful run in the history the
    process's start counts, so a schedule that never fires still trips the alert in time."""
    started = time.time() if started is None else started
    metrics.SYNC_SCHEDULE_INTERVAL.set(schedule_interval_seconds(schedule))
    metrics.LAST_SUCCESSFUL_SYNC.set_function(
        metrics.reading(lambda: last_success(state.runs(limit=200)) or started)
    )
    metrics.DELETION_GUARD_ALARM.set_function(
        metrics.reading(lambda: 1.0 if state.deletion_alarm() else 0.0)
    )
