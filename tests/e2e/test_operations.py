"""Operations end to end: the deletion guard, dead letters and the operator's commands."""

import json

import pytest

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
