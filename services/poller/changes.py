"""What a poll has to read and publish: the deciding logic of change detection (pure).

Every poll lists all projects (id, name, type and when it was last published: one request per
page of the list) and compares them with what the poller last read of each (``ProjectState``,
kept in Redis). Only projects whose publish date or type moved, or that are new since the sync
start, are read; a project read too soon after its publish to be trusted (ProjectData's
reporting lag, ``PlanSource.reread_after``) is read once more when that time has passed, once
per publish. Projects that vanished from the list were deleted. Within
a project read again, each selected task's content fingerprint is compared with the one last
published: equal means nothing to publish; a task published before that is no longer selected
(flag cleared, deleted, lost its dates, became a summary, its project became a master or
template) gets a removal.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from common.messages import TaskChanged
from services.poller.source import ProjectRow

#: The fields of a task.changed that are the task's content; revision and read time are not.
CONTENT_FIELDS = frozenset(
    {
        "project_id",
        "project_name",
        "task_id",
        "task_name",
        "start",
        "finish",
        "timezone",
        "assignees",
        "task_url",
    }
)


@dataclass(frozen=True)
class ProjectState:
    """What the poller last read of a project (ProjectModifiedDate and read time: PWA wall
    clock, so they compare with the feed's values without conversion)."""

    modified: datetime
    project_type: int
    read_at: datetime
    version: str | None = None  # ProjectRow.version, for sources that list one

    def to_json(self) -> str:
        data: dict[str, object] = {
            "modified": self.modified.isoformat(),
            "type": self.project_type,
            "read_at": self.read_at.isoformat(),
        }
        if self.version is not None:
            data["version"] = self.version
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> ProjectState:
        data = json.loads(text)
        return cls(
            datetime.fromisoformat(data["modified"]),
            int(data["type"]),
            datetime.fromisoformat(data["read_at"]),
            data.get("version"),
        )


@dataclass
class ProjectPlan:
    """The projects a poll reads, and what it learned from the list alone."""

    to_read: list[ProjectRow] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: int = 0
    before_sync_start: int = 0


def plan_projects(
    listed: list[ProjectRow],
    known: dict[str, ProjectState],
    *,
    sync_start: datetime,
    reread_after: timedelta,
    now: datetime,
    full: bool = False,
) -> ProjectPlan:
    """Decide which listed projects to read. ``sync_start`` and ``now`` are PWA wall clock.

    A project is read when ``full`` is set; when it is new to the poller and was published after
    the sync start (older ones are the "old data" PWASYNC_SYNC_START leaves alone); when its
    publish date or type differs from the last read; or, once, when the last read happened less
    than ``reread_after`` after its publish (the reporting feed may still have been catching
    up) and that time has now passed. Polls in between cost nothing for it.
    """
    plan = ProjectPlan()
    listed_ids = set()
    for project in sorted(listed, key=lambda p: (p.modified, str(p.project_id))):
        listed_ids.add(project.project_id)
        state = known.get(project.project_id)
        if full:
            plan.to_read.append(project)
        elif state is None:
            if project.modified > sync_start:
                plan.to_read.append(project)
            else:
                plan.before_sync_start += 1
        elif project.version is not None:
            # Planner: its listed version is the whole truth; its "modified" is our clock.
            if project.version != state.version:
                plan.to_read.append(project)
            else:
                plan.unchanged += 1
        elif (
            project.modified != state.modified
            or project.project_type != state.project_type
            or state.read_at < state.modified + reread_after <= now
        ):
            plan.to_read.append(project)
        else:
            plan.unchanged += 1
    plan.deleted = sorted((p for p in known if p not in listed_ids), key=str)
    return plan


def fingerprint(message: TaskChanged) -> str:
    """A digest of the task's content: equal fingerprints mean nothing to tell the writer.
    ``all_day`` counts only when set, so timed tasks keep the fingerprints they had."""
    fields = CONTENT_FIELDS | {"all_day"} if message.all_day else CONTENT_FIELDS
    content = message.model_dump(mode="json", include=set(fields))
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


@dataclass
class TaskDiff:
    upserts: list[tuple[TaskChanged, str]] = field(default_factory=list)
    unchanged: int = 0
    removals: list[str] = field(default_factory=list)


def diff_tasks(
    desired: list[TaskChanged],
    published: dict[str, str],
    *,
    scope: set[str] | None = None,
) -> TaskDiff:
    """Compare a project's selected tasks with the fingerprints last published for it.

    ``scope`` (a ``--task`` run) limits removals to those tasks: the others were not looked at.
    """
    diff = TaskDiff()
    wanted = set()
    for message in desired:
        wanted.add(message.task_id)
        digest = fingerprint(message)
        if published.get(message.task_id) == digest:
            diff.unchanged += 1
        else:
            diff.upserts.append((message, digest))
    diff.removals = sorted(
        (
            task_id
            for task_id in published
            if task_id not in wanted and (scope is None or task_id in scope)
        ),
        key=str,
    )
    return diff


#: What a removal adds to the revision it must order after. ProjectModifiedDate has millisecond
#: precision, so a later publish can never fall between the two.
REMOVAL_STEP = timedelta(microseconds=1)


def removal_revision(
    *,
    last_upsert: datetime | None,
    published: datetime | None,
    previous: datetime | None,
    now: datetime,
) -> datetime:
    """The revision a removal carries (UTC): after the task's last upsert, so the writer applies
    it whatever the PWA's clock says about ours, and in the PWA's clock, so the next publish of
    the task (a later ProjectModifiedDate) orders after it again.

    ``last_upsert`` is the revision the task was last published with; ``published`` the
    project's ProjectModifiedDate now (None: the project is gone), which a removal that came
    with a publish carries. A task recorded before revisions were kept (``last_upsert`` None)
    falls back to the project's ``previous`` publish or our clock, whichever is later.
    """
    if last_upsert is None:
        last_upsert = max(moment for moment in (previous, now) if moment is not None)
    candidates = [last_upsert.astimezone(UTC) + REMOVAL_STEP]
    if published is not None:
        candidates.append(published.astimezone(UTC))
    return max(candidates)
