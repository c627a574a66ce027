"""The sandbox's basic Planner: Graph's shapes, paging, ETags, rights, throttling, users."""

from __future__ import annotations

import re

import httpx
import pytest

from sandbox.client import SandboxClient
from sandbox.planner_client import PlannerControl
from tests.sandbox.conftest import RunningSandbox

PLANNER_ID = re.compile(r"^[A-Za-z0-9_-]{28}$")


@pytest.fixture
def planner(control: SandboxClient) -> PlannerControl:
    return PlannerControl(control)


@pytest.fixture
def get(sandbox: RunningSandbox, http: httpx.Client, graph_token: str):
    def call(path: str, token: str | None = None, **params: str) -> httpx.Response:
        return http.get(
            f"{sandbox.settings['PWASYNC_GRAPH_URL']}{path}",
            params=params or None,
            headers={"Authorization": f"Bearer {token or graph_token}"},
        )

    return call


def test_plans_details_and_tasks_have_graphs_shapes(planner, get):
    plan = planner.plan("Product launch")
    assert PLANNER_ID.match(plan["id"])
    body = get(f"/planner/plans/{plan['id']}").json()
    assert body["title"] == "Product launch" and body["@odata.etag"].startswith('W/"')
    assert body["container"]["containerId"] == plan["group_id"]
    details = get(f"/planner/plans/{plan['id']}/details").json()
    assert details["categoryDescriptions"]["category1"] == "Create event"
    assert len(details["categoryDescriptions"]) == 25
    tasks = get(f"/planner/plans/{plan['id']}/tasks").json()
    assert "@odata.nextLink" not in tasks
    webinar = next(t for t in tasks["value"] if t["title"] == "Launch webinar")
    # Dates are the UTC instants of local midnight in the tenant's zone (Europe/Berlin).
    assert webinar["startDateTime"] == "2026-12-07T23:00:00Z"
    assert webinar["dueDateTime"] == "2026-12-07T23:00:00Z"
    assert webinar["appliedCategories"] == {"category1": True}
    assert len(webinar["assignments"]) == 2 and PLANNER_ID.match(webinar["id"])
    venue = next(t for t in tasks["value"] if t["title"] == "Venue booking")
    assert venue["dueDateTime"] is None
    groups = get(f"/groups/{plan['group_id']}/planner/plans").json()["value"]
    assert {p["title"] for p in groups} == {"Product launch", "Website refresh"}


def test_every_edit_moves_the_tasks_etag_and_a_label_taken_off_stays_false(planner, get):
    plan = planner.plan("Product launch")
    task_id = plan["tasks"]["Launch webinar"]
    before = get(f"/planner/tasks/{task_id}").json()["@odata.etag"]
    planner.update_task(task_id, labels=[])
    after = get(f"/planner/tasks/{task_id}").json()
    assert after["@odata.etag"] != before
    assert after["appliedCategories"] == {"category1": False}
    planner.update_plan(plan["id"], categories={"category2": "Sync"})
    details = get(f"/planner/plans/{plan['id']}/details").json()
    assert details["categoryDescriptions"]["category2"] == "Sync"


def test_tasks_come_in_fixed_pages_with_an_opaque_next_link(planner, get):
    plan = planner.plan("Office move")
    planner.generate(plan["id"], 700, label_every=7)
    first = get(f"/planner/plans/{plan['id']}/tasks").json()
    assert len(first["value"]) == 400 and "$skiptoken=" in first["@odata.nextLink"]
    second = httpx_get_link(get, first["@odata.nextLink"])
    assert len(second["value"]) == 301 and "@odata.nextLink" not in second
    ids = {t["id"] for t in first["value"]} | {t["id"] for t in second["value"]}
    assert len(ids) == 701
    assert get(f"/planner/plans/{plan['id']}/tasks", **{"$top": "10"}).status_code == 400


def httpx_get_link(get, link: str) -> dict:
    path = link.split("/v1.0", 1)[1]
    base, _, query = path.partition("?")
    name, _, value = query.partition("=")
    return get(base, **{name: value}).json()


def test_reads_need_tasks_read_all_and_users_need_user_read_all(
    sandbox, http, planner, get, control
):
    plan_id = planner.plan("Product launch")["id"]
    client_id = sandbox.settings["PWASYNC_GRAPH_CLIENT_ID"]
    planner.set_app_roles(client_id, ["Calendars.ReadWrite"])
    token = http.post(
        sandbox.token_url,
        data={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": sandbox.settings["PWASYNC_GRAPH_CLIENT_SECRET"],
            "scope": "https://graph.microsoft.com/.default",
        },
    ).json()["access_token"]
    assert get(f"/planner/plans/{plan_id}/tasks", token=token).status_code == 403
    denied = get("/users/adele.vance@contoso.onmicrosoft.com", token=token)
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "Authorization_RequestDenied"


def test_users_by_id_answer_mail_and_upn_and_unknown_ids_404(get, control):
    adele = next(u for u in control.tenant()["users"] if u["upn"].startswith("adele"))
    body = get(f"/users/{adele['id']}", **{"$select": "mail,userPrincipalName"}).json()
    assert body["mail"] == adele["upn"] and set(body) == {
        "@odata.context",
        "mail",
        "userPrincipalName",
    }
    service = next(u for u in control.tenant()["users"] if u["mailbox"] == "no")
    assert get(f"/users/{service['id']}").json()["mail"] is None
    assert get("/users/00000000-0000-0000-0000-000000000000").status_code == 404
    assert get("/planner/plans/NotAPlanIdAtAllxxxxxxxxxxxxx").status_code == 404


def test_throttled_planner_reads_answer_429_with_retry_after(planner, get):
    plan_id = planner.plan("Product launch")["id"]
    planner.config(throttle_next=1, retry_after_s=2)
    throttled = get(f"/planner/plans/{plan_id}/tasks")
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "2"
    assert get(f"/planner/plans/{plan_id}/tasks").status_code == 200
    assert planner.requests()["plan_tasks"] == 2
