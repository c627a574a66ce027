"""The sandbox's Dataverse Web API behaves as the real one does where pwasync depends on it:
app-only tokens for the environment, application users, paging, change tracking and its
refusals, metadata, service protection."""

from __future__ import annotations

import httpx
import pytest

from sandbox.client import SandboxClient
from sandbox.dataverse_client import DataverseControl

pytestmark = pytest.mark.integration


@pytest.fixture
def dataverse(sandbox, http, control):
    """(get, environment URL): GETs against the Web API with an app-only token."""
    env = sandbox.settings["PWASYNC_DATAVERSE_URL"]
    response = http.post(
        sandbox.token_url,
        data={
            "grant_type": "client_credentials",
            "client_id": sandbox.settings["PWASYNC_DATAVERSE_CLIENT_ID"],
            "client_secret": sandbox.settings["PWASYNC_DATAVERSE_CLIENT_SECRET"],
            "scope": f"{env}/.default",
        },
    )
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]

    def get(path: str, prefer: str | None = None, token_: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token_ or token}", "Accept": "application/json"}
        if prefer:
            headers["Prefer"] = prefer
        url = path if path.startswith("https://") else f"{env}/api/data/v9.2/{path}"
        return http.get(url, headers=headers)

    return get


def _dv(control: SandboxClient, method: str, path: str, body=None):
    return DataverseControl(control).call(method, path, body)


def test_the_environment_is_its_own_audience(sandbox, http, dataverse, graph_token):
    assert sandbox.settings["PWASYNC_DATAVERSE_URL"].startswith("https://localhost:")
    assert dataverse("WhoAmI").json()["UserId"]
    refused = dataverse("WhoAmI", token_=graph_token)
    assert refused.status_code == 401 and "audience" in refused.json()["error"]["message"]


def test_paging_follows_next_links_with_the_same_preference(dataverse, control):
    _dv(control, "POST", "/generate", {"name": "Big", "tasks": 12, "labelled": False})
    url = "msdyn_projecttasks?$select=msdyn_subject,_msdyn_project_value"
    ids, pages = [], 0
    while url:
        response = dataverse(url, prefer="odata.maxpagesize=5")
        assert response.headers["Preference-Applied"] == "odata.maxpagesize=5"
        body = response.json()
        ids += [row["msdyn_projecttaskid"] for row in body["value"]]
        url, pages = body.get("@odata.nextLink"), pages + 1
    assert len(ids) == len(set(ids)) == 12 + 10 and pages == 5


def test_change_tracking_reports_changes_and_deletions(dataverse, control):
    first = dataverse("msdyn_projecttasks?$select=msdyn_subject", prefer="odata.track-changes")
    delta = first.json()["@odata.deltaLink"]
    assert "$deltatoken=" in delta
    assert dataverse(delta).json()["value"] == []
    rows = _dv(control, "GET", "/rows/msdyn_projecttasks")["value"]
    changed, gone = rows[0]["msdyn_projecttaskid"], rows[1]["msdyn_projecttaskid"]
    _dv(control, "PATCH", f"/rows/msdyn_projecttasks/{changed}", {"msdyn_subject": "Renamed"})
    _dv(control, "DELETE", f"/rows/msdyn_projecttasks/{gone}")
    body = dataverse(delta).json()
    by_id = {row.get("msdyn_projecttaskid") or row["id"]: row for row in body["value"]}
    assert by_id[changed]["msdyn_subject"] == "Renamed"
    assert by_id[gone]["reason"] == "deleted"
    assert by_id[gone]["@odata.context"].endswith("msdyn_projecttasks/$deletedEntity")
    assert body["@odata.deltaLink"] != delta


@pytest.mark.parametrize("option", ["$filter=statecode eq 0", "$top=1", "$orderby=modifiedon"])
def test_change_tracking_refuses_query_options(dataverse, option):
    response = dataverse(f"msdyn_projecttasks?{option}", prefer="odata.track-changes")
    assert response.status_code == 400


def test_a_table_without_change_tracking_and_an_expired_token_are_refused(dataverse, control):
    delta = dataverse("msdyn_projecttasks", prefer="odata.track-changes").json()["@odata.deltaLink"]
    _dv(control, "POST", "/delta-tokens/expire")
    assert dataverse(delta).status_code == 400
    _dv(control, "POST", "/change-tracking", {"table": "msdyn_projecttask", "enabled": False})
    meta = dataverse(
        "EntityDefinitions(LogicalName='msdyn_projecttask')?$select=ChangeTrackingEnabled"
    )
    assert meta.json()["ChangeTrackingEnabled"] is False
    assert dataverse("msdyn_projecttasks", prefer="odata.track-changes").status_code == 400
    # A watermark query still works.
    rows = dataverse("msdyn_projecttasks?$filter=modifiedon ge 2000-01-01T00:00:00Z").json()
    assert rows["value"]


def test_filters_take_bare_guids(dataverse, control):
    task = _dv(control, "GET", "/rows/msdyn_projecttasks")["value"][0]
    project = task["_msdyn_project_value"]
    rows = dataverse(f"msdyn_projecttasks?$filter=_msdyn_project_value eq {project}").json()
    assert rows["value"] and {r["_msdyn_project_value"] for r in rows["value"]} == {project}


def test_service_protection_answers_429_with_retry_after(dataverse, control):
    _dv(control, "POST", "/protection", {"limit": 2, "window_s": 30})
    assert dataverse("WhoAmI").status_code == 200
    assert dataverse("WhoAmI").status_code == 200
    throttled = dataverse("WhoAmI")
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1


def test_the_application_user_s_privileges_are_listed_with_their_depth(dataverse, control):
    control.reset()
    body = _dv(control, "GET", "")
    user = body["application_users"][0]
    privileges = dataverse(
        f"systemusers({user['systemuser_id']})/Microsoft.Dynamics.CRM.RetrieveUserPrivileges()"
    ).json()["RolePrivileges"]
    assert {
        "Depth": "Global",
        "PrivilegeName": "prvReadmsdyn_projecttask",
        "BusinessUnitId": None,
    } in privileges
