"""`pwasync check`'s Planner lines against the sandbox: what passes, what each failure says."""

from __future__ import annotations

import pytest

from common.http import new_http_client
from sandbox.planner_client import PlannerControl
from services.poller.planner_check import planner_fields, planner_lines
from tests.sandbox.conftest import settings_for

ADELE = "adele.vance@contoso.onmicrosoft.com"


@pytest.fixture
def planner(control) -> PlannerControl:
    return PlannerControl(control)


def lines_for(sandbox, planner, mailbox=ADELE, **overrides):
    configured = {
        "source": "planner",
        "planner_groups": planner.plan("Product launch")["group_id"],
        "planner_plans": planner.plan("Office move")["id"],
        **overrides,
    }
    settings = settings_for(sandbox, **configured)
    with new_http_client(ca_bundle=settings.ca_bundle) as http:
        return {line.name: line for line in planner_lines(settings, http, mailbox)}


def test_every_plan_has_its_label_and_every_read_is_allowed(sandbox, planner):
    lines = lines_for(sandbox, planner)
    assert all(line.ok for line in lines.values()), [line.render() for line in lines.values()]
    office = planner.plan("Office move")
    assert lines[f"Planner plan 'Office move' ({office['id']})"].detail == (
        "label 'Create event' is category1"
    )


def test_a_plan_without_the_label_says_which_labels_it_has(sandbox, planner):
    launch = planner.plan("Product launch")
    planner.update_plan(launch["id"], categories={"category1": "Event"})
    line = lines_for(sandbox, planner)[f"Planner plan 'Product launch' ({launch['id']})"]
    assert not line.ok
    assert "no label named 'Create event'" in line.detail and "'Event', 'Urgent'" in line.detail


def test_missing_permissions_and_unknown_ids_say_what_to_do(sandbox, planner):
    planner.set_app_roles(sandbox.settings["PWASYNC_GRAPH_CLIENT_ID"], ["Calendars.ReadWrite"])
    lines = lines_for(sandbox, planner, planner_plans="NoSuchPlanxxxxxxxxxxxxxxxxxx")
    token = lines["Planner: Graph token (Tasks.Read.All)"]
    assert (
        not token.ok and "grant the app the application permission Tasks.Read.All" in token.detail
    )
    group = next(line for name, line in lines.items() if name.startswith("Planner group"))
    assert not group.ok and "access denied" in group.detail
    users = lines["Planner: assignees' addresses (User.Read.All)"]
    assert not users.ok and "User.Read.All" in users.detail

    planner.set_app_roles(
        sandbox.settings["PWASYNC_GRAPH_CLIENT_ID"], ["Calendars.ReadWrite", "Tasks.Read.All"]
    )
    lines = lines_for(sandbox, planner, planner_plans="NoSuchPlanxxxxxxxxxxxxxxxxxx")
    missing = lines["Planner plan NoSuchPlanxxxxxxxxxxxxxxxxxx"]
    assert not missing.ok and "PWASYNC_PLANNER_PLANS" in missing.detail


def test_fields_on_planner_verify_the_label_in_every_plan_and_create_nothing(sandbox, planner):
    settings = settings_for(
        sandbox, source="planner", planner_groups=planner.plan("Product launch")["group_id"]
    )
    with new_http_client(ca_bundle=settings.ca_bundle) as http:
        lines, ok = planner_fields(settings, http, "verify")
        assert ok and len(lines) == 2 and all("label 'Create event' is" in line for line in lines)
        planner.update_plan(planner.plan("Website refresh")["id"], categories={"category4": None})
        lines, ok = planner_fields(settings, http, "create")
    assert not ok and "pwasync only reads plans" in lines[0]
    assert any("'Website refresh'" in line and "no label named" in line for line in lines)
