"""Operations end to end: the deletion guard, dead letters and the operator's commands."""

import json
import re

import pytest

from tests.e2e.conftest import EACH_EDITION
from tests.e2e.harness import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def test_a_mass_removal_pauses_until_an_operator_allows_it(pipeline):
    generated = pipeline.client.generate(
        projects=1, tasks_per_project=30, flagged=True, ensure_field=True, mailboxes=5
    )
    env = {"PWASYNC_SYNC_START": "2000-01-01T00:00:00Z"}
    for name in ("poller", "writer", "ledger"):
        pipeline.start(name, env)
    pipeline.cli("sync-now")
    assert wait_for(lambda: len(pipeline.event_keys()) == 30, timeout=60)

    # Every flag cleared at once (a renamed field, a bad bulk edit): 30 of 30 tasks would go.
    pipeline.client.flag_tasks(generated["task_ids"], value=None, publish=True)
    pipeline.cli("sync-now")

    def held() -> bool:
        runs = pipeline.redis_json_list("poller:runs")
        return bool(runs) and runs[0]["tasks"]["removals_held"] == 30

    assert wait_for(held, timeout=30)
    assert len(pipeline.event_keys()) == 30  # nothing deleted
    alarms = [
        line for line in pipeline.log_lines("poller") if line["event"].startswith("deletion guard")
    ]
    assert alarms and alarms[0]["level"] == "error" and alarms[0]["removing"] == 30

    status = json.loads(pipeline.cli("status", "--json").stdout)
    assert status["deletion_guard"]["removing"] == 30
    table = pipeline.cli(
        "status", env={"PWASYNC_RABBITMQ_MANAGEMENT_URL": "http://ops:s3cret-pw@127.0.0.1:9"}
    ).stdout
    assert "DELETION GUARD: 30 of 30 synced tasks would lose their events" in table
    assert "s3cret-pw" not in table
    work = {q["queue"]: q for q in status["queues"] if q["role"] == "work"}
    assert all(q["consumers"] == 1 and q["ready"] == 0 for q in work.values())

    runs = pipeline.cli("runs").stdout
    assert "REMOVALS HELD 30 (deletion guard)" in runs
    assert json.loads(pipeline.cli("runs", "--json", "--limit", "1").stdout)[0]["status"] == (
        "succeeded"
    )

    pipeline.cli("sync-now", "--allow-deletions")
    assert wait_for(lambda: len(pipeline.event_keys()) == 0, timeout=60)
    assert set(pipeline.stop_all().values()) == {0}


def test_the_endpoint_limit_holds_tasks_back_until_it_is_raised(pipeline):
    generated = pipeline.client.generate(
        projects=1, tasks_per_project=5, flagged=True, ensure_field=True, mailboxes=5
    )
    limited = {"PWASYNC_SYNC_START": "2000-01-01T00:00:00Z", "PWASYNC_ENDPOINT_LIMIT": "2"}
    for name in ("poller", "writer-1", "writer-2", "ledger"):
        pipeline.start(name, limited)
    pipeline.cli("sync-now")

    def usage():
        return json.loads(
            pipeline.cli("usage", "--json", env={"PWASYNC_ENDPOINT_LIMIT": "2"}).stdout
        )

    assert wait_for(lambda: len(usage()["held"]) == 3, timeout=60)
    report = usage()
    assert report["endpoints_in_use"] == 2 and report["limit"] == 2
    assert len({task for _, task in pipeline.event_keys()}) == 2
    status = json.loads(
        pipeline.cli("status", "--json", env={"PWASYNC_ENDPOINT_LIMIT": "2"}).stdout
    )
    assert status["usage"] == {
        "endpoints_in_use": 2,
        "limit": 2,
        "held": 3,
        "expiring_within_7_days": 0,
    }
    assert status["last_sync"]["events"]["created"] == 2
    held = {h["task_id"] for h in report["held"]}
    assert held | {t["task_id"] for t in report["tasks"]} == set(generated["task_ids"])

    # The operator raises the limit; every process reads it at start.
    for name in ("writer-1", "writer-2", "ledger"):
        assert pipeline.services.pop(name).terminate() == 0
    raised = {**limited, "PWASYNC_ENDPOINT_LIMIT": "10"}
    for name in ("writer-1", "writer-2", "ledger"):
        pipeline.start(name, raised)
    assert wait_for(lambda: len({t for _, t in pipeline.event_keys()}) == 5, timeout=60)
    assert wait_for(lambda: usage()["endpoints_in_use"] == 5, timeout=30)
    assert usage()["held"] == []
    assert all(count == 1 for count in pipeline.event_keys().values())
    assert set(pipeline.stop_all().values()) == {0}


