"""What the plans say: the one seam between the sync and whichever API answers.

The sync runner, change detection, selection, fingerprints, removals and the deletion guard
see only these rows and the ``PlanSource`` protocol. A reader (ProjectData, the ProjectServer
REST API, later Planner) turns its API's answers into them, and keeps everything about that API
(paths, property names, value forms, paging, fallbacks) to itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from common.ids import canonical_id
from common.messages import within_project_dates
from services.poller import odata

T = TypeVar("T")


@dataclass(frozen=True)
class ProjectRow:
    project_id: str
    name: str
    project_type: int
    modified: datetime  # when it was last published, PWA wall clock
    # A source whose plans carry no trustworthy modified date (basic Planner) names the listed
    # state of the project's content here, and ``modified`` is when it was listed: change
    # detection compares versions then, not dates.
    version: str | None = None


@dataclass(frozen=True)
class UnpublishedProject:
    """A project that exists only as a draft (the ProjectServer API lists drafts with
    ``LastPublishedDate`` 0001-01-01): nothing of it is read, and it is not taken for deleted."""

    key: str
    name: str


@dataclass(frozen=True)
class TaskRow:
    project_id: str
    task_id: str
    name: str
    start: datetime | None
    finish: datetime | None
    is_summary: bool
    is_project_summary: bool
    flagged: bool
    # Dates that are days (basic Planner): start and finish are midnights, the finish the day
    # after the last day, and the task's events are all-day events.
    all_day: bool = False


@dataclass(frozen=True)
class UnreadableRow:
    """A row that cannot be understood (a malformed value). The task or project it stands for
    is left as it was: neither synced nor removed, and the run goes on."""

    key: str | None  # the task or project id; None when even that is unreadable
    name: str
    problem: str


@dataclass(frozen=True)
class ResourceRow:
    resource_id: str
    name: str
    email: str | None


@dataclass(frozen=True)
class AssignmentRow:
    task_id: str
    resource_id: str
    resource_name: str
    # The assignee, when the API answered it with the assignment (with an e-mail address);
    # None: the runner looks the resource up through ``PlanSource.resources``.
    resource: ResourceRow | None = None


ProjectListing = ProjectRow | UnpublishedProject | UnreadableRow


class PlanSource(Protocol):
    """What a reader of plans offers the sync. Every method reads; none writes."""

    #: The API that answers, as PWASYNC_PWA_API names it ("projectdata", "projectserver").
    api: str
    #: How long after a publish a project's content may still change in what this API reports
    #: (ProjectData's reporting lag); a project read sooner is read once more after it.
    reread_after: timedelta

    @property
    def requests_made(self) -> int: ...

    def projects(self, *, project_ids: list[str] | None = None) -> Iterator[ProjectListing]:
        """Every project (or the given ones) with what change detection needs."""
        ...

    def tasks(self, project_id: str) -> Iterator[TaskRow | UnreadableRow]:
        """One project's tasks, with the flag value."""
        ...

    def assignments(self, project_id: str) -> Iterator[AssignmentRow]:
        """One project's assignments (the assignee's e-mail address where the API has it)."""
        ...

    def resources(self, resource_ids: set[str]) -> Iterator[ResourceRow]:
        """The resources of these ids, with their e-mail addresses."""
        ...

    def task_projects(self, task_ids: list[str]) -> set[str]:
        """The projects that hold these tasks (for runs scoped with --task)."""
        ...


# --- helpers the readers share ----------------------------------------------------------------


def field(row: dict[str, Any], name: str, parse: Callable[[Any], T]) -> T:
    """``parse(row[name])``; a ValueError that names the property when it does not parse."""
    value = row.get(name)
    try:
        return parse(value)
    except (TypeError, ValueError, AttributeError, OverflowError):
        raise ValueError(f"{name} is not readable: {str(value)[:80]!r}") from None


def project_date(value: Any) -> datetime:
    parsed = odata.parse_datetime(value)
    if parsed is None or not within_project_dates(parsed):
        raise ValueError("missing or outside the dates Project can schedule")
    return parsed


def unreadable(
    row: dict[str, Any],
    key: str,
    name: str,
    problem: Exception,
    *,
    id_form: Callable[[Any], str] = canonical_id,
) -> UnreadableRow:
    """``id_form`` reads the key as the source's ids are written (``guid`` where they are GUIDs)."""
    try:
        parsed_key: str | None = id_form(row.get(key))
    except ValueError:
        parsed_key = None
    return UnreadableRow(parsed_key, str(row.get(name) or "")[:200], str(problem))


def chunks(items: Iterable[T], size: int) -> list[list[T]]:
    items = list(items)
    return [items[i : i + size] for i in range(0, len(items), size)]
