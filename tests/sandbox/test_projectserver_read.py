"""The ProjectServer REST read API (Projects, Tasks, Assignments, resources) in both editions:
shapes, query options, paging, the flag's value forms, drafts, bad data and permissions."""

from __future__ import annotations

from typing import Any
from urllib.parse import urljoin

import httpx
import pytest

from sandbox.client import SandboxClient
from tests.sandbox.conftest import RunningSandbox, TokenFactory
from tests.sandbox.windows_client import WindowsAuth

ACCEPT = {
    "light": "application/json",
    "nometadata": "application/json;odata=nometadata",
    "verbose": "application/json;odata=verbose",
}
OFFICE = "bdd9ba3c-6a37-5353-b794-b68ac4e6a39f"  # Office Relocation Berlin
DRAFT = "0b784c08-1a0e-56cc-80b5-67fa6700f7f2"  # never published
DRAFT_TASK = "b2ece14e-17c9-5e7b-bab8-1528aaaf080b"
KICK_OFF = "7b0fb185-642a-5227-9a0e-0a0a4cc04f2e"
PREPARATION = "e7d0a6b3-1dec-5443-b562-29d447b8e0d4"
LESSONS = "e90f3153-8c0c-54c7-bdf1-f94d12655437"
ADELE_RESOURCE = "729a99a2-ee06-5f9b-b607-23b45186ff7a"
SVC = "svc-pwasync@contoso.onmicrosoft.com"
ALL_PERMISSIONS = [
    "reporting",
    "manage_custom_fields",
    "use_remote_interfaces",
    "view_project_schedule",
    "view_enterprise_resources",
]
INVALID_QUERY = "-1, Microsoft.SharePoint.Client.InvalidClientQueryException"
ACCESS_DENIED = "-2147024891, System.UnauthorizedAccessException"
_LIGHT = {"odata.type", "odata.id", "odata.editLink"}
_VERBOSE = {"__metadata"}
PROJECT_PROPERTIES = {
    "Id",
    "Name",
    "CreatedDate",
    "LastPublishedDate",
    "LastSavedDate",
    "IsCheckedOut",
    "ProjectType",
    "IsEnterpriseProject",
    "StartDate",
    "FinishDate",
    "EnterpriseProjectTypeId",
}


class Pwa:
    """GETs under ``{site}/_api/`` with one authentication."""

    def __init__(
        self,
        sandbox: RunningSandbox,
        http: httpx.Client,
        auth: httpx.Auth | None = None,
        token: str | None = None,
    ) -> None:
        self.site, self.http, self.auth = sandbox.settings["PWASYNC_PWA_URL"], http, auth
        self.token = token

    def get(self, path: str, fmt: str = "light", **params: str) -> httpx.Response:
        headers = {"Accept": ACCEPT[fmt]}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        url = path if path.startswith("https://") else f"{self.site}/_api/{path}"
        return self.http.get(url, params=params or None, headers=headers, auth=self.auth)

    def json(self, path: str, fmt: str = "light", **params: str) -> Any:
        response = self.get(path, fmt, **params)
        assert response.status_code == 200, response.text
        return response.json()

    def rows(self, path: str, fmt: str = "light", **params: str) -> list[dict[str, Any]]:
        body = self.json(path, fmt, **params)
        return body["d"]["results"] if fmt == "verbose" else body["value"]

    def all_rows(self, path: str, fmt: str = "light", **params: str) -> tuple[list, int]:
        """Every page, following next links as a client resolves them; and the page count."""
        url, rows, pages = f"{self.site}/_api/{path}", [], 0
        response = self.get(url, fmt, **params)
        while True:
            assert response.status_code == 200, response.text
            body, pages = response.json(), pages + 1
            page = body["d"] if fmt == "verbose" else body
            rows += page["results"] if fmt == "verbose" else page["value"]
            link = page.get("__next") or page.get("odata.nextLink")
            if not link:
                return rows, pages
            url = urljoin(str(response.url), link)  # relative links resolve against the URL
            response = self.get(url, fmt)


