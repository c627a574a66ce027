"""One sync run: find what changed in the published plans and tell the writers.

The runner lists the projects, lets ``changes.plan_projects`` decide which to read, reads only
those (tasks, assignments and the assigned resources: a constant number of queries per project,
whatever its size, plus a page per few hundred rows), selects the tasks, and publishes a
``task.changed`` for each task whose content fingerprint moved and a removal for each task that
left the selection. It takes its collaborators in (the plan source, publisher, state store,
clock), so it runs the same over ProjectData, the ProjectServer REST API or test doubles.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar
from zoneinfo import ZoneInfo

from common import metrics
from common.errors import NotAllConfirmed, Stopping
from common.logging import get_logger
from common.mailboxes import ANY_MAILBOX, MailboxPolicy
from common.messages import MAX_TASK_NAME, Assignee, SyncRequested, TaskChanged
from services.poller.changes import (
    ProjectState,
    diff_tasks,
    plan_projects,
    removal_revision,
)
from services.poller.deletion_guard import DeletionGuard
from services.poller.pwa_time import to_pwa_wall_clock, to_utc
from services.poller.read_ahead import read_ahead
from services.poller.run_summary import RunSummary
from services.poller.selection import (
    SelectedTask,
    Selection,
    SkipReason,
    project_skip_reason,
    select_tasks,
)
from services.poller.source import (
    AssignmentRow,
    PlanSource,
    ProjectRow,
    ResourceRow,
    TaskRow,
    UnpublishedProject,
    UnreadableRow,
)
from services.poller.state import PollerState

log = get_logger(__name__)

#: Hands a batch of task changes to the writers; returns once all are confirmed, else raises
#: ``NotAllConfirmed`` saying which were (those are recorded, the rest found again next run).
PublishTasks = Callable[[list[TaskChanged]], None]
#: Task changes in flight at once: a project's changes go out in windows of this many, each
#: recorded in Redis once confirmed, so a failure costs at most a window of republishing.
PUBLISH_WINDOW = 256
NO_GUARD = DeletionGuard(percent=100, min_tasks=0)
#: Why a task or project of an unreadable row gets nothing done to it (counted and logged).
UNREADABLE = "unreadable_row"
#: A draft that was never published: nothing of it is read yet.
NEVER_PUBLISHED = "never_published"
T = TypeVar("T")


def publish_windows(items: list[T]) -> Iterator[list[T]]:
    """``items`` in consecutive slices of ``PUBLISH_WINDOW``."""
    for start in range(0, len(items), PUBLISH_WINDOW):
        yield items[start : start + PUBLISH_WINDOW]


@dataclass
class PendingRemovals:
    """The removals one project needs, and what to record once they are published."""

    project_id: str
    project_name: str
    tasks: list[tuple[str, str, datetime]]  # task id, why it left the selection, its revision
    state: ProjectState | None  # saved after the removals; None: the project is gone


@dataclass
class ProjectRead:
    """What was read of one project, and when the reads began (its state's ``read_at``)."""

    read_at: datetime
    rows: list[TaskRow | UnreadableRow]
    assignments: list[AssignmentRow]


class SyncInterrupted(Stopping):
    """The process is stopping (or lost the run lock); the run is retried and resumes: what was
    done is recorded project by project."""


class SyncRunner:
    def __init__(
        self,
        *,
        scenario: str,
        feed: PlanSource,
        publish: PublishTasks,
        state: PollerState,
        pwa_zone: ZoneInfo,
        task_link: Callable[[str, str], str | None] = lambda _project, _task: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        should_stop: Callable[[], bool] = lambda: False,
        request_counter: Callable[[], int] = lambda: 0,
        deletion_guard: DeletionGuard = NO_GUARD,
        mailboxes: MailboxPolicy = ANY_MAILBOX,
        parallel_reads: int = 1,
    ) -> None:
        self._scenario = scenario
        self._feed = feed
        self._publish = publish
        self._state = state
        self._zone = pwa_zone
        self._task_link = task_link
        self._clock = clock
        self._should_stop = should_stop
        self._requests = request_counter
        self._guard = deletion_guard
        self._mailboxes = mailboxes
        self._parallel_reads = parallel_reads

    def run(
        self,
        request: SyncRequested,
        *,
        correlation_id: str | None = None,
        coalesced: list[str] | None = None,
    ) -> RunSummary:
        summary = RunSummary.begin(
            self._scenario,
            request,
            started_at=self._clock(),
            correlation_id=correlation_id,
            coalesced=coalesced,
        )
        requests_before = self._requests()
        log.info("sync run started", run_id=summary.run_id, **_request_fields(request))
        try:
            self._run(request, summary)
        except Stopping as exc:  # SyncInterrupted, or a wait cut short by SIGTERM
            self._close(summary, "interrupted", requests_before, str(exc))
            raise
        except Exception as exc:
            self._close(summary, "failed", requests_before, str(exc))
            raise
        self._close(summary, "succeeded", requests_before)
        return summary

    def _close(
        self, summary: RunSummary, status: str, requests_before: int, error: str | None = None
    ) -> None:
        summary.pwa_requests = self._requests() - requests_before
        summary.finish(status, self._clock(), error)
        record = summary.to_json()
        _observe(summary, record)
        try:
            self._state.record_run(record)
        except Exception as exc:  # noqa: BLE001 - the summary is logged below either way
            log.error("could not keep the run summary in Redis", error=str(exc))
        level = log.info if status == "succeeded" else log.warning
        level("sync run finished", **record)

    # --- the run -------------------------------------------------------------------------

    def _run(self, request: SyncRequested, summary: RunSummary) -> None:
        known = self._state.projects()
        synced_before = self._state.count_published(list(known))
        task_scope = set(request.task_ids) or None
        if request.project_ids or request.task_ids:
            to_read, deleted = self._scoped_projects(request, known, summary)
        else:
            listed, unreadable = self._listed_projects(summary)
            summary.projects_listed = len(listed) + len(unreadable)
            start = self._state.start()
            plan = plan_projects(
                listed,
                known,
                sync_start=start if start is not None else datetime.min,
                reread_after=self._feed.reread_after,
                now=to_pwa_wall_clock(self._clock(), self._zone),
                full=request.full,
            )
            # A project whose row cannot be read is not gone: its tasks keep their events.
            to_read, deleted = plan.to_read, [p for p in plan.deleted if p not in unreadable]
            summary.projects_unchanged = plan.unchanged
            if plan.before_sync_start:
                summary.projects_skipped["before_sync_start"] = plan.before_sync_start

        pending = [
            self._deleted_project(project_id, known.get(project_id)) for project_id in deleted
        ]
        resources: dict[str, ResourceRow] = {}
        reads = read_ahead(to_read, self._read_project, self._parallel_reads)
        with contextlib.closing(reads):
            for index, (project, read) in enumerate(reads):
                if self._should_stop():
                    raise SyncInterrupted(
                        f"stopping: {len(to_read) - index} of {len(to_read)} projects left"
                    )
                removals = self._sync_project(
                    project, read, known.get(project.project_id), resources, task_scope, summary
                )
                if removals is not None:
                    pending.append(removals)
        self._apply_removals(pending, request, synced_before, summary)

    def _scoped_projects(
        self, request: SyncRequested, known: dict[str, ProjectState], summary: RunSummary
    ) -> tuple[list[ProjectRow], list[str]]:
        project_ids = set(request.project_ids)
        if request.task_ids:
            project_ids |= self._feed.task_projects(list(request.task_ids))
        if not project_ids:
            return [], []
        listed, unreadable = self._listed_projects(summary, sorted(project_ids, key=str))
        summary.projects_listed = len(listed) + len(unreadable)
        found = {p.project_id for p in listed} | unreadable
        deleted = sorted((p for p in request.project_ids if p in known and p not in found), key=str)
        return sorted(listed, key=lambda p: p.modified), deleted

    def _listed_projects(
        self, summary: RunSummary, project_ids: list[str] | None = None
    ) -> tuple[list[ProjectRow], set[str]]:
        """The readable project rows, and the ids of the others: rows that cannot be read
        (logged) and drafts never published. Neither is read, nor taken for deleted."""
        listed, unreadable = [], set()
        for row in self._feed.projects(project_ids=project_ids):
            if isinstance(row, ProjectRow):
                listed.append(row)
                continue
            if isinstance(row, UnpublishedProject):
                summary.projects_skipped[NEVER_PUBLISHED] += 1
                unreadable.add(row.key)
                log.debug("project never published; nothing to read", project=row.name)
                continue
            summary.projects_skipped[UNREADABLE] += 1
            if row.key is not None:
                unreadable.add(row.key)
            log.error(
                "project row unreadable; the project is left as it was",
                project_id=str(row.key) if row.key else None,
                project=row.name,
                problem=row.problem,
            )
        return listed, unreadable

    def _read_project(self, project: ProjectRow) -> ProjectRead | None:
        """A project's tasks and assignments (None: a project skipped has nothing read). Runs on
        a read-ahead thread: it reads and nothing else."""
        if project_skip_reason(project) is not None:
            return None
        read_at = self._clock()
        return ProjectRead(
            read_at,
            list(self._feed.tasks(project.project_id)),
            list(self._feed.assignments(project.project_id)),
        )

    def _sync_project(
        self,
        project: ProjectRow,
        read: ProjectRead | None,
        previous: ProjectState | None,
        resources: dict[str, ResourceRow],
        task_scope: set[str] | None,
        summary: RunSummary,
    ) -> PendingRemovals | None:
        """Publish the project's upserts; return its removals (applied after the guard)."""
        read_at = read.read_at if read is not None else self._clock()
        revision = to_utc(project.modified, self._zone)
        reason = project_skip_reason(project)
        if reason is not None or read is None:  # a skipped project was not read
            summary.projects_skipped[str(reason)] += 1
            log.info(
                "project skipped",
                project_id=str(project.project_id),
                project=project.name,
                reason=str(reason),
            )
            desired: list[TaskChanged] = []
            why_not = {}
        else:
            summary.projects_read += 1
            desired, why_not = self._desired_tasks(
                project, read, resources, task_scope, revision, summary
            )

        diff = diff_tasks(
            desired, self._state.published_tasks(project.project_id), scope=task_scope
        )
        # What could not be read is neither synced nor removed: it keeps the events it has.
        diff.removals = [t for t in diff.removals if why_not.get(t) != UNREADABLE]
        for window in publish_windows(diff.upserts):
            self._publish_upserts(project.project_id, window, summary)
        summary.tasks_unchanged += diff.unchanged
        # A --task run looked at some tasks only; the project is not up to date because of it.
        state = (
            ProjectState(
                project.modified,
                project.project_type,
                to_pwa_wall_clock(read_at, self._zone),
                project.version,
            )
            if task_scope is None
            else None
        )
        if diff.removals:
            revisions = self._removal_revisions(
                project.project_id, diff.removals, revision, previous, read_at
            )
            return PendingRemovals(
                project.project_id,
                project.name,
                [
                    (t, str(reason or why_not.get(t, "deleted")), revisions[t])
                    for t in diff.removals
                ],
                state,
            )
        if state is not None:
            self._state.save_project(project.project_id, state)
        return None

    def _publish_upserts(
        self, project_id: str, upserts: list[tuple[TaskChanged, str]], summary: RunSummary
    ) -> None:
        """Publish a window of upserts and record the confirmed ones' fingerprints."""
        confirmed, failure = self._publish_confirmed([message for message, _ in upserts])
        self._state.record_published(
            project_id,
            [(upserts[n][0].task_id, upserts[n][1], upserts[n][0].revision) for n in confirmed],
        )
        summary.tasks_published += len(confirmed)
        if failure is not None:
            raise failure

    def _publish_confirmed(
        self, messages: list[TaskChanged]
    ) -> tuple[list[int], BaseException | None]:
        """The positions of the messages the broker confirmed, and the failure of the others
        (raised by the caller once it has recorded the confirmed ones)."""
        try:
            self._publish(messages)
        except NotAllConfirmed as exc:
            return sorted(exc.confirmed), exc.cause
        return list(range(len(messages))), None

    def _desired_tasks(
        self,
        project: ProjectRow,
        read: ProjectRead,
        resources: dict[str, ResourceRow],
        task_scope: set[str] | None,
        revision: datetime,
        summary: RunSummary,
    ) -> tuple[list[TaskChanged], dict[str, str]]:
        """The task.changed of every selected task, and why each other task is not selected (an
        unreadable row: ``UNREADABLE``, and the task is left as it was)."""
        rows = read.rows
        if task_scope is not None:
            rows = [r for r in rows if _row_task(r) in task_scope]
        tasks = [r for r in rows if isinstance(r, TaskRow)]
        unreadable = self._unreadable_tasks(project, rows, summary)
        assignments = read.assignments
        resources.update((a.resource_id, a.resource) for a in assignments if a.resource)
        missing = {a.resource_id for a in assignments} - resources.keys()
        if missing:
            resources.update((r.resource_id, r) for r in self._feed.resources(missing))
        selection = select_tasks(tasks, assignments, resources, self._mailboxes)
        self._log_skips(project, selection)
        summary.tasks_skipped.update(selection.skip_counts())
        summary.assignees_refused.update(selection.refusal_counts())
        messages = [self._message(project, selected, revision) for selected in selection.selected]
        why_not = {s.task.task_id: str(s.reason) for s in selection.skipped}
        return messages, {**why_not, **dict.fromkeys(unreadable, UNREADABLE)}

    def _unreadable_tasks(
        self, project: ProjectRow, rows: list[TaskRow | UnreadableRow], summary: RunSummary
    ) -> set[str]:
        unreadable = set()
        for row in rows:
            if isinstance(row, UnreadableRow):
                summary.tasks_skipped[UNREADABLE] += 1
                if row.key is not None:
                    unreadable.add(row.key)
                log.error(
                    "task row unreadable; the task is left as it was",
                    task_id=str(row.key) if row.key else None,
                    task=row.name,
                    project=project.name,
                    problem=row.problem,
                )
        return unreadable

    def _deleted_project(self, project_id: str, previous: ProjectState | None) -> PendingRemovals:
        published = sorted(self._state.published_tasks(project_id), key=str)
        log.info(
            "project deleted from PWA; its tasks' events go",
            project_id=str(project_id),
            tasks=len(published),
        )
        revisions = self._removal_revisions(project_id, published, None, previous, self._clock())
        return PendingRemovals(
            project_id,
            "",
            [(task_id, "project_deleted", revisions[task_id]) for task_id in published],
            None,
        )

    def _removal_revisions(
        self,
        project_id: str,
        task_ids: list[str],
        published: datetime | None,
        previous: ProjectState | None,
        now: datetime,
    ) -> dict[str, datetime]:
        """Each removal's revision: after the task's last upsert (``removal_revision``)."""
        last = self._state.published_revisions(project_id)
        previous_utc = to_utc(previous.modified, self._zone) if previous else None
        return {
            task_id: removal_revision(
                last_upsert=last.get(task_id), published=published, previous=previous_utc, now=now
            )
            for task_id in task_ids
        }

    def _apply_removals(
        self,
        pending: list[PendingRemovals],
        request: SyncRequested,
        synced_before: int,
        summary: RunSummary,
    ) -> None:
        removing = sum(len(p.tasks) for p in pending)
        if removing and not request.allow_deletions and self._guard.trips(removing, synced_before):
            # Nothing of these projects is recorded, so every run finds the removals again.
            summary.removals_held = removing
            alarm = {
                "run_id": summary.run_id,
                "at": self._clock().astimezone(UTC).isoformat(),
                "removing": removing,
                "synced": synced_before,
                "percent": self._guard.percent,
                "projects_deleted": sum(1 for p in pending if p.state is None),
            }
            self._state.raise_deletion_alarm(alarm)
            log.error(
                "deletion guard: removals held back; confirm with "
                "`pwasync sync-now --allow-deletions` if they are intended",
                **alarm,
            )
            return
        for removals in pending:
            for window in publish_windows(removals.tasks):
                self._publish_removals(removals, window, summary)
            if removals.state is None:
                self._state.forget_project(removals.project_id)
                summary.projects_deleted += 1
            else:
                self._state.save_project(removals.project_id, removals.state)
        self._state.clear_deletion_alarm()

    def _publish_removals(
        self,
        removals: PendingRemovals,
        window: list[tuple[str, str, datetime]],
        summary: RunSummary,
    ) -> None:
        """Publish a window of a project's removals and forget the confirmed ones' tasks."""
        confirmed, failure = self._publish_confirmed(
            [self._removal(removals, task_id, revision) for task_id, _, revision in window]
        )
        self._state.record_removed(removals.project_id, [window[n][0] for n in confirmed])
        for n in confirmed:
            task_id, why, _ = window[n]
            log.info(
                "task left the selection; removal published",
                task_id=str(task_id),
                project_id=str(removals.project_id),
                reason=why,
            )
        summary.tasks_removed += len(confirmed)
        if failure is not None:
            raise failure

    def _removal(self, removals: PendingRemovals, task_id: str, revision: datetime) -> TaskChanged:
        return TaskChanged(
            scenario=self._scenario,
            change="remove",
            project_id=removals.project_id,
            project_name=removals.project_name,
            task_id=task_id,
            timezone=str(self._zone.key),
            revision=revision,
        )

    def _message(
        self, project: ProjectRow, selected: SelectedTask, revision: datetime
    ) -> TaskChanged:
        task = selected.task
        self._log_refusals(project, selected)
        if not any(a.email for a in selected.deliverable):
            log.warning(
                "flagged task has no assignee with a usable e-mail address; it gets no event",
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
            start_utc=to_utc(task.start, self._zone) if task.start else None,
            finish_utc=to_utc(task.finish, self._zone) if task.finish else None,
            timezone=str(self._zone.key),
            assignees=[
                Assignee(resource_id=a.resource_id, name=a.name, email=a.email)
                for a in selected.deliverable
            ],
            task_url=self._task_link(project.project_id, task.task_id),
            all_day=task.all_day,
            revision=revision,
        )

    def _log_refusals(self, project: ProjectRow, selected: SelectedTask) -> None:
        for assignee in selected.assignees:
            if assignee.refused is not None:
                log.warning(
                    "assignee's e-mail address may not receive events; left out",
                    task_id=str(selected.task.task_id),
                    task=selected.task.name,
                    project=project.name,
                    resource_id=str(assignee.resource_id),
                    assignee=assignee.name,
                    reason=assignee.refused.code,
                    detail=assignee.refused.reason,
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


def _row_task(row: TaskRow | UnreadableRow) -> str | None:
    return row.task_id if isinstance(row, TaskRow) else row.key


def _request_fields(request: SyncRequested) -> dict[str, object]:
    return {
        "trigger": request.trigger,
        "full": request.full,
        "project_ids": [str(p) for p in request.project_ids],
        "task_ids": [str(t) for t in request.task_ids],
    }


def _observe(summary: RunSummary, record: dict[str, object]) -> None:
    metrics.SYNC_RUNS.labels(summary.status).inc()
    if record.get("duration_seconds") is not None:
        metrics.POLL_SECONDS.observe(float(record["duration_seconds"]))  # type: ignore[arg-type]
    for outcome, count in (
        ("published", summary.tasks_published),
        ("unchanged", summary.tasks_unchanged),
        ("removed", summary.tasks_removed),
        ("removal_held", summary.removals_held),
    ):
        if count:
            metrics.TASKS.labels(outcome, "").inc(count)
    for reason, count in summary.tasks_skipped.items():
        metrics.TASKS.labels("skipped", reason).inc(count)
