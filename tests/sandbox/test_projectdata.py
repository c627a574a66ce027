"""The ProjectData feed: formats, paging, query options and access rules."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from sandbox.client import SandboxClient
from tests.sandbox.conftest import RunningSandbox, TokenFactory

VERBOSE = {"Accept": "application/json;odata=verbose"}
LIGHT = {"Accept": "application/json"}
RELOCATION = "bdd9ba3c-6a37-5353-b794-b68ac4e6a39f"  # "Office Relocation Berlin" in the seed


def _feed(sandbox: RunningSandbox, path: str) -> str:
    return f"{sandbox.settings['PWASYNC_PWA_URL']}/_api/ProjectData/{path}"


def _get(
    http: httpx.Client, url: str, token: str, headers: dict[str, str] = LIGHT, **params: str
) -> httpx.Response:
    return http.get(
        url, params=params or None, headers={**headers, "Authorization": f"Bearer {token}"}
    )


def test_seed_projects_and_summary_tasks(
    sandbox: RunningSandbox, http: httpx.Client, pwa_token: TokenFactory
) -> None:
    token = pwa_token()
    projects = _get(http, _feed(sandbox, "Projects"), token).json()["value"]
    assert {p["ProjectType"] for p in projects} == {0, 6}
    tasks = _get(
        http,
        _feed(sandbox, f"Projects(guid'{RELOCATION}')/Tasks"),
        token,
        **{"$orderby": "TaskIndex"},
    ).json()["value"]
    summary = tasks[0]
    assert (summary["TaskIndex"], summary["TaskIsProjectSummary"], summary["TaskName"]) == (
        0,
        True,
        "Office Relocation Berlin",
    )
    assert [t["TaskIndex"] for t in tasks] == list(range(len(tasks)))
    prep = next(t for t in tasks if t["TaskName"] == "Preparation")
    assert prep["TaskIsSummary"] and prep["TaskStartDate"] == "2026-12-01T09:00:00"
    undated = next(t for t in tasks if t["TaskName"].startswith("Lessons"))
    assert undated["TaskStartDate"] is None
    assert "Createevent" not in summary  # the default seed has no custom field


def test_verbose_format_dates_and_metadata(
    sandbox: RunningSandbox, http: httpx.Client, pwa_token: TokenFactory
) -> None:
    response = _get(http, _feed(sandbox, f"Projects(guid'{RELOCATION}')"), pwa_token(), VERBOSE)
    assert response.headers["content-type"].startswith("application/json;odata=verbose")
    assert '"\\/Date(' in response.text  # WCF escapes the solidus
    project = response.json()["d"]
    assert project["__metadata"]["type"] == "ReportingData.Project"
    # 2026-11-02T16:45:12.337 Berlin wall-clock time, encoded as if it were UTC.
    expected = int(datetime(2026, 11, 2, 16, 45, 12, 337000, tzinfo=UTC).timestamp() * 1000)
    assert project["ProjectModifiedDate"] == f"/Date({expected})/"
    assert project["Tasks"] == {"__deferred": {"uri": project["__metadata"]["uri"] + "/Tasks"}}


@pytest.mark.parametrize("headers", [VERBOSE, LIGHT])
def test_server_paging_with_next_links(
    sandbox: RunningSandbox,
    http: httpx.Client,
    control: SandboxClient,
    pwa_token: TokenFactory,
    headers: dict[str, str],
) -> None:
    [project_id] = control.generate(projects=1, tasks_per_project=700, mailboxes=3)["project_ids"]
    url, token = _feed(sandbox, "Tasks"), pwa_token()
    params = {"$filter": f"ProjectId eq guid'{project_id}'", "$select": "TaskId,TaskName"}
    pages, seen = 0, []
    response = _get(http, url, token, headers, **params)
    while True:
        pages += 1
        body = response.json()
        rows, next_link = (
            (body["d"]["results"], body["d"].get("__next"))
            if headers is VERBOSE
            else (body["value"], body.get("odata.nextLink"))
        )
        seen += [row["TaskId"] for row in rows]
        if not next_link:
            break
        assert "$filter=ProjectId" in next_link and "$skip=" in next_link
        response = _get(http, next_link, token, headers)
    assert pages == 3  # 701 rows (with the project summary task) at 300 per page
    assert len(seen) == len(set(seen)) == 701


def test_top_beyond_page_size_still_pages(
    sandbox: RunningSandbox, http: httpx.Client, control: SandboxClient, pwa_token: TokenFactory
) -> None:
    control.generate(projects=1, tasks_per_project=600, mailboxes=1)
    first = _get(http, _feed(sandbox, "Tasks"), pwa_token(), **{"$top": "500"}).json()
    assert len(first["value"]) == 300
    assert "$top=200" in first["odata.nextLink"] and "$skip=300" in first["odata.nextLink"]
    second = _get(http, first["odata.nextLink"], pwa_token()).json()
    assert len(second["value"]) == 200 and "odata.nextLink" not in second


def test_filter_literals(
    sandbox: RunningSandbox, http: httpx.Client, control: SandboxClient, pwa_token: TokenFactory
) -> None:
    control.create_project(
        "O'Brien's plan",
        [{"name": "It's done", "start": "2027-01-04T08:00:00", "finish": "2027-01-04T12:00:00"}],
    )
    token, url = pwa_token(), _feed(sandbox, "Tasks")
    quoted = _get(http, url, token, **{"$filter": "TaskName eq 'It''s done'"}).json()["value"]
    assert [t["ProjectName"] for t in quoted] == ["O'Brien's plan"]
    dated = _get(
        http,
        url,
        token,
        **{
            "$filter": "TaskStartDate ge datetime'2027-01-01T00:00:00' and "
            "not (TaskIsProjectSummary eq true)"
        },
    ).json()["value"]
    assert [t["TaskName"] for t in dated] == ["It's done"]
    keyed = _get(
        http,
        _feed(sandbox, "Projects"),
        token,
        **{
            "$filter": (
                f"ProjectId eq guid'{RELOCATION.upper()}' or substringof('CRM', ProjectName)"
            ),
            "$orderby": "ProjectName desc",
        },
    ).json()["value"]
    assert [p["ProjectName"] for p in keyed] == ["Office Relocation Berlin", "CRM Rollout"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"$filter": "Nope eq 1"}, "No property 'Nope' exists in type 'ReportingData.Task'"),
        ({"$filter": "ProjectId eq 'not-a-guid'"}, "Operator 'eq' incompatible"),
        ({"$filter": "TaskName eq"}, "Expression expected"),
        ({"$select": "TaskName,Nope"}, "No property 'Nope'"),
        ({"$expand": "Assignments"}, "not implemented"),
        ({"$bogus": "1"}, "system-reserved '$' character"),
        ({"$top": "-1"}, "non-negative integer"),
    ],
)
def test_invalid_queries_get_odata_errors(
    sandbox: RunningSandbox,
    http: httpx.Client,
    pwa_token: TokenFactory,
    params: dict[str, str],
    message: str,
) -> None:
    response = _get(http, _feed(sandbox, "Tasks"), pwa_token(), **params)
    assert response.status_code == 400
    assert message in response.json()["odata.error"]["message"]["value"]


def test_navigation_and_resources(
    sandbox: RunningSandbox, http: httpx.Client, pwa_token: TokenFactory
) -> None:
    token = pwa_token()
    assignments = _get(
        http, _feed(sandbox, f"Projects(guid'{RELOCATION}')/Assignments"), token
    ).json()["value"]
    assert {a["ProjectId"] for a in assignments} == {RELOCATION}
    resources = _get(http, _feed(sandbox, "Resources"), token).json()["value"]
    contractor = next(r for r in resources if r["ResourceName"].startswith("External"))
    assert contractor["ResourceEmailAddress"] is None
    assert _get(http, _feed(sandbox, "Nope"), token).status_code == 404
    metadata = _get(http, _feed(sandbox, "$metadata"), token, {"Accept": "application/xml"})
    assert metadata.text.startswith("<?xml")


def test_only_published_data_is_visible(
    sandbox: RunningSandbox, http: httpx.Client, control: SandboxClient, pwa_token: TokenFactory
) -> None:
    created = control.create_project("Draft only", [{"name": "Hidden"}], publish=False)
    url, token = _feed(sandbox, "Projects"), pwa_token()
    names = lambda: {p["ProjectName"] for p in _get(http, url, token).json()["value"]}  # noqa: E731
    assert "Draft only" not in names()
    control.publish_project(created["project_id"])
    assert "Draft only" in names()


def test_access_rules(
    sandbox: RunningSandbox, http: httpx.Client, graph_token: str, pwa_token: TokenFactory
) -> None:
    url = _feed(sandbox, "Projects")
    assert http.get(url, headers=LIGHT).status_code == 401
    app_only = http.post(
        sandbox.token_url,
        data={
            "grant_type": "client_credentials",
            "client_id": sandbox.settings["PWASYNC_GRAPH_CLIENT_ID"],
            "client_secret": sandbox.settings["PWASYNC_GRAPH_CLIENT_SECRET"],
            "scope": f"{sandbox.url}/.default",
        },
    ).json()["access_token"]
    refused = _get(http, url, app_only)
    assert refused.status_code == 401
    assert "app-only principal" in refused.json()["odata.error"]["message"]["value"]
    wrong_audience = _get(http, url, graph_token)
    assert wrong_audience.status_code == 401
    assert "Invalid audience" in wrong_audience.json()["error_description"]
    no_reporting = _get(
        http, url, pwa_token("adele.vance@contoso.onmicrosoft.com", "Sandbox-User-2026!")
    )
    assert no_reporting.status_code == 403
    assert http.get(url, headers={"Authorization": f"Bearer {pwa_token()}"}).status_code == 406
