"""Reading the ProjectData reporting feed: entity sets, navigation paths and server paging.

Only what the poller needs is selected (a Task has about 100 properties), every query is keyed
(a project's navigation path, or ``ProjectId``/``ResourceId``/``TaskId`` filters), and every
next link is followed until the feed says there is no more. ``$expand`` is not
implemented by the feed, so a project's tasks and assignments are read through navigation paths.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urljoin
from uuid import UUID

from common.errors import PermanentApiError
from common.messages import within_project_dates
from services.poller import odata
from services.poller.pwa_http import PwaHttp

PROJECT_FIELDS = ("ProjectId", "ProjectName", "ProjectType", "ProjectModifiedDate")
TASK_FIELDS = (
    "ProjectId",
    "TaskId",
    "TaskName",
    "TaskStartDate",
    "TaskFinishDate",
    "TaskIsSummary",
    "TaskIsProjectSummary",
)
ASSIGNMENT_FIELDS = ("AssignmentId", "TaskId", "ResourceId", "ResourceName")
RESOURCE_FIELDS = ("ResourceId", "ResourceName", "ResourceEmailAddress")

#: A feed that keeps sending next links past this many pages is broken; stop instead of looping.
MAX_PAGES = 10_000
T = TypeVar("T")


@dataclass(frozen=True)
class ProjectRow:
    project_id: UUID
    name: str
    project_type: int
    modified: datetime  # PWA wall clock


@dataclass(frozen=True)
class TaskRow:
    project_id: UUID
    task_id: UUID
    name: str
    start: datetime | None
    finish: datetime | None
    is_summary: bool
    is_project_summary: bool
    flagged: bool


@dataclass(frozen=True)
class UnreadableRow:
    """A row of the feed that cannot be understood (a malformed value). The task or project it
    stands for is left as it was: neither synced nor removed, and the run goes on."""

    key: UUID | None  # the task or project id; None when even that is unreadable
    name: str
    problem: str


@dataclass(frozen=True)
class AssignmentRow:
    task_id: UUID
    resource_id: UUID
    resource_name: str


@dataclass(frozen=True)
class ResourceRow:
    resource_id: UUID
    name: str
    email: str | None


class ProjectDataClient:
    def __init__(self, http: PwaHttp) -> None:
        self._http = http
        self.base_url = f"{http.site_url}/_api/ProjectData"

    # --- entity sets -------------------------------------------------------------------------

    def projects(
        self, *, project_ids: list[UUID] | None = None
    ) -> Iterator[ProjectRow | UnreadableRow]:
        """Every project (one request per page of 300 online, 100 on-premises), or the given
        ones; only the four properties change detection needs. A malformed row comes as an
        ``UnreadableRow``."""
        params = {"$select": ",".join(PROJECT_FIELDS)}
        # Key filters keep the query cheap; a long list is split so the URL stays short.
        id_batches = _chunks(list(project_ids), 50) if project_ids else [None]
        for batch in id_batches:
            if batch is not None:
                params["$filter"] = odata.any_of(
                    "ProjectId", [odata.guid_literal(p) for p in batch]
                )
            for row in self.rows("Projects", dict(params)):
                try:
                    yield ProjectRow(
                        project_id=_field(row, "ProjectId", UUID),
                        name=row.get("ProjectName") or "",
                        project_type=_field(row, "ProjectType", lambda v: int(v or 0)),
                        modified=_field(row, "ProjectModifiedDate", _project_date),
                    )
                except ValueError as exc:
                    yield _unreadable(row, "ProjectId", "ProjectName", exc)

    @property
    def requests_made(self) -> int:
        return self._http.requests_made

    def tasks(self, project_id: UUID, flag_property: str) -> Iterator[TaskRow | UnreadableRow]:
        """The project's tasks; a malformed row comes as an ``UnreadableRow``."""
        path = f"Projects({odata.guid_literal(project_id)})/Tasks"
        params = {"$select": ",".join((*TASK_FIELDS, flag_property))}
        for row in self.rows(path, params):
            try:
                yield TaskRow(
                    project_id=_field(row, "ProjectId", UUID),
                    task_id=_field(row, "TaskId", UUID),
                    name=row.get("TaskName") or "",
                    start=_field(row, "TaskStartDate", odata.parse_datetime),
                    finish=_field(row, "TaskFinishDate", odata.parse_datetime),
                    is_summary=odata.parse_bool(row.get("TaskIsSummary")),
                    is_project_summary=odata.parse_bool(row.get("TaskIsProjectSummary")),
                    flagged=odata.parse_bool(row.get(flag_property)),
                )
            except ValueError as exc:
                yield _unreadable(row, "TaskId", "TaskName", exc)

    def assignments(self, project_id: UUID) -> Iterator[AssignmentRow]:
        path = f"Projects({odata.guid_literal(project_id)})/Assignments"
        for row in self.rows(path, {"$select": ",".join(ASSIGNMENT_FIELDS)}):
            if not row.get("ResourceId") or not row.get("TaskId"):
                continue  # an assignment row without a resource carries no assignee
            yield AssignmentRow(
                task_id=UUID(row["TaskId"]),
                resource_id=UUID(row["ResourceId"]),
                resource_name=row.get("ResourceName") or "",
            )

    def resources(self, resource_ids: set[UUID] | None = None) -> Iterator[ResourceRow]:
        params = {"$select": ",".join(RESOURCE_FIELDS)}
        # Key filters keep the query cheap; a long list is split so the URL stays short.
        id_batches = _chunks(sorted(resource_ids, key=str), 50) if resource_ids else [None]
        for batch in id_batches:
            if batch is not None:
                params["$filter"] = odata.any_of(
                    "ResourceId", [odata.guid_literal(r) for r in batch]
                )
            for row in self.rows("Resources", dict(params)):
                email = (row.get("ResourceEmailAddress") or "").strip() or None
                yield ResourceRow(UUID(row["ResourceId"]), row.get("ResourceName") or "", email)

    def task_projects(self, task_ids: list[UUID]) -> set[UUID]:
        """The projects that hold these tasks (for runs scoped with --task)."""
        projects: set[UUID] = set()
        for batch in _chunks(task_ids, 50):
            params = {
                "$select": "ProjectId,TaskId",
                "$filter": odata.any_of("TaskId", [odata.guid_literal(t) for t in batch]),
            }
            projects.update(UUID(row["ProjectId"]) for row in self.rows("Tasks", params))
        return projects

    # --- paging ------------------------------------------------------------------------------

    def rows(self, path: str, params: dict[str, str]) -> Iterator[dict[str, Any]]:
        """Every row of a feed, following next links (verbose ``__next`` or light
        ``odata.nextLink``) until the server stops sending them."""
        url: str | None = f"{self.base_url}/{path}?{odata.query_string(params)}"
        seen: set[str] = set()
        pages = 0
        while url is not None:
            if url in seen or pages >= MAX_PAGES:
                raise PermanentApiError(f"Project Online paging does not end at {url}")
            seen.add(url)
            pages += 1
            rows, next_link = _page(self._http.get_json(url))
            yield from rows
            url = urljoin(url, next_link) if next_link else None


