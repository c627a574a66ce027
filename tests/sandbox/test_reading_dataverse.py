"""The Planner premium reader against the sandbox's environment, through the real sync runner
and Redis state (the publisher is a list): what is selected and how, what a poll costs, and
how each change is noticed, with change tracking on and off."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from common.http import new_http_client
from common.messages import SyncRequested
from common.redis_store import Keys
from sandbox.dataverse_client import DataverseControl
from services.poller.dataverse_source import open_dataverse_reader
from services.poller.state import PollerState
from services.poller.sync import SyncRunner
from tests.sandbox.conftest import http_counts, settings_for

pytestmark = pytest.mark.integration

ADELE = "adele.vance@contoso.onmicrosoft.com"
NESTOR_OBJECT_ID = "1e358f7e-faa0-5a8b-ba18-903a5f3cd24c"


@pytest.fixture
def dv(control):
    return DataverseControl(control)


@pytest.fixture
def poll(sandbox, dv, redis_client, redis_url, scenario):
    clients = []

    def make(select_by="label", **overrides):
        settings = settings_for(sandbox, scenario, **overrides)
        state = PollerState(redis_client, Keys(scenario), redis_url)
        state.initialize_start(datetime(2000, 1, 1))
        http = new_http_client(ca_bundle=settings.ca_bundle)
        clients.append(http)
        reader, edge = open_dataverse_reader(
            settings, http, redis_client, select_by=select_by, label="Create event"
        )
        published = []
        runner = SyncRunner(
            scenario=scenario,
            feed=reader,
            publish=published.extend,
            state=state,
            pwa_zone=settings.pwa_zone,
            task_link=lambda project_id, task_id: None,
            request_counter=lambda: edge.requests_made,
        )

        def run(**request):
            published.clear()
            dv.reset_stats()
            summary = runner.run(SyncRequested(scenario=scenario, **request))
            return summary, list(published), dv.stats()["by_path"]

        run.reader = reader
        return run

    yield make
    for http in clients:
        http.close()


def _by_name(messages):
    return {m.task_name: m for m in messages}


def test_labelled_tasks_become_events_with_their_assignees_mailboxes(poll, dv):
    run = poll()
    summary, published, _ = run()
    assert published == []  # nothing labelled yet
    dv.label(dv.demo_label_task_ids())
    summary, published, paths = run()
    by_name = _by_name(published)
    assert set(by_name) == {
        "Kick-off meeting",
        "Plan the move",
        "Move day",
        "Book the room",
        "Order furniture",
        "Design review",
        "Launch",
    }
    kickoff = by_name["Kick-off meeting"]
    # UTC instants, in the wall clock of PWASYNC_PWA_TIMEZONE (the sandbox's: Berlin).
    assert kickoff.timezone == "Europe/Berlin"
    assert kickoff.start_utc.isoformat() == "2026-12-14T09:00:00+00:00"
    assert kickoff.start.isoformat() == "2026-12-14T10:00:00"
    assert kickoff.finish.isoformat() == "2026-12-14T12:00:00"
    assert [a.email for a in kickoff.assignees] == [ADELE]
    assert by_name["Move day"].start == by_name["Move day"].finish
    assert [a.email for a in by_name["Order furniture"].assignees] == [NESTOR_OBJECT_ID]
    assert [a.email for a in by_name["Book the room"].assignees] == [None]
    assert summary.tasks_skipped["summary_task"] == 1 and summary.tasks_skipped["no_start"] == 1
    assert "Pack boxes" not in by_name  # labelled "Risk" only

    # Idle: the project list and one delta per watched table.
    summary, published, paths = run()
    assert published == [] and summary.pwa_requests == 5, paths
    assert paths == {
        "msdyn_projects": 1,
        "msdyn_projecttasks": 1,
        "msdyn_resourceassignments": 1,
        "msdyn_projectlabels": 1,
        "msdyn_projecttasktolabels": 1,
    }


def _labelled(poll, dv, **options):
    run = poll(**options)
    run()
    dv.label(dv.demo_label_task_ids())
    run()
    return run


#: What one changed project costs, selecting by label (the list, the deltas, its reads).
CHANGED_PROJECT = {
    "msdyn_projects": 1,
    "msdyn_projecttasks": 2,
    "msdyn_resourceassignments": 2,
    "msdyn_projectlabels": 2,
    "msdyn_projecttasktolabels": 2,
    "bookableresources": 1,
    "systemusers": 1,
}


def test_a_changed_task_is_read_with_its_project_alone_and_updated(poll, dv):
    run = _labelled(poll, dv)
    tasks = dv.task_ids_by_name()
    dv.update("msdyn_projecttasks", tasks["Launch"], msdyn_subject="Launch (moved)")
    summary, published, paths = run()
    assert [m.task_name for m in published] == ["Launch (moved)"]
    assert summary.projects_read == 1 and paths == CHANGED_PROJECT, paths
    assert published[0].change == "upsert"


@pytest.mark.parametrize("tracking", [True, False], ids=["tracked", "watermark"])
def test_every_way_out_of_the_selection_is_a_removal(poll, dv, tracking):
    if not tracking:
        for table in ("msdyn_projecttask", "msdyn_projecttasktolabel", "msdyn_resourceassignment"):
            dv.change_tracking(table, False)
    run = _labelled(poll, dv)
    if not tracking:  # deleted rows are found by sweeps: here every poll is one
        run.reader._changes._reconcile_every = timedelta(0)
    tasks, projects = dv.task_ids_by_name(), dv.project_ids_by_name()

    dv.label([tasks["Kick-off meeting"]], on=False)
    no_dates = dict.fromkeys(
        ("msdyn_scheduledstart", "msdyn_scheduledend", "msdyn_start", "msdyn_finish")
    )
    dv.update("msdyn_projecttasks", tasks["Launch"], **no_dates)
    _, published, _ = run()
    assert sorted((m.change, m.task_name or "") for m in published) == [
        ("remove", ""),
        ("remove", ""),
    ]
    assert {m.task_id for m in published} == {_id(tasks["Kick-off meeting"]), _id(tasks["Launch"])}

    # An assignee taken off changes the task's assignees; the task row does not move.
    [assignment] = [
        a
        for a in dv.rows("msdyn_resourceassignments")
        if a["_msdyn_taskid_value"] == tasks["Plan the move"] and a["msdyn_name"] == "Megan Bowen"
    ]
    dv.delete("msdyn_resourceassignments", assignment["msdyn_resourceassignmentid"])
    dv.delete("msdyn_projecttasks", tasks["Move day"])
    summary, published, _ = run()
    changes = {(m.change, m.task_id): m for m in published}
    assert ("remove", _id(tasks["Move day"])) in changes
    plan = changes[("upsert", _id(tasks["Plan the move"]))]
    assert [a.name for a in plan.assignees] == ["Alex Wilber"]

    dv.delete("msdyn_projects", projects["Website relaunch"])
    summary, published, _ = run()
    assert summary.projects_deleted == 1
    assert {m.task_id for m in published} == {_id(tasks["Design review"])}  # Launch went before


def test_without_change_tracking_a_sweep_finds_deletions_and_idle_costs_the_same(poll, dv):
    for table in ("msdyn_projecttask", "msdyn_projecttasktolabel"):
        dv.change_tracking(table, False)
    run = _labelled(poll, dv, dataverse_reconcile_minutes="1")
    summary, published, paths = run()
    assert published == [] and summary.pwa_requests == 5, paths
    tasks = dv.task_ids_by_name()
    dv.label([tasks["Launch"]], on=False)  # deletes a link row: no modifiedon moves
    _, published, _ = run()
    assert published == []  # not seen before the sweep
    run.reader._changes._reconcile_every = timedelta(0)  # the sweep is due
    _, published, _ = run()
    assert [(m.change, m.task_id) for m in published] == [("remove", _id(tasks["Launch"]))]


def test_an_expired_delta_token_is_read_again_in_full_without_duplicates(poll, dv):
    run = _labelled(poll, dv)
    dv.expire_delta_tokens()
    tasks = dv.task_ids_by_name()
    dv.update("msdyn_projecttasks", tasks["Launch"], msdyn_subject="Launch!")
    _, published, _ = run()
    assert [m.task_name for m in published] == ["Launch!"]
    _, published, _ = run()
    assert published == []


def test_throttling_is_waited_out(poll, dv):
    run = _labelled(poll, dv)
    dv.faults("msdyn_projects", [429])
    before = {service: http_counts(service) for service in ("dataverse", "pwa")}
    summary, published, paths = run()
    assert summary.status == "succeeded" and paths["msdyn_projects"] == 2
    # Counted as Dataverse's, not PWA's: the throttling alert and panels are per source.
    requests, throttled = http_counts("dataverse")
    assert requests - before["dataverse"][0] == sum(paths.values())
    assert throttled - before["dataverse"][1] == 1
    assert http_counts("pwa") == before["pwa"]


def test_selection_by_column_reads_the_yes_no_column(poll, dv, sandbox):
    from common.http import new_http_client as client
    from services.poller.dataverse_auth import open_dataverse
    from services.poller.dataverse_fields import ColumnFields

    settings = settings_for(sandbox)
    with client(ca_bundle=settings.ca_bundle) as http:
        column = ColumnFields(open_dataverse(settings, http)).create("Create event", "new")
    assert column.logical_name == "new_createevent"
    run = poll(select_by="field")
    run()
    tasks = dv.task_ids_by_name()
    dv.update("msdyn_projecttasks", tasks["Launch"], new_createevent=True)
    _, published, paths = run()
    assert [m.task_name for m in published] == ["Launch"]
    assert "msdyn_projectlabels" not in paths and "msdyn_projecttasktolabels" not in paths


def _id(value):
    return value


def _check(sandbox, select_by="label", **overrides):
    from services.poller.dataverse_check import dataverse_lines

    settings = settings_for(sandbox, **overrides)
    with new_http_client(ca_bundle=settings.ca_bundle) as http:
        return {
            line.name: line
            for line in dataverse_lines(settings, http, select_by=select_by, label="Create event")
        }


def test_check_reports_each_prerequisite(sandbox, dv):
    lines = _check(sandbox)
    assert all(line.ok for line in lines.values()), [line.render() for line in lines.values()]
    assert lines["read Project Task (msdyn_projecttask)"].detail == "organization-level Read"
    assert lines["label 'Create event'"].detail == "named in 2 plan(s)"
    dv.change_tracking("msdyn_projecttask", False)
    line = _check(sandbox)["change tracking of msdyn_projecttask"]
    assert line.ok and line.warn and "sweep every 15 minutes" in line.detail
    column = _check(sandbox, select_by="field")[
        "column 'Create event' (Yes/No on msdyn_projecttask)"
    ]
    assert not column.ok and "pwasync fields create" in column.detail


def test_check_says_what_to_grant(sandbox, dv, control):
    env = dv.environment()
    user = env["application_users"][0]
    control._call(
        "POST",
        "/dataverse/rights",
        {"client_id": user["client_id"], "read": {"msdyn_projecttask": "user"}},
    )
    line = _check(sandbox)["read Project Task (msdyn_projecttask)"]
    assert not line.ok and "only user-level Read" in line.detail
    control._call("POST", "/dataverse/rights", {"client_id": user["client_id"], "remove": True})
    [environment] = [
        line for name, line in _check(sandbox).items() if name == "Dataverse environment"
    ]
    assert not environment.ok and "application user" in environment.detail


def test_a_plan_of_700_tasks_is_read_over_pages_at_a_constant_cost_per_page(poll, dv):
    run = poll(dataverse_page_size="250")
    run()
    dv.generate("Big plan", 700)
    summary, published, paths = run()
    assert len(published) == 700 and len({m.task_id for m in published}) == 700
    # Deltas: 700 new tasks, assignments and links (3 pages each) and 25 labels (1); the
    # project's reads: tasks, assignments and links 3 pages each, labels 1; one resource.
    assert paths == {
        "msdyn_projects": 1,
        "msdyn_projecttasks": 6,
        "msdyn_resourceassignments": 6,
        "msdyn_projectlabels": 2,
        "msdyn_projecttasktolabels": 6,
        "bookableresources": 1,
        "systemusers": 1,
    }, paths
    summary, published, paths = run()
    assert published == [] and sum(paths.values()) == 5


def test_a_run_that_fails_after_the_deltas_were_read_loses_nothing(poll, dv):
    from common.errors import PermanentApiError

    run = poll()
    run()
    dv.label(dv.demo_label_task_ids())
    dv.faults("bookableresources", [400])
    with pytest.raises(PermanentApiError):
        run()
    summary, published, _ = run()
    assert summary.tasks_published == 7 and len(published) == 7


def test_check_names_a_wrong_secret_in_one_line(sandbox):
    lines = _check(sandbox, dataverse_client_secret="wrong")
    [token] = lines.values()
    assert token.name == "Dataverse token (app-only)" and not token.ok
    assert "client secret is wrong" in token.detail and "wrong" not in token.detail.split(":")[0]


def test_renaming_the_label_changes_the_selection_of_its_plan(poll, dv):
    run = _labelled(poll, dv)
    projects = dv.project_ids_by_name()
    [label] = [
        row
        for row in dv.rows("msdyn_projectlabels")
        if row["_msdyn_projectid_value"] == projects["Website relaunch"]
        and row["msdyn_projectlabeltext"] == "Create event"
    ]
    dv.update("msdyn_projectlabels", label["msdyn_projectlabelid"], msdyn_projectlabeltext="Later")
    _, published, _ = run()
    assert sorted(m.change for m in published) == ["remove", "remove"]
    # Named again, in another letter case and with spaces: the same label to pwasync.
    dv.update(
        "msdyn_projectlabels",
        label["msdyn_projectlabelid"],
        msdyn_projectlabeltext=" create EVENT ",
    )
    _, published, _ = run()
    assert sorted(m.task_name for m in published) == ["Design review", "Launch"]


def test_service_protection_under_load_is_waited_out(poll, dv):
    run = poll()
    dv.label(dv.demo_label_task_ids())
    dv.protection(limit=8, window_s=1.0)  # a first run needs some twenty requests
    summary, published, paths = run()
    assert summary.status == "succeeded" and len(published) == 7
    assert dv.stats()["by_status"]["429"] >= 1  # throttled, waited out, and nothing lost


def test_a_run_scoped_to_a_task_or_project_reads_only_that_project(poll, dv):
    run = _labelled(poll, dv)
    tasks, projects = dv.task_ids_by_name(), dv.project_ids_by_name()
    dv.update("msdyn_projecttasks", tasks["Launch"], msdyn_subject="Launch (scoped)")
    dv.update("msdyn_projecttasks", tasks["Kick-off meeting"], msdyn_subject="Kick-off (later)")
    summary, published, _ = run(task_ids=[tasks["Launch"]])
    assert summary.projects_read == 1 and [m.task_name for m in published] == ["Launch (scoped)"]
    summary, published, _ = run(project_ids=[projects["Office move"]])
    assert [m.task_name for m in published] == ["Kick-off (later)"]
