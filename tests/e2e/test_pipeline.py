"""The whole pipeline: sandbox + poller + writers + ledger as processes, on the real broker."""

import json
from pathlib import Path

import pika
import pytest

import sandbox
from common.rabbit import QueueState, RabbitConnector, inspect_queue
from common.topology import topology_for
from tests.e2e.conftest import EACH_EDITION
from tests.e2e.harness import Pipeline, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

ADELE = "adele.vance@contoso.onmicrosoft.com"
ALEX = "alex.wilber@contoso.onmicrosoft.com"
MEGAN = "megan.bowen@contoso.onmicrosoft.com"
LEE = "lee.gu@contoso.onmicrosoft.com"
NESTOR = "nestor.wilke@contoso.onmicrosoft.com"


def _task_ids_by_name(pipeline):
    """Task ids of the default seed, by name, read from the seed file itself."""
    seed = json.loads((Path(sandbox.__file__).parent / "seed" / "default.json").read_text())
    return {task["name"]: task["id"] for p in seed["projects"] for task in p["tasks"]}


@EACH_EDITION
def test_flagged_tasks_become_one_event_per_assignee_and_one_endpoint_each(pipeline):
    for name in ("poller", "writer-1", "writer-2", "ledger"):
        pipeline.start(name)
    assert "created Task flag field" in pipeline.cli("fields", "create").stdout
    assert pipeline.cli("fields", "verify").returncode == 0
    pipeline.client.flag_tasks(pipeline.client.demo_flag_task_ids(), value=True, publish=True)
    pipeline.cli("sync-now")

    ids = _task_ids_by_name(pipeline)
    expected = {
        (ADELE, ids["Kick-off meeting"]),
        (ALEX, ids["Site survey"]),
        (MEGAN, ids["Site survey"]),
        (NESTOR, ids["Go-live"]),
        (ADELE, ids["User training"]),
        (LEE, ids["User training"]),
    }
    assert wait_for(lambda: set(pipeline.event_keys()) >= expected, timeout=60)
    assert wait_for(lambda: pipeline.usage()["endpoints_in_use"] == 4, timeout=30)

    # A second, full sync changes nothing and allocates nothing.
    pipeline.cli("sync-now", "--full")
    wait_for(lambda: False, timeout=3)
    keys = pipeline.event_keys()
    assert set(keys) == expected
    assert all(count == 1 for count in keys.values()), keys
    usage = pipeline.usage()
    assert usage["endpoints_in_use"] == 4
    assert {t["task_id"] for t in usage["tasks"]} == {
        ids["Kick-off meeting"],
        ids["Site survey"],
        ids["Go-live"],
        ids["User training"],
    }

    codes = pipeline.stop_all()
    assert codes == {"poller": 0, "writer-1": 0, "writer-2": 0, "ledger": 0}
    skipped = {
        (line.get("task") or line.get("project"), line["reason"])
        for line in pipeline.log_lines("poller")
        if line["event"] in ("task skipped", "project skipped") and line["reason"] != "not_flagged"
    }
    assert ("Preparation", "summary_task") in skipped
    assert ("Lessons learned (date to be set)", "no_start") in skipped
    assert ("Portfolio 2027 (master project)", "master_project") in skipped


@EACH_EDITION
def test_a_project_of_700_flagged_tasks_arrives_whole(pipeline):
    generated = pipeline.client.generate(
        projects=1,
        tasks_per_project=700,
        flagged=True,
        ensure_field=True,
        assignees_per_task=1,
        mailboxes=25,
    )
    for name in ("poller", "writer-1", "writer-2", "ledger"):
        pipeline.start(name, {"PWASYNC_SYNC_START": "2000-01-01T00:00:00Z"})
    pipeline.cli("sync-now")
    task_ids = set(generated["task_ids"])
    assert len(task_ids) == 700
    assert wait_for(lambda: len(pipeline.event_keys()) >= 700, timeout=180)
    keys = pipeline.event_keys()
    assert {task for _, task in keys} == task_ids
    assert all(count == 1 for count in keys.values())
    assert wait_for(lambda: pipeline.usage()["endpoints_in_use"] == 700, timeout=60)
    tasks_pages = pipeline.client.stats()["pwa"]["by_path"]
    assert any("Tasks" in path for path in tasks_pages)
    assert set(pipeline.stop_all().values()) == {0}


def test_killing_a_writer_mid_run_loses_nothing_and_duplicates_nothing(
    tmp_path, amqp_url, redis_url, scenario
):
    pipeline = Pipeline(
        tmp_path, amqp_url=amqp_url, redis_url=redis_url, scenario=scenario, latency_ms=40
    )
    try:
        generated = pipeline.client.generate(
            projects=2,
            tasks_per_project=150,
            flagged=True,
            ensure_field=True,
            assignees_per_task=2,
            mailboxes=30,
        )
        env = {"PWASYNC_SYNC_START": "2000-01-01T00:00:00Z"}
        for name in ("poller", "writer-1", "writer-2", "ledger"):
            pipeline.start(name, env)
        pipeline.cli("sync-now")
        expected_tasks = set(generated["task_ids"])

        assert wait_for(lambda: len(pipeline.event_keys()) >= 60, timeout=120)
        pipeline.services["writer-1"].kill()  # SIGKILL with messages in flight
        killed_at = len(pipeline.event_keys())
        assert killed_at < 600, "the run finished before the kill; make it slower"
        pipeline.start("writer-3", env)

        assert wait_for(lambda: len(pipeline.event_keys()) >= 600, timeout=240)
        assert wait_for(lambda: pipeline.usage()["endpoints_in_use"] == 300, timeout=60)
        wait_for(lambda: False, timeout=2)
        keys = pipeline.event_keys()
        assert len(keys) == 600
        assert {task for _, task in keys} == expected_tasks
        duplicates = {key: n for key, n in keys.items() if n > 1}
        assert duplicates == {}
        del pipeline.services["writer-1"]
        assert set(pipeline.stop_all().values()) == {0}
    finally:
        pipeline.close()


# Serial: the bad bodies go out on `sync.requested`, the routing key every scenario's poller queue
# is bound to, so every poller running meanwhile would dead-letter them in its own scenario.
@pytest.mark.serial
def test_a_malformed_sync_request_is_dead_lettered_and_the_poller_keeps_going(pipeline, amqp_url):
    pipeline.start("poller")
    queue = topology_for(pipeline.scenario).sync_requests
    connector = RabbitConnector(amqp_url, connection_name="test")

    def state(name):
        return inspect_queue(connector, name) or QueueState(0, 0)

    assert wait_for(lambda: state(queue.name).consumers == 1, timeout=30)
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.basic_publish("pwasync", "sync.requested", b"{not json")
        channel.basic_publish("pwasync", "sync.requested", b'{"projects": "all"}')
        assert wait_for(lambda: state(queue.dead_letter_queue).ready == 2, timeout=30)
        reasons = []
        for _ in range(2):
            _, properties, _ = channel.basic_get(queue.dead_letter_queue, auto_ack=True)
            reasons.append(properties.headers["x-pwasync-dead-reason"])
    finally:
        connection.close()
    assert any("not UTF-8 JSON" in r for r in reasons)
    assert any("projects: Extra inputs are not permitted" in r for r in reasons)
    assert pipeline.services["poller"].alive()
    assert pipeline.stop_all() == {"poller": 0}
