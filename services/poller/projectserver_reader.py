"""Reading published plans through the ProjectServer REST API (``{PWA}/_api/ProjectServer``).

The only API Project Server Subscription Edition has (its ProjectData feed is gone), and one
that 2016/2019 and Project Online offered too. What it costs: the project list is one request
per page; a changed project is its tasks and its assignments (each with their assignee's
project resource expanded), one request per page each, plus one ``EnterpriseResources``
request for the assignees whose project resource carries no e-mail address.

Where the public record leaves the wire form open (docs/sources/project-server.md), every
plausible form is read: both JSON formats, every next-link name, absolute or relative links;
the flag written as a boolean, text, number, Yes/No or a one-entry list; "no date" as
``0001-01-01``; and when a project's ``Tasks`` navigation is refused, the same read through
``Projects?$filter=Id eq guid'…'&$expand=…``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from common.errors import PermanentApiError, RetryableApiError
from common.ids import guid
from common.logging import get_logger
from common.messages import within_project_dates
from services.poller import odata
from services.poller.custom_fields import FLAG
from services.poller.paging import inline_rows, paged_rows, resolve_link
from services.poller.pwa_http import PwaHttp
from services.poller.source import (
    AssignmentRow,
    ProjectListing,
    ProjectRow,
    ResourceRow,
    TaskRow,
    UnpublishedProject,
    UnreadableRow,
    chunks,
    field,
    unreadable,
)

log = get_logger(__name__)

PROJECT_FIELDS = ("Id", "Name", "ProjectType", "LastPublishedDate")
TASK_FIELDS = ("Id", "Name", "Start", "Finish", "IsSummary", "OutlineLevel")
ASSIGNMENT_SELECT = ("Id", "Task/Id", "Resource/Id", "Resource/Name", "Resource/Email")
RESOURCE_FIELDS = ("Id", "Name", "Email")
_UTC = ZoneInfo("UTC")
_HAS_OFFSET = re.compile(r"T.*(Z|[+-]\d\d:?\d\d)$")
#: Values a FLAG custom field has been (or might plausibly be) written as.
_FLAG_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


class ProjectServerReader:
    """The ``PlanSource`` of the ProjectServer REST API."""

    api = "projectserver"
    #: The API reads the published tables themselves: no reporting copy lags behind them.
    reread_after = timedelta(0)

    def __init__(self, http: PwaHttp, flag_field: str, zone: ZoneInfo) -> None:
        self._http = http
        self._flag_field = flag_field
        self._zone = zone  # the PWA's wall clock, should a date come with an offset
        self._flag_property: str | None = None  # found once, then kept for the process
        self._navigation_refused = False  # Projects('…')/Tasks answered 404: $expand instead
        self._flag_form_seen = False  # the first raw flag value is logged, to settle its form
        self.base_url = f"{http.site_url}/_api/ProjectServer"

    @property
    def requests_made(self) -> int:
        return self._http.requests_made

    # --- the seam ----------------------------------------------------------------------------

    def projects(self, *, project_ids: list[str] | None = None) -> Iterator[ProjectListing]:
        params = {"$select": ",".join(PROJECT_FIELDS)}
        for batch in chunks(project_ids, 50) if project_ids else [None]:
            if batch is not None:
                params["$filter"] = odata.any_of("Id", [odata.guid_literal(p) for p in batch])
            for row in self._rows("Projects", dict(params)):
                yield project_listing(row, self._zone)

    def tasks(self, project_id: str) -> Iterator[TaskRow | UnreadableRow]:
        flag = self.flag_property()
        try:
            for row in self._project_collection(project_id, "Tasks", (*TASK_FIELDS, flag), ()):
                if not self._flag_form_seen and row.get(flag) is not None:
                    self._flag_form_seen = True
                    log.debug("flag value as the server writes it", value=repr(row[flag]))
                yield task_row(project_id, row, flag, self._zone)
        except PermanentApiError as exc:
            if exc.status == 400:  # the field may have been deleted and created anew
                self._flag_property = None
            raise

    def assignments(self, project_id: str) -> Iterator[AssignmentRow]:
        rows = self._project_collection(
            project_id, "Assignments", ASSIGNMENT_SELECT, ("Task", "Resource")
        )
        for row in rows:
            assignment = assignment_row(row)
            if assignment is not None:
                yield assignment

    def resources(self, resource_ids: set[str]) -> Iterator[ResourceRow]:
        for batch in chunks(sorted(resource_ids, key=str), 50):
            params = {
                "$select": ",".join(RESOURCE_FIELDS),
                "$filter": odata.any_of("Id", [odata.guid_literal(r) for r in batch]),
            }
            for row in self._rows("EnterpriseResources", params):
                yield ResourceRow(guid(row["Id"]), row.get("Name") or "", _email(row))

    def task_projects(self, task_ids: list[str]) -> set[str]:
        """This API has no collection of all tasks: each published project's task ids are read
        until every task is found (a --task run is an operator's rare request)."""
        wanted, found = set(task_ids), set()
        for listing in self.projects():
            if not wanted:
                break
            if not isinstance(listing, ProjectRow):
                continue
            ids = set(self.task_ids(listing.project_id))
            if ids & wanted:
                found.add(listing.project_id)
                wanted -= ids
        return found

    def task_ids(self, project_id: str) -> Iterator[str]:
        """One project's task ids: what reading a schedule needs, without the flag field."""
        for row in self._project_collection(project_id, "Tasks", ("Id",), ()):
            yield guid(row["Id"])

    # --- the flag field ----------------------------------------------------------------------

    def flag_property(self) -> str:
        """The task property that carries the flag's value: the field's ``InternalName`` with
        its first underscore escaped (``Custom_<hex>`` is written ``Custom_x005f_<hex>``)."""
        if self._flag_property is None:
            rows = self._rows("CustomFields", {"$select": "Id,Name,InternalName,FieldType"})
            self._flag_property = flag_property_of(list(rows), self._flag_field, self._http.service)
            log.info("flag field found", field=self._flag_field, task_property=self._flag_property)
        return self._flag_property

    # --- reading -----------------------------------------------------------------------------

    def _rows(self, path: str, params: dict[str, str]) -> Iterator[dict[str, Any]]:
        return paged_rows(self._http, f"{self.base_url}/{path}?{odata.query_string(params)}")

    def _project_collection(
        self, project_id: str, navigation: str, select: tuple[str, ...], expand: tuple[str, ...]
    ) -> Iterator[dict[str, Any]]:
        """``Projects('{id}')/{navigation}``, or the same rows through ``$expand`` where the
        server refuses the navigation path (remembered for the rest of the process)."""
        if not self._navigation_refused:
            params = {"$select": ",".join(select)}
            if expand:
                params["$expand"] = ",".join(expand)
            path = f"Projects('{guid(project_id)}')/{navigation}"
            try:
                rows = self._rows(path, params)
                first = next(rows, None)
            except PermanentApiError as exc:
                if exc.status != 404:
                    raise
                log.warning(
                    f"{self._http.service} refused a project's {navigation} path; reading "
                    "through $expand from now on",
                    project_id=str(project_id),
                    error=str(exc),
                )
            else:
                if first is not None:
                    yield first
                    yield from rows
                return
        yield from self._expanded(project_id, navigation, select, expand)
        self._navigation_refused = True

    def _expanded(
        self, project_id: str, navigation: str, select: tuple[str, ...], expand: tuple[str, ...]
    ) -> Iterator[dict[str, Any]]:
        params = {
            "$filter": f"Id eq {odata.guid_literal(project_id)}",
            "$select": ",".join(("Id", *(f"{navigation}/{name}" for name in select))),
            "$expand": ",".join((navigation, *(f"{navigation}/{name}" for name in expand))),
        }
        url = f"{self.base_url}/Projects?{odata.query_string(params)}"
        projects = list(paged_rows(self._http, url))
        if not projects:
            # Listed a moment ago, gone now: the next run's list tells whether it was deleted.
            raise RetryableApiError(
                f"{self._http.service}: project {project_id} is no longer there; read again later"
            )
        rows, next_link = inline_rows(projects[0], navigation)
        yield from rows
        if next_link:
            yield from paged_rows(self._http, resolve_link(url, next_link))


# --- rows (pure) -------------------------------------------------------------------------------


def project_listing(row: dict[str, Any], zone: ZoneInfo = _UTC) -> ProjectListing:
    try:
        project_id = field(row, "Id", guid)
        name = row.get("Name") or ""
        published = field(row, "LastPublishedDate", lambda v: rest_date(v, zone))
        if published is None:
            return UnpublishedProject(project_id, name)
        if not within_project_dates(published):
            raise ValueError("LastPublishedDate is outside the dates Project can schedule")
        return ProjectRow(
            project_id=project_id,
            name=name,
            project_type=field(row, "ProjectType", lambda v: int(v or 0)),
            modified=published,
        )
    except ValueError as exc:
        return unreadable(row, "Id", "Name", exc, id_form=guid)


def task_row(
    project_id: str, row: dict[str, Any], flag_property: str, zone: ZoneInfo = _UTC
) -> TaskRow | UnreadableRow:
    try:
        outline_level = field(row, "OutlineLevel", lambda v: None if v is None else int(v))
        return TaskRow(
            project_id=project_id,
            task_id=field(row, "Id", guid),
            name=row.get("Name") or "",
            start=field(row, "Start", lambda v: rest_date(v, zone)),
            finish=field(row, "Finish", lambda v: rest_date(v, zone)),
            is_summary=field(row, "IsSummary", parse_flag),
            # Not in Tasks on the real API; should a server list it, it is never an event.
            is_project_summary=outline_level == 0,
            flagged=field(row, flag_property, parse_flag),
        )
    except ValueError as exc:
        return unreadable(row, "Id", "Name", exc, id_form=guid)


def assignment_row(row: dict[str, Any]) -> AssignmentRow | None:
    """None for an assignment without a task or a resource: it carries no assignee."""
    task, resource = row.get("Task"), row.get("Resource")
    if not isinstance(task, dict) or not isinstance(resource, dict):
        return None
    if not task.get("Id") or not resource.get("Id"):
        return None
    resource_id = guid(resource["Id"])
    name, email = resource.get("Name") or "", _email(resource)
    return AssignmentRow(
        task_id=guid(task["Id"]),
        resource_id=resource_id,
        resource_name=name,
        # A project resource without an address is looked up as an enterprise resource.
        resource=ResourceRow(resource_id, name, email) if email else None,
    )


def rest_date(value: Any, zone: ZoneInfo = _UTC) -> datetime | None:
    """A date of this API as the PWA's wall clock: ISO 8601 without an offset is that already;
    one with an offset (not seen, but then it means an instant) is converted to it.
    ``0001-01-01`` (DateTime.MinValue) and null mean "no date"."""
    if isinstance(value, str) and _HAS_OFFSET.search(value):
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.year == 1:
            return None
        return moment.astimezone(zone).replace(tzinfo=None)
    parsed = odata.parse_datetime(value)
    if parsed is None or parsed.year == 1:
        return None
    return parsed


def parse_flag(value: Any) -> bool:
    """A FLAG value in any form it may take; absent or null is "not flagged". A value that is
    none of these raises ValueError (the row is unreadable, not silently unflagged)."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _FLAG_WORDS:
        return _FLAG_WORDS[value.strip().lower()]
    if isinstance(value, dict) and isinstance(value.get("results"), list):  # verbose list
        value = value["results"]
    if isinstance(value, list) and len(value) <= 1:  # a lookup-style list of one entry, or none
        return parse_flag(value[0]) if value else False
    raise ValueError(f"not a Yes/No value: {value!r}")


def flag_property_of(rows: list[dict[str, Any]], name: str, service: str) -> str:
    """The task property of the FLAG field named ``name`` among ``CustomFields`` rows."""
    # Exactly the name, as `pwasync fields verify` requires it (a field in another letter
    # case is reported there, not silently taken here).
    matches = [r for r in rows if r.get("Name") == name]
    if not matches:
        raise PermanentApiError(
            f"{service} has no enterprise custom field {name!r}: see `pwasync fields verify`; "
            "create it with `pwasync fields create`"
        )
    found = matches[0]
    if int(found.get("FieldType") or 0) != FLAG:
        raise PermanentApiError(
            f"{service}: the field {name!r} is not a Flag (Yes/No) field; "
            "see `pwasync fields verify`"
        )
    internal = str(found.get("InternalName") or "") or "Custom_" + UUID(str(found["Id"])).hex
    return internal.replace("_", "_x005f_", 1)


def _email(row: dict[str, Any]) -> str | None:
    return (str(row.get("Email") or "")).strip() or None
