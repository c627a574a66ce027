"""Which task ``pwasync explain TASK`` means: an id, or a name read from the plans.

A GUID is an id: the plans are asked which project holds it and only that project is read; an
id the plans do not know but pwasync's own records do (a task deleted from its plan that still
has events, an endpoint or dead letters) is explained from those. Anything else is a name
first: every readable project's tasks are read (one request per project, and a page per few
hundred tasks) and the name compared without regard to case. One match is the task; several are
listed for the operator to choose by id; with none, a query that can be an id (Planner's are
not GUIDs) is looked up as one, and failing that the tasks whose name contains it are listed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from uuid import UUID

from common.ids import canonical_id
from services.poller.source import (
    PlanSource,
    ProjectListing,
    ProjectRow,
    TaskRow,
    UnreadableRow,
)

#: Most similar names listed when nothing matches exactly.
SIMILAR_SHOWN = 10


@dataclass(frozen=True)
class Candidate:
    task_id: str
    name: str
    project_id: str
    project_name: str


@dataclass(frozen=True)
class Located:
    """The task, with its project and row as the plan has them now; ``row`` None: the plans do
    not hold it (``project`` then None too), only pwasync's records do."""

    task_id: str
    project: ProjectListing | None
    row: TaskRow | UnreadableRow | None


@dataclass(frozen=True)
class Ambiguous:
    query: str
    candidates: list[Candidate]


@dataclass(frozen=True)
class NotFound:
    query: str
    similar: list[Candidate]
    searched_names: bool  # False: an id, which no name search was made for


Lookup = Located | Ambiguous | NotFound


def as_task_id(text: str) -> str | None:
    """The query as an id (``common.ids``), or None when it cannot be one (a space in it)."""
    try:
        return canonical_id(text)
    except ValueError:
        return None


def find_task(feed: PlanSource, query: str, recorded: Callable[[str], bool]) -> Lookup:
    """``recorded(task_id)``: whether pwasync's own records know that task id.

    A GUID is looked up as an id only (nobody names a task with one); any other query as a
    name first (an exact name is what operators type), then as a source's own id (Planner's)."""
    task_id = as_task_id(query)
    if is_guid(query):
        assert task_id is not None
        return _by_id(feed, task_id, recorded) or NotFound(query, [], searched_names=False)
    by_name = _by_name(feed, query)
    if not isinstance(by_name, NotFound) or task_id is None:
        return by_name
    return _by_id(feed, task_id, recorded) or by_name


def _by_id(feed: PlanSource, task_id: str, recorded: Callable[[str], bool]) -> Located | None:
    try:
        projects = feed.task_projects([task_id])
    except ValueError:  # the source's ids have another form (a GUID source, an opaque id)
        return None
    for project_id in sorted(projects):
        located = _in_project(feed, project_id, task_id)
        if located is not None:
            return located
    return Located(task_id, None, None) if recorded(task_id) else None


def _in_project(feed: PlanSource, project_id: str, task_id: str) -> Located | None:
    project = next(iter(feed.projects(project_ids=[project_id])), None)
    for row in feed.tasks(project_id):
        if _row_id(row) == task_id:
            return Located(task_id, project, row)
    return None


def _by_name(feed: PlanSource, query: str) -> Lookup:
    wanted = query.strip().casefold()
    exact: list[tuple[ProjectRow, TaskRow | UnreadableRow]] = []
    similar: list[Candidate] = []
    for project, row in _every_task(feed):
        name = row.name.casefold()
        if name == wanted:
            exact.append((project, row))
        elif wanted in name and len(similar) < SIMILAR_SHOWN:
            similar.append(_candidate(project, row))
    if len(exact) == 1:
        project, row = exact[0]
        return Located(_row_id(row), project, row)
    if exact:
        return Ambiguous(query, [_candidate(p, r) for p, r in exact])
    return NotFound(query, similar, searched_names=True)


def _every_task(feed: PlanSource) -> Iterator[tuple[ProjectRow, TaskRow | UnreadableRow]]:
    """Every task of every readable published project (drafts list no tasks)."""
    for project in feed.projects():
        if isinstance(project, ProjectRow):
            for row in feed.tasks(project.project_id):
                yield project, row


def _candidate(project: ProjectRow, row: TaskRow | UnreadableRow) -> Candidate:
    return Candidate(_row_id(row) or "?", row.name, project.project_id, project.name)


def _row_id(row: TaskRow | UnreadableRow) -> str | None:
    return row.task_id if isinstance(row, TaskRow) else row.key


def is_guid(text: str) -> bool:
    """Whether the query is a GUID in any written form."""
    try:
        UUID(text.strip())
    except ValueError:
        return False
    return True
