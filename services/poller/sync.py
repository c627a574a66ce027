"""One sync run: read what was published since the watermark and publish ``task.changed``.

The runner takes its collaborators in (feed client, publisher function, watermark store, clock),
so it runs the same against the sandbox, the real service or test doubles.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID
from zoneinfo import ZoneInfo

from common.errors import RetryableError
from common.logging import get_logger
from common.messages import MAX_TASK_NAME, Assignee, SyncRequested, TaskChanged
from services.poller.projectdata import ProjectDataClient, ProjectRow, ResourceRow
from services.poller.selection import (
    SelectedTask,
    Selection,
    SkipReason,
    project_skip_reason,
    select_tasks,
)
from services.poller.watermark import WatermarkStore

log = get_logger(__name__)

PublishTask = Callable[[TaskChanged], None]


class SyncInterrupted(RetryableError):
    """The process is stopping; the run is retried (and resumes past the watermark)."""


@dataclass
class RunSummary:
    trigger: str
    projects_read: int = 0
    projects_skipped: Counter[str] = field(default_factory=Counter)
    tasks_published: int = 0
    tasks_skipped: Counter[str] = field(default_factory=Counter)
    watermark: datetime | None = None

    def as_log(self) -> dict[str, object]:
        return {
            "trigger": self.trigger,
            "projects_read": self.projects_read,
            "projects_skipped": dict(self.projects_skipped),
            "tasks_published": self.tasks_published,
            "tasks_skipped": dict(self.tasks_skipped),
            "watermark": self.watermark.isoformat() if self.watermark else None,
        }


class SyncRunner:
    def __init__(
        self,
        *,
        scenario: str,
        feed: ProjectDataClient,
        publish: PublishTask,
        watermarks: WatermarkStore,
        flag_property: str,
        pwa_zone: ZoneInfo,
        stop: threading.Event | None = None,
    ) -> None:
        self._scenario = scenario
        self._feed = feed
        self._publish = publish
        self._watermarks = watermarks
        self._flag_property = flag_property
        self._pwa_zone = pwa_zone
        self._stop = stop or threading.Event()

    def run(self, request: SyncRequested) -> RunSummary:
        summary = RunSummary(trigger=request.trigger)
        scoped = bool(request.project_ids or request.task_ids)
        projects = self._projects_to_read(request)
        resources: dict[UUID, ResourceRow] = {}
        task_scope = set(request.task_ids)

        for index, project in enumerate(projects):
            if self._stop.is_set():
                # The watermark already covers the projects done; the rest runs on the retry.
                raise SyncInterrupted(
                    f"stopping: {len(projects) - index} of {len(projects)} projects left"
                )
            reason = project_skip_reason(project)
            if reason is not None:
                summary.projects_skipped[str(reason)] += 1
                log.info(
                    "project skipped",
                    project_id=str(project.project_id),
                    project=project.name,
                    reason=str(reason),
                )
            else:
                self._sync_project(project, resources, task_scope, summary)
            # Advance past a timestamp only once every project carrying it is done, so a
            # crash between two projects with the same ProjectModifiedDate skips neither.
            last_of_its_time = index + 1 == len(projects) or projects[index + 1].modified > (
                project.modified
            )
            if not scoped and last_of_its_time:
                self._watermarks.advance(project.modified)
        summary.watermark = None if scoped else self._watermarks.get()
        log.info("sync run finished", **summary.as_log())
        return summary

    def _projects_to_read(self, request: SyncRequested) -> list[ProjectRow]:
        if request.project_ids or request.task_ids:
            project_ids = set(request.project_ids)
            if request.task_ids:
                project_ids |= self._feed.task_projects(list(request.task_ids))
            if not project_ids:
                return []
            return list(self._feed.projects(project_ids=sorted(project_ids, key=str)))
        watermark = None if request.full else self._watermarks.get()
        return list(self._feed.projects(modified_after=watermark))

    def _sync_project(
        self,
        project: ProjectRow,
        resources: dict[UUID, ResourceRow],
        task_scope: set[UUID],
        summary: RunSummary,
    ) -> None:
        summary.projects_read += 1
        tasks = list(self._feed.tasks(project.project_id, self._flag_property))
        if task_scope:
            tasks = [t for t in tasks if t.task_id in task_scope]
        assignments = list(self._feed.assignments(project.project_id))
        missing = {a.resource_id for a in assignments} - resources.keys()
        if missing:
            resources.update((r.resource_id, r) for r in self._feed.resources(missing))

        selection = select_tasks(tasks, assignments, resources)
        self._log_skips(project, selection)
        summary.tasks_skipped.update(selection.skip_counts())
        revision = project.modified.replace(tzinfo=self._pwa_zone).astimezone(UTC)
        for selected in selection.selected:
            self._publish(self._message(project, selected, revision))
            summary.tasks_published += 1

    def _message(
        self, project: ProjectRow, selected: SelectedTask, revision: datetime
    ) -> TaskChanged:
        task = selected.task
        if not selected.assignees or not any(a.email for a in selected.assignees):
            log.warning(
                "flagged task has no assignee with an e-mail address; it gets no event",
                task_id=str(task.task_id),
                task=task.name,
                project=project.name,
            )
        return TaskChanged(
            scenario=self._scenario,
            project_id=project.project_id,
            project_name=project.name,
            task_id=task.task_id,
            task_name=task.name[:MAX_TASK_NAME],
            start=task.start,
            finish=task.finish,
            timezone=str(self._pwa_zone.key),
            assignees=[
                Assignee(resource_id=a.resource_id, name=a.name, email=a.email)
                for a in selected.assignees
            ],
            revision=revision,
        )

    def _log_skips(self, project: ProjectRow, selection: Selection) -> None:
        for skipped in selection.skipped:
            # Unflagged tasks are the normal case and would drown the log; they are counted in
            # the run summary and visible at debug level.
            level = log.debug if skipped.reason is SkipReason.NOT_FLAGGED else log.info
            level(
                "task skipped",
                task_id=str(skipped.task.task_id),
                task=skipped.task.name,
                project=project.name,
                reason=str(skipped.reason),
            )
