"""Reading the ProjectData reporting feed: entity sets, navigation paths and server paging.

Only what the poller needs is selected (a Task has about 100 properties), every query is keyed
(a project's navigation path, or ``ProjectId``/``ResourceId``/``TaskId`` filters), and every
next link is followed until the feed says there is no more. ``$expand`` is not
implemented by the feed, so a project's tasks and assignments are read through navigation paths.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from common.ids import guid
from services.poller import odata
from services.poller.paging import paged_rows
from services.poller.pwa_http import PwaHttp
from services.poller.source import (
    AssignmentRow,
    ProjectListing,
    ProjectRow,
    ResourceRow,
    TaskRow,
    UnreadableRow,
    chunks,
    field,
    project_date,
    unreadable,
)

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


class ProjectDataClient:
    """The ``PlanSource`` of Project Server 2013-2019 and Project Online."""

    api = "projectdata"

    def __init__(
        self, http: PwaHttp, flag_property: str, *, reread_after: timedelta = timedelta(0)
    ) -> None:
        self._http = http
        self._flag_property = flag_property
        self.reread_after = reread_after
        self.base_url = f"{http.site_url}/_api/ProjectData"

    # --- entity sets -------------------------------------------------------------------------

    def projects(self, *, project_ids: list[str] | None = None) -> Iterator[ProjectListing]:
        """Every project (one request per page of 300 online, 100 on-premises), or the given
        ones; only the four properties change detection needs. A malformed row comes as an
        ``UnreadableRow``."""
        params = {"$select": ",".join(PROJECT_FIELDS)}
        # Key filters keep the query cheap; a long list is split so the URL stays short.
        id_batches = chunks(project_ids, 50) if project_ids else [None]
        for batch in id_batches:
            if batch is not None:
                params["$filter"] = odata.any_of(
                    "ProjectId", [odata.guid_literal(p) for p in batch]
                )
            for row in self.rows("Projects", dict(params)):
                try:
                    yield ProjectRow(
                        project_id=field(row, "ProjectId", guid),
                        name=row.get("ProjectName") or "",
                        project_type=field(row, "ProjectType", lambda v: int(v or 0)),
                        modified=field(row, "ProjectModifiedDate", project_date),
                    )
                except ValueError as exc:
                    yield unreadable(row, "ProjectId", "ProjectName", exc, id_form=guid)

    @property
    def requests_made(self) -> int:
        return self._http.requests_made

    def tasks(self, project_id: str) -> Iterator[TaskRow | UnreadableRow]:
        """The project's tasks; a malformed row comes as an ``UnreadableRow``."""
        path = f"Projects({odata.guid_literal(project_id)})/Tasks"
        flag_property = self._flag_property
        params = {"$select": ",".join((*TASK_FIELDS, flag_property))}
        for row in self.rows(path, params):
            try:
                yield TaskRow(
                    project_id=field(row, "ProjectId", guid),
                    task_id=field(row, "TaskId", guid),
                    name=row.get("TaskName") or "",
                    start=field(row, "TaskStartDate", odata.parse_datetime),
                    finish=field(row, "TaskFinishDate", odata.parse_datetime),
                    is_summary=odata.parse_bool(row.get("TaskIsSummary")),
                    is_project_summary=odata.parse_bool(row.get("TaskIsProjectSummary")),
                    flagged=odata.parse_bool(row.get(flag_property)),
                )
            except ValueError as exc:
                yield unreadable(row, "TaskId", "TaskName", exc, id_form=guid)

    def assignments(self, project_id: str) -> Iterator[AssignmentRow]:
        path = f"Projects({odata.guid_literal(project_id)})/Assignments"
        for row in self.rows(path, {"$select": ",".join(ASSIGNMENT_FIELDS)}):
            if not row.get("ResourceId") or not row.get("TaskId"):
                continue  # an assignment row without a resource carries no assignee
            yield AssignmentRow(
                task_id=guid(row["TaskId"]),
                resource_id=guid(row["ResourceId"]),
                resource_name=row.get("ResourceName") or "",
            )

    def resources(self, resource_ids: set[str] | None = None) -> Iterator[ResourceRow]:
        params = {"$select": ",".join(RESOURCE_FIELDS)}
        # Key filters keep the query cheap; a long list is split so the URL stays short.
        id_batches = chunks(sorted(resource_ids, key=str), 50) if resource_ids else [None]
        for batch in id_batches:
            if batch is not None:
                params["$filter"] = odata.any_of(
                    "ResourceId", [odata.guid_literal(r) for r in batch]
                )
            for row in self.rows("Resources", dict(params)):
                email = (row.get("ResourceEmailAddress") or "").strip() or None
                yield ResourceRow(guid(row["ResourceId"]), row.get("ResourceName") or "", email)

    def task_projects(self, task_ids: list[str]) -> set[str]:
        """The projects that hold these tasks (for runs scoped with --task)."""
        projects: set[str] = set()
        for batch in chunks(task_ids, 50):
            params = {
                "$select": "ProjectId,TaskId",
                "$filter": odata.any_of("TaskId", [odata.guid_literal(t) for t in batch]),
            }
            projects.update(guid(row["ProjectId"]) for row in self.rows("Tasks", params))
        return projects

    def rows(self, path: str, params: dict[str, str]) -> Iterator[dict[str, Any]]:
        """Every row of a feed, following its next links."""
        return paged_rows(self._http, f"{self.base_url}/{path}?{odata.query_string(params)}")