@EACH_EDITION
def test_a_dry_run_lists_the_planned_changes_and_touches_nothing(pipeline):
    pipeline.cli("fields", "create")
    pipeline.client.flag_tasks(pipeline.client.demo_flag_task_ids(), value=True, publish=True)
    ids = {name: task for name, task in _seed_tasks().items()}

    before = pipeline.cli("sync-now", "--dry-run").stdout.splitlines()
    creates = sorted(
        (line.split()[1], line.split(" [")[0].split(maxsplit=2)[2])
        for line in before
        if line.startswith("create")
    )
    # Mailboxes that will turn out not to exist or to be unlicensed are planned too: only
    # Graph can tell, and the dry run asks Graph nothing.
    assert creates == [
        ("adele.vance@contoso.onmicrosoft.com", "Kick-off meeting"),
        ("adele.vance@contoso.onmicrosoft.com", "User training"),
        ("alex.wilber@contoso.onmicrosoft.com", "Site survey"),
        ("irvin.sayers@contoso.onmicrosoft.com", "IT handover"),
        ("johanna.lorenz@contoso.onmicrosoft.com", "Furniture order"),
        ("lee.gu@contoso.onmicrosoft.com", "User training"),
        ("megan.bowen@contoso.onmicrosoft.com", "Site survey"),
        ("nestor.wilke@contoso.onmicrosoft.com", "Go-live"),
    ]
    assert any(line.startswith("skip") and "no e-mail" in line for line in before)
    assert before[-1].startswith("dry run: 8 to create, 0 to update, 0 to delete")
    assert pipeline.client.events() == []

    for name in ("poller", "writer", "ledger"):
        pipeline.start(name, {"PWASYNC_SYNC_START": "2000-01-01T00:00:00Z"})
    pipeline.cli("sync-now")
    assert wait_for(lambda: len(pipeline.event_keys()) == 6, timeout=60)
    assert wait_for(lambda: "0 to create, 0 to update, 0 to delete" in _last(pipeline), timeout=30)

    pipeline.client.update_task(ids["Kick-off meeting"], name="Kick-off (moved)")
    pipeline.client.flag_tasks([ids["Site survey"]], value=None, publish=True)
    planned = pipeline.cli("sync-now", "--dry-run").stdout.splitlines()
    assert sorted(" ".join(line.split(" [")[0].split()) for line in planned[:-1]) == [
        f"delete alex.wilber@contoso.onmicrosoft.com (task {ids['Site survey']})",
        f"delete megan.bowen@contoso.onmicrosoft.com (task {ids['Site survey']})",
        "update adele.vance@contoso.onmicrosoft.com Kick-off (moved)",
    ]
    assert len(pipeline.event_keys()) == 6  # still nothing changed
    assert set(pipeline.stop_all().values()) == {0}


def _last(pipeline) -> str:
    return pipeline.cli("sync-now", "--dry-run").stdout.splitlines()[-1]


def _seed_tasks() -> dict[str, str]:
    from pathlib import Path

    import sandbox

    seed = json.loads((Path(sandbox.__file__).parent / "seed" / "default.json").read_text())
    return {task["name"]: task["id"] for p in seed["projects"] for task in p["tasks"]}


