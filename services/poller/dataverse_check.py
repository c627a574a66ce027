"""``pwasync check`` and ``pwasync fields`` on a Planner premium environment.

Lines, in the order a set-up goes: the app-only token, the environment (``WhoAmI``: the app is
an application user there), organisation-level Read on each table the sync reads (from the
application user's privileges, as its security roles grant them), change tracking on or off per
watched table, and the selector (a label of that name in the plans, or the Yes/No column). Each
failing line says what to grant or create.
"""

from __future__ import annotations

from typing import Any

import httpx

from common.errors import PermanentApiError, PwasyncError
from common.settings import Settings
from services.poller.dataverse_auth import DataverseHttp, open_dataverse, read_collection
from services.poller.dataverse_changes import watched_tables
from services.poller.dataverse_fields import TASK_TABLE, ColumnFields
from services.poller.odata import query_string, string_literal
from services.poller.pwa_check import CheckLine

#: Every table the sync reads (logical name -> what the security role calls it).
READ_TABLES = {
    "msdyn_project": "Project",
    "msdyn_projecttask": "Project Task",
    "msdyn_resourceassignment": "Resource Assignment",
    "bookableresource": "Bookable Resource",
    "systemuser": "User",
    "msdyn_projectlabel": "Project Label",
    "msdyn_projecttasktolabel": "Project Task to Label",
}
LABEL_TABLES = ("msdyn_projectlabel", "msdyn_projecttasktolabel")
ORGANIZATION = "Global"  # RetrieveUserPrivileges' name for organisation-level depth
APPLICATION_USER_HINT = (
    "add the app as an application user of the environment (Power Platform admin center: "
    "Environments, Settings, Users + permissions, Application users) with the pwasync role"
)


def tables_read(select_by: str) -> dict[str, str]:
    if select_by == "label":
        return dict(READ_TABLES)
    return {k: v for k, v in READ_TABLES.items() if k not in LABEL_TABLES}


def dataverse_lines(
    settings: Settings, http: httpx.Client, *, select_by: str, label: str
) -> list[CheckLine]:
    try:
        edge = open_dataverse(settings, http)
        who = edge.get_json(f"{edge.api_url}/WhoAmI")  # signs in first: a token failure shows
    except PermanentApiError as exc:
        if exc.status in (401, 403):
            return [
                CheckLine(
                    "Dataverse token (app-only)", True, f"obtained for {settings.dataverse_scope}"
                ),
                CheckLine("Dataverse environment", False, f"{exc}: {APPLICATION_USER_HINT}"),
            ]
        return [CheckLine("Dataverse environment", False, str(exc))]
    except PwasyncError as exc:
        return [CheckLine("Dataverse token (app-only)", False, str(exc))]
    lines = [
        CheckLine("Dataverse token (app-only)", True, f"obtained for {settings.dataverse_scope}"),
        CheckLine(
            "Dataverse environment",
            True,
            f"{settings.dataverse_url} answered as application user {who.get('UserId')}",
        ),
    ]
    reads = read_right_lines(edge, str(who.get("UserId")), tables_read(select_by))
    lines += reads
    if not all(line.ok for line in reads):
        return lines
    lines += change_tracking_lines(edge, select_by, settings.dataverse_reconcile_minutes)
    lines.append(selector_line(edge, select_by, label, settings.create_event_field))
    return lines


def read_right_lines(edge: DataverseHttp, user_id: str, tables: dict[str, str]) -> list[CheckLine]:
    url = f"{edge.api_url}/systemusers({user_id})/Microsoft.Dynamics.CRM.RetrieveUserPrivileges()"
    try:
        privileges = edge.get_json(url).get("RolePrivileges") or []
    except PwasyncError as exc:
        return [_read_by_trying(edge, logical, name, exc) for logical, name in tables.items()]
    depths = _read_depths(privileges)
    lines = []
    for logical, name in tables.items():
        depth = depths.get(logical)
        line_name = f"read {name} ({logical})"
        if depth == ORGANIZATION:
            lines.append(CheckLine(line_name, True, "organization-level Read"))
            continue
        found = f"only {_depth_words(depth)} Read" if depth else "no Read privilege"
        lines.append(
            CheckLine(
                line_name,
                False,
                f"{found}: give the application user's security role organization-level Read "
                f"on {name}",
            )
        )
    return lines


def _read_depths(privileges: list[dict[str, Any]]) -> dict[str, str]:
    order = ["Basic", "Local", "Deep", ORGANIZATION]
    depths: dict[str, str] = {}
    for privilege in privileges:
        name = str(privilege.get("PrivilegeName") or "")
        if not name.lower().startswith("prvread"):
            continue
        table = name[len("prvRead") :].lower()
        depth = str(privilege.get("Depth") or "")
        if depth in order and order.index(depth) >= order.index(depths.get(table, "Basic")):
            depths[table] = depth
    return depths


