"""Dataverse rows as the sync's rows (pure): projects, tasks, assignments, assignees.

What was decided where the reference leaves the form open (docs/sources/planner-premium.md):
- a task's dates are ``msdyn_scheduledstart``/``msdyn_scheduledend`` (what the scheduling
  service computes and the grid shows), else ``msdyn_start``/``msdyn_finish`` when a row has no
  scheduled pair; values are UTC instants, turned into the wall clock of PWASYNC_PWA_TIMEZONE
  that the sync works in;
- a milestone (``msdyn_ismilestone``) is an event at its start, whatever its end says;
- a row whose ``statecode`` is not 0 (inactive) is treated as gone;
- an assignee's mailbox is the user's ``internalemailaddress``, else its Entra object id
  (``azureactivedirectoryobjectid``, which Graph takes as ``/users/{id}``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from common.ids import guid
from common.messages import within_project_dates
from services.poller.projectserver_reader import parse_flag
from services.poller.source import (
    AssignmentRow,
    ProjectListing,
    ProjectRow,
    ResourceRow,
    TaskRow,
    UnreadableRow,
    field,
    unreadable,
)

PROJECT_COLUMNS = ("msdyn_projectid", "msdyn_subject", "modifiedon", "statecode")
TASK_COLUMNS = (
    "msdyn_projecttaskid",
    "msdyn_subject",
    "msdyn_scheduledstart",
    "msdyn_scheduledend",
    "msdyn_start",
    "msdyn_finish",
    "msdyn_summary",
    "msdyn_ismilestone",
    "_msdyn_project_value",
    "statecode",
)
ASSIGNMENT_COLUMNS = (
    "msdyn_resourceassignmentid",
    "_msdyn_taskid_value",
    "_msdyn_bookableresourceid_value",
    "statecode",
)
LABEL_COLUMNS = (
    "msdyn_projectlabelid",
    "msdyn_projectlabeltext",
    "_msdyn_projectid_value",
    "statecode",
)
LINK_COLUMNS = (
    "msdyn_projecttasktolabelid",
    "_msdyn_projecttaskid_value",
    "_msdyn_projectlabelid_value",
    "statecode",
)
BOOKABLE_COLUMNS = ("bookableresourceid", "name", "_userid_value")
USER_COLUMNS = ("systemuserid", "fullname", "internalemailaddress", "azureactivedirectoryobjectid")


def source_id(value: Any) -> str:
    """A Dataverse key: a GUID by the Web API's contract, so anything else is a malformed row."""
    return guid(value)


def guid_text(value: Any) -> str:
    """A GUID as an OData V4 literal (bare); parsed first, so nothing else can be injected."""
    return guid(value)


def is_active(row: dict[str, Any]) -> bool:
    return row.get("statecode") in (None, 0)


def instant(value: Any, zone: ZoneInfo) -> datetime | None:
    """A Dataverse date-time (UTC, ``…Z``) as naive wall clock in ``zone``; None for null."""
    if value is None or value == "":
        return None
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if moment.tzinfo is None:  # Dataverse writes UTC; a value without offset is UTC too
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone).replace(tzinfo=None)


def project_listing(row: dict[str, Any], stamp: datetime | None) -> ProjectListing:
    """``stamp``: when the project's content last changed, as change detection knows it."""
    try:
        if stamp is None:
            raise ValueError("modifiedon is missing")
        return ProjectRow(
            project_id=field(row, "msdyn_projectid", source_id),
            name=str(row.get("msdyn_subject") or ""),
            project_type=0,
            modified=stamp,
        )
    except ValueError as exc:
        return unreadable(row, "msdyn_projectid", "msdyn_subject", exc, id_form=guid)


def task_row(
    project_id: Any, row: dict[str, Any], flagged: bool, zone: ZoneInfo
) -> TaskRow | UnreadableRow:
    try:
        start = field(row, "msdyn_scheduledstart", lambda v: _date(v, zone))
        finish = field(row, "msdyn_scheduledend", lambda v: _date(v, zone))
        if start is None and finish is None:
            start = field(row, "msdyn_start", lambda v: _date(v, zone))
            finish = field(row, "msdyn_finish", lambda v: _date(v, zone))
        if field(row, "msdyn_ismilestone", parse_flag) and start is not None:
            finish = start
        return TaskRow(
            project_id=project_id,
            task_id=field(row, "msdyn_projecttaskid", source_id),
            name=str(row.get("msdyn_subject") or ""),
            start=start,
            finish=finish,
            is_summary=field(row, "msdyn_summary", parse_flag),
            is_project_summary=False,  # Dataverse keeps no project summary task
            flagged=flagged,
        )
    except ValueError as exc:
        return unreadable(row, "msdyn_projecttaskid", "msdyn_subject", exc, id_form=guid)


def _date(value: Any, zone: ZoneInfo) -> datetime | None:
    moment = instant(value, zone)
    if moment is not None and not within_project_dates(moment):
        raise ValueError("outside the dates a plan can schedule")
    return moment


def assignment_row(row: dict[str, Any]) -> AssignmentRow | None:
    """None for an inactive assignment, or one without a task or a resource."""
    task, resource = row.get("_msdyn_taskid_value"), row.get("_msdyn_bookableresourceid_value")
    if not is_active(row) or not task or not resource:
        return None
    return AssignmentRow(task_id=source_id(task), resource_id=source_id(resource), resource_name="")


def resource_rows(
    bookables: list[dict[str, Any]], users: dict[str, dict[str, Any]]
) -> list[ResourceRow]:
    """Bookable resources with their users' mailboxes (``users`` by systemuserid, lower)."""
    resources = []
    for row in bookables:
        user = users.get(str(row.get("_userid_value") or "").lower(), {})
        resources.append(
            ResourceRow(
                resource_id=source_id(row["bookableresourceid"]),
                name=str(row.get("name") or user.get("fullname") or ""),
                email=mailbox(user),
            )
        )
    return resources


def mailbox(user: dict[str, Any]) -> str | None:
    email = str(user.get("internalemailaddress") or "").strip()
    if email:
        return email
    object_id = str(user.get("azureactivedirectoryobjectid") or "").strip().lower()
    return object_id or None
