"""Planner premium (PWASYNC_SOURCE=dataverse) end to end, with only its own settings: the same
checks as the Project sources (fields and check, exact events, usage, no change on resync, an
idle poll's cost, update in place, every removal path, a plan of 700 tasks over several pages).

One pipeline for the module (sandbox, poller, writer, ledger as real processes); the tests run
in order, each starting from what the one before left."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from sandbox.dataverse_client import DataverseControl
from services.launcher import delete_scenario
from tests.e2e.harness import Pipeline, wait_for

# One xdist group: the module's steps run in file order on one worker (pytest -n, docs/tests.md).
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.integration,
    pytest.mark.xdist_group("planner-premium"),
]

ADELE = "adele.vance@contoso.onmicrosoft.com"
ALEX = "alex.wilber@contoso.onmicrosoft.com"
MEGAN = "megan.bowen@contoso.onmicrosoft.com"
LEE = "lee.gu@contoso.onmicrosoft.com"
PATTI = "patti.fernandez@contoso.onmicrosoft.com"
NESTOR = "nestor.wilke@contoso.onmicrosoft.com"  # no e-mail in Dataverse: by Entra object id
#: Rows per page asked for: the 700-task plan comes in three pages of each table.
PAGE_SIZE = 250
#: The project list and one delta per watched table (tasks, assignments, labels, links).
IDLE = {
    "msdyn_projects": 1,
    "msdyn_projecttasks": 1,
    "msdyn_resourceassignments": 1,
    "msdyn_projectlabels": 1,
    "msdyn_projecttasktolabels": 1,
}


@pytest.fixture(scope="module")
def premium(tmp_path_factory, amqp_url, redis_url) -> Iterator[Pipeline]:
    import uuid

    scenario = f"t-{uuid.uuid4().hex[:10]}"
    pipe = Pipeline(
        tmp_path_factory.mktemp("premium"),
        amqp_url=amqp_url,
        redis_url=redis_url,
        scenario=scenario,
    )
    # Only this source's settings: the PWA ones the sandbox writes are taken away.
    for name in [
        n for n in pipe.env if n.startswith("PWASYNC_PWA_") and n != "PWASYNC_PWA_TIMEZONE"
    ]:
        del pipe.env[name]
    pipe.env["PWASYNC_SOURCE"] = "dataverse"
    pipe.env["PWASYNC_DATAVERSE_PAGE_SIZE"] = str(PAGE_SIZE)
    pipe.dataverse = DataverseControl(pipe.client)
    yield pipe
    pipe.close()
    delete_scenario(amqp_url, redis_url, scenario)


def finished_runs(pipeline: Pipeline) -> int:
    return sum(1 for run in pipeline.redis_json_list("poller:runs") if run["status"] == "succeeded")


def sync_and_wait(pipeline: Pipeline, *args: str) -> dict:
    before = finished_runs(pipeline)
    pipeline.cli("sync-now", *args)
    assert wait_for(lambda: finished_runs(pipeline) > before, timeout=60)
    return pipeline.redis_json_list("poller:runs")[0]


def settled(pipeline: Pipeline, events: int, endpoints: int, timeout: float = 60) -> bool:
    return wait_for(
        lambda: (
            len(pipeline.event_keys()) == events
            and pipeline.usage()["endpoints_in_use"] == endpoints
        ),
        timeout=timeout,
    )


def subjects(pipeline: Pipeline) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for event in pipeline.client.events():
        found.setdefault(event["mailbox"].lower(), []).append(event["subject"])
    return {mailbox: sorted(names) for mailbox, names in found.items()}


def test_fields_and_check_with_only_the_environment_s_settings(premium):
    assert not any(
        n.startswith("PWASYNC_PWA_") and n != "PWASYNC_PWA_TIMEZONE" for n in premium.env
    )
    verify = premium.cli("fields", "verify")
    assert "label 'Create event': named in 2 plan(s)" in verify.stdout
    check = premium.cli("check", "--mailbox", ADELE)
    assert "FAIL" not in check.stdout, check.stdout
    assert "organization-level Read" in check.stdout
    assert "change tracking of msdyn_projecttask: on" in check.stdout
    assert f"mailbox {ADELE}: calendar reachable" in check.stdout
    bare = premium.cli("check").stdout  # tests the mailbox of an assignee found in the plans
    assert "FAIL" not in bare and "ok    test mailbox: " in bare and "found in the plans" in bare


def test_labelled_tasks_become_exactly_their_events(premium):
    for name in ("poller", "writer-1", "ledger"):
        premium.start(name)
    premium.dataverse.label(premium.dataverse.demo_label_task_ids())
    run = sync_and_wait(premium)
    # Kick-off, Plan the move (2), Move day, Order furniture, Design review (2), Launch.
    assert settled(premium, events=8, endpoints=6), premium.event_keys()
    assert run["projects"]["read"] == 2
    assert subjects(premium) == {
        ADELE: ["Design review", "Kick-off meeting"],
        ALEX: ["Launch", "Plan the move"],
        MEGAN: ["Plan the move"],
        LEE: ["Move day"],
        NESTOR: ["Order furniture"],
        PATTI: ["Design review"],
    }
    # explain through the same source, by name: the plan, its selection, both events.
    story = json.loads(premium.cli("explain", "plan the move", "--json").stdout)
    assert story["unreadable"] == {} and story["selection"]["selected"]
    assert sorted((e["mailbox"], e["state"]) for e in story["events"]) == [
        (ALEX, "event"),
        (MEGAN, "event"),
    ]
    assert story["endpoint"]["allocated_at"] and story["poller"]["has_events"]
    [kickoff] = [e for e in premium.client.events(ADELE) if e["subject"] == "Kick-off meeting"]
    # The scheduled start and end, UTC in Dataverse, written in the plans' zone.
    assert (kickoff["start"], kickoff["end"]) == (
        "2026-12-14T09:00:00+00:00",
        "2026-12-14T11:00:00+00:00",
    )
    assert (
        kickoff["start_time_zone"] == "W. Europe Standard Time"
    )  # Europe/Berlin, as Windows names it
    [move_day] = premium.client.events(LEE)
    assert move_day["start"] == move_day["end"] == "2026-12-18T16:00:00+00:00"
    assert set(premium.event_keys().values()) == {1}


def test_an_idle_poll_reads_the_list_and_one_delta_per_table(premium):
    premium.dataverse.reset_stats()
    run = sync_and_wait(premium)
    assert premium.dataverse.stats()["by_path"] == IDLE
    assert run["pwa_requests"] == 5 and run["tasks"]["published"] == 0
    full = sync_and_wait(premium, "--full")
    assert full["tasks"]["published"] == 0 and full["tasks"]["unchanged"] == 7
    assert set(premium.event_keys().values()) == {1} and len(premium.event_keys()) == 8


def test_a_renamed_task_is_updated_in_place(premium):
    tasks = premium.dataverse.task_ids_by_name()
    [before] = [e for e in premium.client.events(ALEX) if e["subject"] == "Launch"]
    premium.dataverse.update("msdyn_projecttasks", tasks["Launch"], msdyn_subject="Launch (v2)")
    # A dry run sees the change and keeps nothing of it: the sync after it still has it.
    dry = premium.cli("sync-now", "--dry-run").stdout
    assert "update" in dry and "Launch (v2)" in dry and "1 to update" in dry, dry
    run = sync_and_wait(premium)
    assert run["projects"]["read"] == 1 and run["tasks"]["published"] == 1
    assert wait_for(
        lambda: (
            [e["subject"] for e in premium.client.events(ALEX) if e["id"] == before["id"]]
            == ["Launch (v2)"]
        ),
        timeout=30,
    )
    assert len(premium.event_keys()) == 8


def test_every_removal_path(premium):
    dv = premium.dataverse
    tasks, projects = dv.task_ids_by_name(), dv.project_ids_by_name()
    dv.label([tasks["Kick-off meeting"]], on=False)
    no_dates = dict.fromkeys(
        ("msdyn_scheduledstart", "msdyn_scheduledend", "msdyn_start", "msdyn_finish")
    )
    dv.update("msdyn_projecttasks", tasks["Launch (v2)"], **no_dates)
    dv.delete("msdyn_projecttasks", tasks["Move day"])
    run = sync_and_wait(premium)
    assert run["tasks"]["removed"] == 3
    assert settled(premium, events=5, endpoints=6)
    assert subjects(premium) == {
        ADELE: ["Design review"],
        ALEX: ["Plan the move"],
        MEGAN: ["Plan the move"],
        NESTOR: ["Order furniture"],
        PATTI: ["Design review"],
    }
    dv.delete("msdyn_projects", projects["Website relaunch"])
    run = sync_and_wait(premium)
    assert run["projects"]["deleted"] == 1 and run["tasks"]["removed"] == 1
    assert settled(premium, events=3, endpoints=6)  # endpoints stay allocated for 30 days


def test_a_plan_of_700_tasks_over_several_pages(premium):
    project = premium.dataverse.generate("Big plan", 700)
    premium.dataverse.reset_stats()
    run = sync_and_wait(premium)
    assert run["tasks"]["published"] == 700
    paths = premium.dataverse.stats()["by_path"]
    # The delta, then the project's tasks and its links in three pages each.
    assert paths["msdyn_projecttasks"] >= 1 + 3 and paths["msdyn_projecttasktolabels"] >= 1 + 3
    assert settled(premium, events=703, endpoints=706, timeout=120)
    premium.dataverse.reset_stats()
    idle = sync_and_wait(premium)
    assert premium.dataverse.stats()["by_path"] == IDLE and idle["tasks"]["published"] == 0
    assert project["tasks"] == 700
    assert set(premium.stop_all().values()) == {0}