def error(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    found = body.get("odata.error") or body["error"]
    return response.status_code, found["code"], found["message"]["value"]


@pytest.fixture
def se(sandbox_se: RunningSandbox, control_se: SandboxClient, http_se: httpx.Client) -> Pwa:
    return Pwa(sandbox_se, http_se, WindowsAuth(sandbox_se.settings["PWASYNC_PWA_PASSWORD"]))


@pytest.fixture
def online(sandbox: RunningSandbox, http: httpx.Client, pwa_token: TokenFactory) -> Pwa:
    return Pwa(sandbox, http, token=pwa_token())


def _flag_field(control: SandboxClient) -> str:
    """Create the "Create event" field; its REST property name."""
    control.generate(projects=1, tasks_per_project=1, mailboxes=1, flagged=True, ensure_field=True)
    field = next(f for f in control.tenant()["custom_fields"] if f["name"] == "Create event")
    assert field["internal_name"].startswith("Custom_")
    return "Custom_x005f_" + field["internal_name"].removeprefix("Custom_")


# --- projects -----------------------------------------------------------------------------


def test_projects_list_published_projects_and_the_never_published_draft(
    se: Pwa, control_se: SandboxClient
) -> None:
    rows = {row["Id"]: row for row in se.rows("ProjectServer/Projects")}
    seeded = {p["id"]: p for p in control_se.tenant()["projects"]}
    assert set(rows) == set(seeded)
    office = rows[OFFICE]
    assert set(office) - _LIGHT == PROJECT_PROPERTIES
    assert office["LastPublishedDate"] == "2026-11-02T16:45:12.337"  # the seed's publish time
    assert office["Name"] == "Office Relocation Berlin" and office["ProjectType"] == 0
    assert office["StartDate"] == "2026-12-01T09:00:00"
    draft = rows[DRAFT]
    assert draft["LastPublishedDate"] == "0001-01-01T00:00:00"
    assert draft["Name"] == "Warehouse Expansion (draft, never published)"
    assert se.rows(f"ProjectServer/Projects('{DRAFT}')/Tasks") == []  # nothing published yet


def test_verbose_projects_defer_navigations_and_write_iso_dates(se: Pwa) -> None:
    body = se.json(f"ProjectServer/Projects(guid'{OFFICE}')", "verbose")["d"]
    assert body["__metadata"]["type"] == "PS.PublishedProject"
    assert body["Tasks"]["__deferred"]["uri"].endswith(
        f"/pwa/_api/ProjectServer/Projects('{OFFICE}')/Tasks"
    )
    assert {"Assignments", "ProjectResources", "Draft"} <= set(body)
    assert body["CreatedDate"] == "2026-10-05T10:00:00"  # never /Date(…)/ on this API
    assert "ModifiedDate" not in body and "IsMasterProject" not in body


def test_nometadata_rows_are_bare(se: Pwa) -> None:
    body = se.json("ProjectServer/Projects", "nometadata", **{"$select": "Id,Name"})
    assert set(body) == {"value"}
    assert all(set(row) == {"Id", "Name"} for row in body["value"])


def test_projectdata_never_shows_the_draft(online: Pwa) -> None:
    ids = {row["ProjectId"] for row in online.rows("ProjectData/Projects")}
    assert len(ids) == 3 and DRAFT not in ids
    assert DRAFT in {row["Id"] for row in online.rows("ProjectServer/Projects")}


def test_unknown_project_is_a_404(se: Pwa) -> None:
    response = se.get("ProjectServer/Projects('00000000-0000-0000-0000-000000000001')")
    assert error(response)[:2] == (404, "-1, Microsoft.SharePoint.Client.ResourceNotFoundException")


# --- tasks and custom fields --------------------------------------------------------------


def test_tasks_are_the_published_plan_without_the_project_summary(se: Pwa) -> None:
    tasks = {t["Name"]: t for t in se.rows(f"ProjectServer/Projects('{OFFICE}')/Tasks")}
    assert "Office Relocation Berlin" not in tasks and len(tasks) == 9
    assert tasks["Preparation"]["OutlineLevel"] == 1 and tasks["Preparation"]["IsSummary"]
    kick_off = tasks["Kick-off meeting"]
    assert kick_off["OutlineLevel"] == 2 and kick_off["Start"] == "2026-12-01T09:00:00"
    assert tasks["Go-live"]["IsMilestone"] is True
    lessons = tasks["Lessons learned (date to be set)"]
    assert lessons["Start"] == lessons["Finish"] == "0001-01-01T00:00:00"  # never null
    assert {"Created", "Modified", "PercentComplete", "IsActive"} <= set(kick_off)


@pytest.mark.parametrize(
    ("form", "yes", "no"),
    [("bool", True, False), ("text", "True", "False"), ("number", 1, 0), ("yesno", "Yes", "No")],
)
@pytest.mark.parametrize("fmt", ["light", "verbose"])
def test_the_flag_is_written_in_the_configured_form(
    se: Pwa, control_se: SandboxClient, form: str, yes: Any, no: Any, fmt: str
) -> None:
    flag = _flag_field(control_se)
    control_se.flag_tasks([KICK_OFF])
    control_se.flag_tasks([PREPARATION], value=False)
    control_se.config(pwa_flag_value_form=form)
    rows = {
        t["Id"]: t
        for t in se.rows(
            f"ProjectServer/Projects('{OFFICE}')/Tasks", fmt, **{"$select": f"Id,{flag}"}
        )
    }
    assert rows[KICK_OFF][flag] == yes and rows[PREPARATION][flag] == no
    assert rows[LESSONS][flag] is None  # unset: null by default


def test_an_unset_flag_can_be_left_out_of_the_row(se: Pwa, control_se: SandboxClient) -> None:
    flag = _flag_field(control_se)
    control_se.flag_tasks([KICK_OFF])
    control_se.config(pwa_flag_unset="missing")
    rows = {t["Id"]: t for t in se.rows(f"ProjectServer/Projects('{OFFICE}')/Tasks")}
    assert rows[KICK_OFF][flag] is True and flag not in rows[LESSONS]


def test_the_seeded_draft_flag_waits_for_the_field(se: Pwa, control_se: SandboxClient) -> None:
    flag = _flag_field(control_se)  # creating the field sets the draft's seeded flag
    control_se.publish_project(DRAFT)
    [task] = se.rows(f"ProjectServer/Projects('{DRAFT}')/Tasks")
    assert task["Id"] == DRAFT_TASK and task[flag] is True
    [project] = se.rows("ProjectServer/Projects", **{"$filter": f"Id eq guid'{DRAFT}'"})
    assert project["LastPublishedDate"] != "0001-01-01T00:00:00"


def test_task_row_overrides_apply_by_rest_names(se: Pwa, control_se: SandboxClient) -> None:
    flag = _flag_field(control_se)
    control_se.config(
        task_row_overrides={KICK_OFF: {"Start": "not a date", flag: "maybe", "TaskName": "x"}}
    )
    rows = {t["Id"]: t for t in se.rows(f"ProjectServer/Projects('{OFFICE}')/Tasks")}
    assert rows[KICK_OFF]["Start"] == "not a date" and rows[KICK_OFF][flag] == "maybe"
    assert rows[KICK_OFF]["Name"] == "Kick-off meeting"  # a ProjectData name does not apply


# --- assignments, resources, $expand and $select ------------------------------------------


def test_assignments_expand_their_task_and_project_resource(se: Pwa) -> None:
    rows = se.rows(
        f"ProjectServer/Projects('{OFFICE}')/Assignments",
        **{"$select": "Id,Start,Task/Id,Resource/Id,Resource/Email", "$expand": "Task,Resource"},
    )
    kick_off = next(a for a in rows if a["Task"]["Id"] == KICK_OFF)
    assert set(kick_off) == {"Id", "Start", "Task", "Resource"} | _LIGHT
    assert kick_off["Resource"]["Id"] == ADELE_RESOURCE  # the enterprise resource's id
    assert kick_off["Resource"]["Email"] == "adele.vance@contoso.onmicrosoft.com"
    assert kick_off["Resource"]["odata.type"] == "PS.PublishedProjectResource"
    no_mail = next(a for a in rows if a["Task"]["Id"] == "5b14e6d6-19af-5ee6-8b95-812f32dc7685")
    assert no_mail["Resource"]["Email"] == ""


def test_verbose_expanded_collections_are_results_and_light_ones_lists(se: Pwa) -> None:
    options = {"$filter": f"Id eq guid'{OFFICE}'", "$expand": "Tasks", "$select": "Id,Tasks/Name"}
    [verbose] = se.rows("ProjectServer/Projects", "verbose", **options)
    assert len(verbose["Tasks"]["results"]) == 9 and "Assignments" not in verbose
    [light] = se.rows("ProjectServer/Projects", **options)
    assert isinstance(light["Tasks"], list) and set(light["Tasks"][0]) >= {"Name"}


def test_the_fallback_reads_a_project_through_filter_and_expand(
    se: Pwa, control_se: SandboxClient
) -> None:
    control_se.config(pwa_refuse_task_navigation=True)
    for navigation in ("Tasks", "Assignments"):
        assert se.get(f"ProjectServer/Projects('{OFFICE}')/{navigation}").status_code == 404
    found = se.rows(
        "ProjectServer/Projects",
        **{
            "$filter": f"(Id eq guid'{OFFICE}' or Id eq guid'{DRAFT}') and ProjectType eq 0",
            "$expand": "Tasks,Assignments/Task,Assignments/Resource",
            "$select": "Id,Tasks/Id,Tasks/Name,Assignments/Id,Assignments/Task/Id,"
            "Assignments/Resource/Email",
        },
    )
    assert {p["Id"] for p in found} == {OFFICE, DRAFT}
    project = next(p for p in found if p["Id"] == OFFICE)
    assert len(project["Tasks"]) == 9 and set(project["Tasks"][0]) >= {"Id", "Name"}
    emails = {a["Resource"]["Email"] for a in project["Assignments"]}
    assert "alex.wilber@contoso.onmicrosoft.com" in emails


def test_a_nested_select_without_its_expand_is_refused(se: Pwa) -> None:
    response = se.get(f"ProjectServer/Projects('{OFFICE}')/Assignments", **{"$select": "Task/Id"})
    assert error(response) == (
        400,
        INVALID_QUERY,
        "The query to field 'Task/Id' is not valid. The $select query string must specify the "
        "target fields and the $expand query string must contains Task.",
    )


@pytest.mark.parametrize(
    "params",
    [
        {"$select": "ModifiedDate"},
        {"$expand": "Nothing"},
        {"$filter": "Nope eq 1"},
        {"$orderby": "X"},
    ],
)
def test_unknown_properties_are_400s(se: Pwa, params: dict[str, str]) -> None:
    status, code, _ = error(se.get("ProjectServer/Projects", **params))
    assert (status, code) == (400, INVALID_QUERY)


def test_enterprise_resources(se: Pwa) -> None:
    rows = {r["Id"]: r for r in se.rows("ProjectServer/EnterpriseResources")}
    adele = rows[ADELE_RESOURCE]
    assert adele["ResourceType"] == 1 and adele["IsGeneric"] is False and adele["IsTeam"] is False
    assert rows["0547bd4d-de5b-58b6-bd2b-3d2460e73cdb"]["IsActive"] is False
    single = se.json(f"ProjectServer/EnterpriseResources('{ADELE_RESOURCE}')")
    assert single["Email"] == "adele.vance@contoso.onmicrosoft.com"
    team = se.rows(
        f"ProjectServer/Projects('{OFFICE}')/ProjectResources",
        **{"$expand": "EnterpriseResource", "$select": "Id,EnterpriseResource/IsActive"},
    )
    assert {r["Id"] for r in team} >= {ADELE_RESOURCE}
    assert all(r["EnterpriseResource"]["IsActive"] for r in team)


def test_orderby_top_and_skip(se: Pwa) -> None:
    names = [
        r["Name"]
        for r in se.rows(
            "ProjectServer/Projects",
            **{"$select": "Name", "$orderby": "Name desc", "$top": "2", "$skip": "1"},
        )
    ]
    assert names == ["Portfolio 2027 (master project)", "Office Relocation Berlin"]


# --- paging -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["light", "verbose"])
def test_se_pages_tasks_with_relative_next_links(
    se: Pwa, control_se: SandboxClient, fmt: str
) -> None:
    [project] = control_se.generate(projects=1, tasks_per_project=250, mailboxes=1)["project_ids"]
    control_se.config(pwa_page_sizes={"ProjectServer/Tasks": 100})
    first = se.json(f"ProjectServer/Projects('{project}')/Tasks", fmt, **{"$select": "Id,Name"})
    link = first["d"]["__next"] if fmt == "verbose" else first["odata.nextLink"]
    assert link == "Tasks?$select=Id,Name&$skip=100"  # relative to the request URL
    rows, pages = se.all_rows(
        f"ProjectServer/Projects('{project}')/Tasks", fmt, **{"$select": "Id,Name"}
    )
    assert len(rows) == 250 and pages == 3 and len({r["Id"] for r in rows}) == 250
    assert set(rows[0]) == {"Id", "Name"} | (_VERBOSE if fmt == "verbose" else _LIGHT)


def test_online_next_links_are_absolute_by_default(online: Pwa, control: SandboxClient) -> None:
    control.generate(projects=5, tasks_per_project=1, mailboxes=1)
    control.config(pwa_page_sizes={"ProjectServer/Projects": 3})
    body = online.json("ProjectServer/Projects", **{"$select": "Id"})
    assert body["odata.nextLink"].startswith("https://127.0.0.1:")
    rows, pages = online.all_rows("ProjectServer/Projects", **{"$select": "Id"})
    assert len(rows) == 3 + 1 + 5 and pages == 3
    control.config(pwa_next_link_style="relative")
    relative = online.json("ProjectServer/Projects", **{"$select": "Id"})["odata.nextLink"]
    assert relative.startswith("Projects?")


def test_enterprise_resources_and_assignments_are_paged_too(
    se: Pwa, control_se: SandboxClient
) -> None:
    control_se.config(
        pwa_page_sizes={"ProjectServer/EnterpriseResources": 4, "ProjectServer/Assignments": 2}
    )
    resources, pages = se.all_rows("ProjectServer/EnterpriseResources")
    assert len(resources) == 10 and pages == 3
    assignments, pages = se.all_rows(f"ProjectServer/Projects('{OFFICE}')/Assignments")
    assert len(assignments) == 8 and pages == 4
    expanded = se.rows(
        "ProjectServer/Projects", **{"$expand": "Assignments", "$filter": f"Id eq guid'{OFFICE}'"}
    )
    assert len(expanded[0]["Assignments"]) == 8  # expanded collections are never paged


# --- permissions --------------------------------------------------------------------------


def test_without_use_remote_interfaces_every_projectserver_call_is_denied(
    se: Pwa, control_se: SandboxClient
) -> None:
    control_se.update_user(
        SVC, pwa_permissions=[p for p in ALL_PERMISSIONS if p != "use_remote_interfaces"]
    )
    for path in (
        "ProjectServer/Projects",
        f"ProjectServer/Projects('{OFFICE}')/Tasks",
        "ProjectServer/EnterpriseResources",
        "ProjectServer/CustomFields",
        "ProjectServer/EntityTypes/TaskEntity",
    ):
        assert error(se.get(path))[:2] == (403, ACCESS_DENIED), path


def test_without_view_project_schedule_projects_are_trimmed(
    se: Pwa, control_se: SandboxClient
) -> None:
    control_se.update_user(
        SVC, pwa_permissions=[p for p in ALL_PERMISSIONS if p != "view_project_schedule"]
    )
    assert se.rows("ProjectServer/Projects") == []
    for path in ("", "/Tasks", "/Assignments"):
        assert se.get(f"ProjectServer/Projects('{OFFICE}'){path}").status_code == 403
    assert se.get("ProjectServer/EnterpriseResources").status_code == 200


def test_without_view_enterprise_resources_the_pool_is_denied(
    se: Pwa, control_se: SandboxClient
) -> None:
    control_se.update_user(
        SVC, pwa_permissions=[p for p in ALL_PERMISSIONS if p != "view_enterprise_resources"]
    )
    assert se.get("ProjectServer/EnterpriseResources").status_code == 403
    assert se.get(f"ProjectServer/Projects('{OFFICE}')/Tasks").status_code == 200


def test_the_reporting_reader_cannot_use_the_rest_api_online(
    sandbox: RunningSandbox, control: SandboxClient, http: httpx.Client, pwa_token: TokenFactory
) -> None:
    reader = Pwa(
        sandbox, http, token=pwa_token("pwa-reader@contoso.onmicrosoft.com", "Sandbox-Reader-2026!")
    )
    assert error(reader.get("ProjectServer/Projects"))[:2] == (403, ACCESS_DENIED)
    assert reader.get("ProjectData/Projects").status_code == 200
    assert reader.get("ProjectServer/CustomFields").status_code == 200  # as before


# --- stats --------------------------------------------------------------------------------


def test_requests_are_counted_by_their_path_keys(se: Pwa, control_se: SandboxClient) -> None:
    for path in (
        "ProjectServer/Projects",
        f"ProjectServer/Projects('{OFFICE}')",
        f"ProjectServer/Projects(guid'{OFFICE}')/Tasks",
        f"ProjectServer/Projects('{OFFICE}')/Assignments",
        "ProjectServer/EnterpriseResources",
        "ProjectServer/CustomFields",
        "web/RegionalSettings/TimeZone",
        "ProjectData/Tasks",
    ):
        se.get(path)
    assert control_se.stats()["pwa"]["by_path"] == {
        "ProjectData/Tasks": 1,
        "ProjectServer/CustomFields": 1,
        "ProjectServer/EnterpriseResources": 1,
        "ProjectServer/Projects": 3,  # the logon's two 401s and the answer
        "ProjectServer/Projects()": 1,
        "ProjectServer/Projects()/Assignments": 1,
        "ProjectServer/Projects()/Tasks": 1,
        "web/RegionalSettings/TimeZone": 1,
    }
