"""The Planner reader against the sandbox's Graph: pages, throttling, users, refusals."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from common.errors import PermanentApiError
from common.http import new_http_client
from common.identity import GraphAppTokens
from sandbox.planner_client import PlannerControl
from services.poller.planner_graph import SERVICE, PlannerGraph
from services.poller.planner_reader import PlannerReader, open_planner
from services.poller.pwa_auth import BearerAuth
from services.poller.pwa_http import PwaHttp
from services.poller.source import ProjectRow, TaskRow
from tests.sandbox.conftest import http_counts, settings_for

ADELE = "adele.vance@contoso.onmicrosoft.com"


@pytest.fixture
def planner(control) -> PlannerControl:
    return PlannerControl(control)


@pytest.fixture
def graph(sandbox, control):
    settings = settings_for(sandbox)
    with new_http_client(ca_bundle=settings.ca_bundle) as http:
        edge = PwaHttp(
            http,
            settings.graph_url,
            BearerAuth(GraphAppTokens(settings, http)),
            service=SERVICE,
            sleep=lambda seconds: None,
        )
        yield PlannerGraph(edge)


def reader(graph: PlannerGraph, plans: list[str], groups: list[str]) -> PlannerReader:
    return PlannerReader(
        graph,
        plan_ids=plans,
        group_ids=groups,
        label="Create event",
        zone=ZoneInfo("Europe/Berlin"),
    )


def test_a_plan_of_700_tasks_is_read_over_two_pages_once(planner, graph):
    plan = planner.plan("Office move")
    planner.generate(plan["id"], 699, label_every=100, assignees=[ADELE])
    source = reader(graph, [plan["id"]], [])
    planner.reset_requests()
    [listed] = list(source.projects())
    assert isinstance(listed, ProjectRow) and listed.version
    rows = [r for r in source.tasks(plan["id"]) if isinstance(r, TaskRow)]
    assert len(rows) == 700 and sum(r.flagged for r in rows) == 8
    assert planner.requests() == {"plan": 1, "plan_details": 1, "plan_tasks": 2}


def test_users_are_looked_up_once_and_give_mail_or_nothing(planner, graph, control):
    users = {u["upn"]: u["id"] for u in control.tenant()["users"]}
    source = reader(graph, [], [planner.plan("Product launch")["group_id"]])
    planner.reset_requests()
    wanted = {users[ADELE], users["svc-pwasync@contoso.onmicrosoft.com"], "gone-user-id"}
    found = {r.resource_id: r.email for r in source.resources(wanted)}
    # A user without a mailbox has no mail: the UPN stands in; a deleted one has nothing.
    assert found == {
        users[ADELE]: ADELE,
        users["svc-pwasync@contoso.onmicrosoft.com"]: "svc-pwasync@contoso.onmicrosoft.com",
        "gone-user-id": None,
    }
    list(source.resources(wanted))
    assert planner.requests() == {"user": 3}


def test_throttling_is_waited_out_and_a_missing_role_is_a_clear_refusal(sandbox, planner, graph):
    plan_id = planner.plan("Product launch")["id"]
    planner.config(throttle_next=2, retry_after_s=0.1)
    assert len(graph.tasks(plan_id)) == 5
    assert planner.requests()["plan_tasks"] == 3

    planner.set_app_roles(sandbox.settings["PWASYNC_GRAPH_CLIENT_ID"], ["Calendars.ReadWrite"])
    settings = settings_for(sandbox)
    with new_http_client(ca_bundle=settings.ca_bundle) as http:
        edge = PwaHttp(
            http, settings.graph_url, BearerAuth(GraphAppTokens(settings, http)), service=SERVICE
        )
        with pytest.raises(PermanentApiError) as refused:
            PlannerGraph(edge).tasks(plan_id)
    assert refused.value.status == 403 and "permissions" in str(refused.value)


def test_a_deleted_plan_or_group_is_not_listed(planner, graph):
    launch = planner.plan("Product launch")
    office = planner.plan("Office move")
    planner.delete_plan(office["id"])
    source = reader(graph, [office["id"]], [launch["group_id"], "unknown-group"])
    assert {row.name for row in source.projects()} == {"Product launch", "Website refresh"}


def test_planner_reads_are_counted_under_their_own_metric_label(sandbox, planner):
    plan_id = planner.plan("Product launch")["id"]
    planner.config(throttle_next=1, retry_after_s=0.1)
    settings = settings_for(sandbox, source="planner", planner_plans=plan_id)
    before = {service: http_counts(service) for service in ("planner", "pwa")}
    with new_http_client(ca_bundle=settings.ca_bundle) as http:
        assert len(open_planner(settings, http).graph.tasks(plan_id)) == 5
    requests, throttled = http_counts("planner")
    assert requests - before["planner"][0] == 2 and throttled - before["planner"][1] == 1
    assert http_counts("pwa") == before["pwa"]  # the alerts tell the sources apart