def _page(data: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    if "d" in data:  # verbose
        body = data["d"]
        if isinstance(body, list):  # OData V1/V2 style without "results"
            return body, None
        return list(body.get("results") or []), body.get("__next")
    if "value" in data:  # JSON light
        return list(data["value"]), data.get("odata.nextLink") or data.get("@odata.nextLink")
    raise PermanentApiError("Project Online answered with neither 'd' nor 'value'")


def _field(row: dict[str, Any], name: str, parse: Callable[[Any], T]) -> T:
    """``parse(row[name])``; a ValueError that names the property when it does not parse."""
    value = row.get(name)
    try:
        return parse(value)
    except (TypeError, ValueError, AttributeError, OverflowError):
        raise ValueError(f"{name} is not readable: {str(value)[:80]!r}") from None


def _project_date(value: Any) -> datetime:
    parsed = odata.parse_datetime(value)
    if parsed is None or not within_project_dates(parsed):
        raise ValueError("missing or outside the dates Project can schedule")
    return parsed


def _unreadable(row: dict[str, Any], key: str, name: str, problem: Exception) -> UnreadableRow:
    try:
        parsed_key: UUID | None = UUID(str(row.get(key)))
    except ValueError:
        parsed_key = None
    return UnreadableRow(parsed_key, str(row.get(name) or "")[:200], str(problem))


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