def _depth_words(depth: str) -> str:
    return {
        "Basic": "user-level",
        "Local": "business-unit",
        "Deep": "parent-child business unit",
    }.get(depth, depth)


def _read_by_trying(
    edge: DataverseHttp, logical: str, name: str, refused: PwasyncError
) -> CheckLine:
    """Without the privileges function: a one-row read tells access, not its depth."""
    try:
        edge.get_json(f"{edge.api_url}/{logical}s?$top=1")  # every entity set read: plural -s
    except PwasyncError as exc:
        return CheckLine(f"read {name} ({logical})", False, f"{exc}: grant organization-level Read")
    return CheckLine(
        f"read {name} ({logical})",
        True,
        f"readable (depth not checked: {refused}); change tracking needs organization level",
        warn=True,
    )


def change_tracking_lines(
    edge: DataverseHttp, select_by: str, sweep_minutes: int
) -> list[CheckLine]:
    lines = []
    for table in watched_tables(select_by):
        url = (
            f"{edge.api_url}/EntityDefinitions(LogicalName='{table.logical_name}')"
            "?$select=LogicalName,ChangeTrackingEnabled"
        )
        name = f"change tracking of {table.logical_name}"
        try:
            enabled = bool(edge.get_json(url).get("ChangeTrackingEnabled"))
        except PwasyncError as exc:
            lines.append(CheckLine(name, False, f"table metadata not readable: {exc}"))
            continue
        if enabled:
            lines.append(CheckLine(name, True, "on: each poll reads only what changed"))
        else:
            lines.append(
                CheckLine(
                    name,
                    True,
                    "off: changes are found by modifiedon, deleted rows by a sweep every "
                    f"{sweep_minutes} minutes (PWASYNC_DATAVERSE_RECONCILE_MINUTES); turn it on "
                    "in the table's properties where the environment allows it",
                    warn=True,
                )
            )
    return lines


def selector_line(edge: DataverseHttp, select_by: str, label: str, column: str) -> CheckLine:
    if select_by == "label":
        name = f"label {label!r}"
        params = {
            "$select": "msdyn_projectlabelid,_msdyn_projectid_value,msdyn_projectlabeltext",
            "$filter": f"msdyn_projectlabeltext eq {string_literal(label.strip())}",
        }
        url = f"{edge.api_url}/msdyn_projectlabels?{query_string(params)}"
        try:
            rows = read_collection(edge, url).rows
        except PwasyncError as exc:
            return CheckLine(name, False, str(exc))
        projects = {r.get("_msdyn_projectid_value") for r in rows}
        if not projects:
            return CheckLine(
                name,
                False,
                "no plan has a label of this name: in each plan, rename one of its labels to "
                f"{label!r} (or set PWASYNC_CREATE_EVENT_LABEL)",
            )
        return CheckLine(name, True, f"named in {len(projects)} plan(s)")
    name = f"column {column!r} (Yes/No on {TASK_TABLE})"
    try:
        found = ColumnFields(edge).find(column)
    except PwasyncError as exc:
        return CheckLine(name, False, str(exc))
    if found is None:
        return CheckLine(name, False, "missing: create it with `pwasync fields create`")
    return CheckLine(name, True, f"present as {found.logical_name}")


def dataverse_fields(
    settings: Settings, http: httpx.Client, action: str, *, select_by: str, label: str
) -> tuple[list[str], bool]:
    """``pwasync fields verify|create`` for this source: the column when selecting by field;
    selecting by label there is nothing to create (labels belong to each plan), only to see."""
    edge = open_dataverse(settings, http)
    if select_by == "label":
        line = selector_line(edge, select_by, label, settings.create_event_field)
        lines = [line.render()]
        if action == "create":
            lines.insert(0, "selection by label: nothing to create; each plan names its own label")
        return lines, line.ok
    fields = ColumnFields(edge)
    name = settings.create_event_field
    lines = []
    if action == "create":
        if fields.find(name) is None:
            try:
                created = fields.create(name, settings.dataverse_column_prefix)
            except PermanentApiError as exc:
                if exc.status == 403:
                    return [
                        f"column {name!r} could not be created: {exc}; creating a column needs "
                        "the System Customizer role for a moment (the sync needs only Read)"
                    ], False
                raise
            lines.append(f"created Yes/No column {name!r} on {TASK_TABLE} ({created.logical_name})")
        else:
            lines.append(f"column {name!r} exists already; nothing to create")
    line = selector_line(edge, "field", label, name)
    return [*lines, line.render()], line.ok
