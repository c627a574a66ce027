"""The plans, for the operator's commands that read them (explain, usage names, check).

One place opens the configured plan source for a one-shot command, the way the poller opens
it, so every command reads the same plans through the same seam.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from typing import Any

import httpx
import redis

from common.mailboxes import MailboxPolicy
from common.settings import Settings
from services.ledger.usage import Names
from services.poller.selection import project_skip_reason, select_tasks, task_assignees
from services.poller.source import (
    AssignmentRow,
    PlanSource,
    ProjectRow,
    ResourceRow,
    TaskRow,
    UnpublishedProject,
)
from services.poller.sources import OpenedSource, open_plan_source

#: Most projects read looking for an assignee (one flagged task with one is usually in the first).
ASSIGNEE_SEARCH_PROJECTS = 20


@dataclass(frozen=True)
class FoundAssignee:
    mailbox: str
    assignee: str
    task: str
    project: str


def open_plans(settings: Settings, http: httpx.Client, client: redis.Redis | None) -> OpenedSource:
    """The configured plan source (``PWASYNC_SOURCE``), opened as the poller opens it but
    read-only: a reader that keeps change-detection state of its own (Dataverse's delta links)
    keeps nothing of what these commands read. ConfigError when this host is not set up to
    read the plans."""
    return open_plan_source(settings, http, client, read_only=True)


def plan_names(feed: PlanSource, tasks: Iterable[tuple[Any, Any]]) -> dict[str, Names]:
    """The names the plans give now to these (task id, project id) pairs, by task id (text):
    one read of the projects, and each project's tasks once. A task no longer in its plan has
    no task name; a project no longer there, no project name either."""
    by_project: dict[Any, set[str]] = {}
    for task_id, project_id in tasks:
        by_project.setdefault(project_id, set()).add(str(task_id))
    projects: dict[str, str] = {}
    published: set[str] = set()  # a draft lists no tasks
    for row in feed.projects(project_ids=sorted(by_project, key=str)):
        if isinstance(row, ProjectRow):
            projects[str(row.project_id)] = row.name
            published.add(str(row.project_id))
        elif isinstance(row, UnpublishedProject):
            projects[str(row.key)] = row.name
    names = {}
    for project_id, wanted in by_project.items():
        found = {}
        if str(project_id) in published:
            found = {
                str(row.task_id): row.name
                for row in feed.tasks(project_id)
                if isinstance(row, TaskRow) and str(row.task_id) in wanted
            }
        for task_id in wanted:
            names[task_id] = Names(found.get(task_id), projects.get(str(project_id)))
    return names


def an_assignee_mailbox(
    feed: PlanSource, mailboxes: MailboxPolicy, *, most_projects: int = ASSIGNEE_SEARCH_PROJECTS
) -> FoundAssignee | None:
    """One mailbox the sync writes to, for ``pwasync check``: the first assignee with an
    accepted address of the first selected task (projects in listing order); failing that, any
    assignee with an accepted address; None when the first ``most_projects`` have none."""
    fallback = None
    projects = (p for p in feed.projects() if isinstance(p, ProjectRow))
    for project in islice(projects, most_projects):
        assignments = list(feed.assignments(project.project_id))
        if not assignments:
            continue
        resources = {a.resource_id: a.resource for a in assignments if a.resource}
        missing = {a.resource_id for a in assignments} - resources.keys()
        if missing:
            resources.update((r.resource_id, r) for r in feed.resources(missing))
        tasks = [r for r in feed.tasks(project.project_id) if isinstance(r, TaskRow)]
        names = {t.task_id: t.name for t in tasks}
        if project_skip_reason(project) is None:
            for selected in select_tasks(tasks, assignments, resources, mailboxes).selected:
                for assignee in selected.deliverable:
                    if assignee.email:
                        return FoundAssignee(
                            assignee.email, assignee.name, selected.task.name, project.name
                        )
        if fallback is None:
            fallback = _any_assignee(project, assignments, resources, mailboxes, names)
    return fallback


def _any_assignee(
    project: ProjectRow,
    assignments: list[AssignmentRow],
    resources: dict[Any, ResourceRow],
    mailboxes: MailboxPolicy,
    task_names: dict[Any, str],
) -> FoundAssignee | None:
    for assignment in assignments:
        for assignee in task_assignees([assignment], resources, mailboxes):
            if assignee.email and assignee.refused is None:
                task = task_names.get(assignment.task_id, str(assignment.task_id))
                return FoundAssignee(assignee.email, assignee.name, task, project.name)
    return None