def test_explain_tells_a_tasks_whole_story_and_usage_names_the_tasks(pipeline, amqp_url):
    pipeline.cli("fields", "create")
    pipeline.client.flag_tasks(pipeline.client.demo_flag_task_ids(), value=True, publish=True)
    ids = _seed_tasks()
    for name in ("poller", "writer", "ledger"):
        pipeline.start(name, {"PWASYNC_SYNC_START": "2000-01-01T00:00:00Z"})
    pipeline.cli("sync-now")
    assert wait_for(lambda: len(pipeline.event_keys()) == 6, timeout=60)
    assert wait_for(lambda: pipeline.usage()["endpoints_in_use"] == 4, timeout=30)
    named = {(t["task_name"], t["project_name"]) for t in pipeline.usage()["tasks"]}
    assert ("Site survey", "Office Relocation Berlin") in named and (
        "User training",
        "CRM Rollout",
    ) in named
    assert "Go-live (Office Relocation Berlin)" in pipeline.cli("usage").stdout
    # A message about Site survey that the writer cannot read: it lands in the dead letters.
    body = json.dumps({"scenario": pipeline.scenario, "task_id": ids["Site survey"]}).encode()
    _publish_task_changed(amqp_url, pipeline.scenario, body)
    assert wait_for(lambda: "1 dead letter" in pipeline.cli("dlq", "list").stdout, timeout=30)

    story = json.loads(pipeline.cli("explain", "site survey", "--json").stdout)
    assert story["task_id"] == ids["Site survey"] and story["unreadable"] == {}
    assert story["plan"]["project"]["name"] == "Office Relocation Berlin"
    assert story["selection"]["selected"] and story["poller"]["has_events"]
    assert story["poller"]["last_run"]["status"] == "succeeded"
    assert sorted((e["mailbox"], e["state"]) for e in story["events"]) == [
        ("alex.wilber@contoso.onmicrosoft.com", "event"),
        ("megan.bowen@contoso.onmicrosoft.com", "event"),
    ]
    written = {(m, t) for m, t in pipeline.event_keys()}
    assert all((e["mailbox"], story["task_id"]) in written for e in story["events"])
    assert story["endpoint"]["allocated_at"] and story["endpoint"]["held_since"] is None
    assert [d["queue"] for d in story["dead_letters"]] == [
        f"pwasync.{pipeline.scenario}.task-changed"
    ]

    # Any written form of the GUID names the task.
    failed = pipeline.cli("explain", "{" + ids["Furniture order"].upper() + "}").stdout
    assert "selected:     yes" in failed
    assert (
        "FAILED   johanna.lorenz@contoso.onmicrosoft.com  Johanna Lorenz  ErrorInvalidUser"
        in failed
    )
    assert "endpoint:     none" in failed

    unflagged = pipeline.cli("explain", "Cut-over weekend").stdout
    assert "selected:     NO: its flag field 'Create event' is not set to Yes" in unflagged
    master = json.loads(pipeline.cli("explain", "Quarterly portfolio review", "--json").stdout)
    assert master["selection"]["why_not"] == "master_project" and master["events"][0]["state"] == (
        "none"
    )

    # A bare check tests the mailbox of an assignee it finds in the plans, and says whose.
    check = pipeline.cli("check").stdout
    chosen = re.search(r"^ok    test mailbox: (\S+), found in the plans: ", check, re.MULTILINE)
    assert chosen, check
    assert f"ok    mailbox {chosen[1]}: calendar reachable" in check
    assert "FAIL" not in check

    missing = pipeline.cli("explain", "No such task", check=False)
    assert missing.returncode == 1 and "no task named 'No such task'" in missing.stdout
    assert "1 dead letter" in pipeline.cli("dlq", "list").stdout  # looking removed nothing
    assert set(pipeline.stop_all().values()) == {0}


def _publish_task_changed(amqp_url: str, scenario: str, body: bytes) -> None:
    from common.rabbit import Publisher, RabbitConnector
    from common.topology import routing_key_task_changed, topology_for

    publisher = Publisher(RabbitConnector(amqp_url, connection_name="test"), topology_for(scenario))
    try:
        publisher.publish(routing_key_task_changed(scenario), body)
    finally:
        publisher.close()
