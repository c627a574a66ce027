"""Reading Planner premium plans from Dataverse: the ``PlanSource`` of PWASYNC_SOURCE=dataverse.

What a poll costs: the project list (a page per 5,000 projects) and one request per watched
table when nothing changed (``dataverse_tracking``); each changed project then costs its tasks,
its assignments and, selecting by label, its labels and their task links (a page per 5,000
rows each), plus the assignees' bookable resources and users (a request per 50 of each, once
per run).

Which tasks are selected (PWASYNC_SELECT_BY): ``label``, the tasks linked to the project's
label named PWASYNC_CREATE_EVENT_LABEL (the name compared without surrounding spaces and in
any letter case: the grid shows it as typed); ``field``, the tasks whose Yes/No column named
PWASYNC_CREATE_EVENT_FIELD is Yes.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from common.errors import PermanentApiError
from common.logging import get_logger
from services.poller.dataverse_auth import DataverseHttp, read_collection
from services.poller.dataverse_changes import parse_instant
from services.poller.dataverse_fields import ColumnFields, FlagColumn
from services.poller.dataverse_rows import (
    ASSIGNMENT_COLUMNS,
    BOOKABLE_COLUMNS,
    LABEL_COLUMNS,
    LINK_COLUMNS,
    PROJECT_COLUMNS,
    TASK_COLUMNS,
    USER_COLUMNS,
    assignment_row,
    guid_text,
    instant,
    is_active,
    project_listing,
    resource_rows,
    source_id,
    task_row,
)
from services.poller.dataverse_tracking import ChangeDetector
from services.poller.odata import any_of, query_string
from services.poller.source import (
    AssignmentRow,
    ProjectListing,
    ResourceRow,
    TaskRow,
    UnreadableRow,
    chunks,
)

log = get_logger(__name__)

#: Ids per ``$filter`` (an ``or`` of equalities; the URL stays far below Dataverse's limit).
IDS_PER_QUERY = 50


class DataverseReader:
    api = "dataverse"
    #: Rows are read from the tables themselves: no reporting copy lags behind them.
    reread_after = timedelta(0)

    def __init__(
        self,
        http: DataverseHttp,
        changes: ChangeDetector,
        zone: ZoneInfo,
        *,
        select_by: str,
        label: str,
        column: str,
    ) -> None:
        self._http = http
        self._changes = changes
        self._zone = zone
        self._select_by = select_by
        self._label = label.strip().casefold()
        self._column_name = column
        self._column: FlagColumn | None = None
        self._missing_label_logged: set[str] = set()

    @property
    def requests_made(self) -> int:
        return self._http.requests_made

    # --- the seam ----------------------------------------------------------------------------

    def projects(self, *, project_ids: list[Any] | None = None) -> Iterator[ProjectListing]:
        stamps = self._changes.poll()
        rows: list[dict[str, Any]] = []
        if project_ids:
            for batch in chunks(project_ids, IDS_PER_QUERY):
                rows += self._rows(
                    "msdyn_projects", PROJECT_COLUMNS, _ids_filter("msdyn_projectid", batch)
                )
        else:
            rows = self._rows("msdyn_projects", PROJECT_COLUMNS, "statecode eq 0")
            listed = {str(r.get("msdyn_projectid") or "").lower() for r in rows}
            self._changes.forget(set(stamps) - listed)
        for row in rows:
            if not is_active(row):
                continue
            yield project_listing(row, self._stamp(row, stamps))

    def tasks(self, project_id: Any) -> Iterator[TaskRow | UnreadableRow]:
        flagged, column = self._selector(project_id)
        columns = (*TASK_COLUMNS, column) if column else TASK_COLUMNS
        try:
            rows = self._rows(
                "msdyn_projecttasks", columns, f"_msdyn_project_value eq {guid_text(project_id)}"
            )
        except PermanentApiError as exc:
            if exc.status == 400 and column:  # the column may have been deleted and made anew
                self._column = None
            raise
        for row in rows:
            if not is_active(row):
                continue  # an inactive task is treated as gone
            if column:
                yield task_row(project_id, row, bool(row.get(column)), self._zone)
            else:
                task_id = str(row.get("msdyn_projecttaskid") or "").lower()
                yield task_row(project_id, row, task_id in flagged, self._zone)

    def assignments(self, project_id: Any) -> Iterator[AssignmentRow]:
        rows = self._rows(
            "msdyn_resourceassignments",
            ASSIGNMENT_COLUMNS,
            f"_msdyn_projectid_value eq {guid_text(project_id)}",
        )
        for row in rows:
            assignment = assignment_row(row)
            if assignment is not None:
                yield assignment

    def resources(self, resource_ids: set[Any]) -> Iterator[ResourceRow]:
        bookables: list[dict[str, Any]] = []
        for batch in chunks(sorted(resource_ids, key=str), IDS_PER_QUERY):
            bookables += self._rows(
                "bookableresources", BOOKABLE_COLUMNS, _ids_filter("bookableresourceid", batch)
            )
        user_ids = sorted({str(b["_userid_value"]) for b in bookables if b.get("_userid_value")})
        users: dict[str, dict[str, Any]] = {}
        for batch in chunks(user_ids, IDS_PER_QUERY):
            for user in self._rows("systemusers", USER_COLUMNS, _ids_filter("systemuserid", batch)):
                users[str(user["systemuserid"]).lower()] = user
        yield from resource_rows(bookables, users)

    def task_projects(self, task_ids: list[Any]) -> set[Any]:
        found = set()
        for batch in chunks(task_ids, IDS_PER_QUERY):
            for row in self._rows(
                "msdyn_projecttasks",
                ("msdyn_projecttaskid", "_msdyn_project_value"),
                _ids_filter("msdyn_projecttaskid", batch),
            ):
                if row.get("_msdyn_project_value"):
                    found.add(source_id(row["_msdyn_project_value"]))
        return found

    # --- selection ---------------------------------------------------------------------------

    def flag_column(self) -> FlagColumn:
        if self._column is None:
            self._column = ColumnFields(self._http).require(self._column_name)
            log.info(
                "flag column found",
                column=self._column_name,
                logical_name=self._column.logical_name,
            )
        return self._column

    def _selector(self, project_id: Any) -> tuple[set[str], str | None]:
        """The ids of the labelled tasks, or the column to read (selecting by field)."""
        if self._select_by != "label":
            return set(), self.flag_column().logical_name
        labels = [
            str(row["msdyn_projectlabelid"]).lower()
            for row in self._rows(
                "msdyn_projectlabels",
                LABEL_COLUMNS,
                f"_msdyn_projectid_value eq {guid_text(project_id)}",
            )
            if is_active(row)
            and str(row.get("msdyn_projectlabeltext") or "").strip().casefold() == self._label
        ]
        if not labels:
            if str(project_id) not in self._missing_label_logged:
                self._missing_label_logged.add(str(project_id))
                log.info(
                    "project has no label of the configured name; none of its tasks is selected",
                    project_id=str(project_id),
                    label=self._label,
                )
            return set(), None
        links = self._rows(
            "msdyn_projecttasktolabels",
            LINK_COLUMNS,
            any_of("_msdyn_projectlabelid_value", [guid_text(label) for label in labels]),
        )
        return {
            str(link["_msdyn_projecttaskid_value"]).lower()
            for link in links
            if is_active(link) and link.get("_msdyn_projecttaskid_value")
        }, None

    # --- reading -----------------------------------------------------------------------------

    def _rows(
        self, entity_set: str, columns: tuple[str, ...], filter_text: str | None = None
    ) -> list[dict[str, Any]]:
        params = {"$select": ",".join(columns)}
        if filter_text:
            params["$filter"] = filter_text
        url = f"{self._http.api_url}/{entity_set}?{query_string(params)}"
        return read_collection(self._http, url).rows

    def _stamp(self, row: dict[str, Any], stamps: dict[str, datetime]) -> datetime | None:
        """The project's "modified" for the sync: its row's ``modifiedon`` or the stamp of its
        content, whichever is later, in the wall clock the sync works in."""
        moments = [
            parse_instant(row.get("modifiedon")),
            stamps.get(str(row.get("msdyn_projectid") or "").lower()),
        ]
        known = [m for m in moments if m is not None]
        return instant(max(known).isoformat(), self._zone) if known else None


def _ids_filter(column: str, ids: list[Any]) -> str:
    return any_of(column, [guid_text(i) for i in ids])
