"""The summary of one sync run: logged when it ends and kept in Redis (``poller:runs``).

The JSON shape is documented in docs/architecture.md ("Run summaries"); ``pwasync runs`` reads it.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from common.messages import SyncRequested

SCHEMA_VERSION = 1


@dataclass
class RunSummary:
    scenario: str
    trigger: str
    full: bool
    project_ids: list[str]
    task_ids: list[str]
    started_at: datetime
    correlation_id: str | None = None
    coalesced_correlation_ids: list[str] = field(default_factory=list)
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    finished_at: datetime | None = None
    status: str = "running"  # succeeded | failed | interrupted
    projects_listed: int = 0
    projects_read: int = 0
    projects_unchanged: int = 0
    projects_deleted: int = 0
    projects_skipped: Counter[str] = field(default_factory=Counter)
    tasks_published: int = 0
    tasks_unchanged: int = 0
    tasks_removed: int = 0
    removals_held: int = 0
    tasks_skipped: Counter[str] = field(default_factory=Counter)
    assignees_refused: Counter[str] = field(default_factory=Counter)  # by refusal code
    pwa_requests: int = 0
    errors: list[str] = field(default_factory=list)

    @classmethod
    def begin(
        cls,
        scenario: str,
        request: SyncRequested,
        *,
        started_at: datetime,
        correlation_id: str | None = None,
        coalesced: list[str] | None = None,
    ) -> RunSummary:
        return cls(
            scenario=scenario,
            trigger=request.trigger,
            full=request.full,
            project_ids=[str(p) for p in request.project_ids],
            task_ids=[str(t) for t in request.task_ids],
            started_at=started_at.astimezone(UTC),
            correlation_id=correlation_id,
            coalesced_correlation_ids=list(coalesced or []),
        )

    def finish(self, status: str, finished_at: datetime, error: str | None = None) -> None:
        self.status = status
        self.finished_at = finished_at.astimezone(UTC)
        if error:
            self.errors.append(error)

    def to_json(self) -> dict[str, Any]:
        duration = (
            round((self.finished_at - self.started_at).total_seconds(), 3)
            if self.finished_at
            else None
        )
        return {
            "v": SCHEMA_VERSION,
            "run_id": self.run_id,
            "scenario": self.scenario,
            "correlation_id": self.correlation_id,
            "coalesced_correlation_ids": self.coalesced_correlation_ids,
            "trigger": self.trigger,
            "full": self.full,
            "project_ids": self.project_ids,
            "task_ids": self.task_ids,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "duration_seconds": duration,
            "status": self.status,
            "projects": {
                "listed": self.projects_listed,
                "read": self.projects_read,
                "unchanged": self.projects_unchanged,
                "deleted": self.projects_deleted,
                "skipped": dict(sorted(self.projects_skipped.items())),
            },
            "tasks": {
                "published": self.tasks_published,
                "unchanged": self.tasks_unchanged,
                "removed": self.tasks_removed,
                "removals_held": self.removals_held,
                "skipped": dict(sorted(self.tasks_skipped.items())),
            },
            "assignees": {"refused": dict(sorted(self.assignees_refused.items()))},
            "pwa_requests": self.pwa_requests,
            "errors": self.errors,
        }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None
