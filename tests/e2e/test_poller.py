"""The poller in the whole pipeline: removals reach the writer for every way a task leaves the
selection, and several poller replicas run one poll at a time, coalescing requests."""

from __future__ import annotations

import json
import uuid

import pika
import pytest

from common.rabbit import QueueState, RabbitConnector, inspect_queue
from common.redis_store import Keys, connect_redis
from common.topology import topology_for
from tests.e2e.conftest import EACH_EDITION
from tests.e2e.harness import Pipeline, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

ADELE = "adele.vance@contoso.onmicrosoft.com"
FROM_THE_START = {"PWASYNC_SYNC_START": "2000-01-01T00:00:00Z", "PWASYNC_SYNC_OVERLAP_SECONDS": "0"}


def resource_of(pipeline: Pipeline, email: str) -> str:
    return next(r["id"] for r in pipeline.client.tenant()["resources"] if r["email"] == email)


def flagged_task(name: str, resource: str, day: int = 1) -> dict:
    return {
        "name": name,
        "start": f"2026-12-{day:02d}T09:00:00",
        "finish": f"2026-12-{day:02d}T10:00:00",
        "assignees": [resource],
        "flag": True,
    }


def runs(redis_url: str, scenario: str) -> list[dict]:
    client = connect_redis(redis_url)
    try:
        raw = client.lrange(f"{Keys(scenario).prefix}:poller:runs", 0, -1)
    finally:
        client.close()
    return [json.loads(item) for item in raw]


@EACH_EDITION
def test_removals_reach_the_writer_for_every_way_a_task_leaves_the_selection(pipeline, redis_url):
    client = pipeline.client
    client.generate(projects=1, tasks_per_project=1, flagged=True, ensure_field=True)
    adele = resource_of(pipeline, ADELE)
    names = ["stays", "flag cleared", "deleted", "dates removed", "becomes a summary"]
    main = client.create_project(
        "Leaving", [flagged_task(n, adele, day) for day, n in enumerate(names, 1)]
    )
    ids = dict(zip(names, main["task_ids"], strict=True))
    doomed = client.create_project("Deleted project", [flagged_task("in a deleted", adele)])
    retyped = client.create_project("Becomes master", [flagged_task("in a master", adele)])
    for name in ("poller", "writer-1", "ledger"):
        pipeline.start(name, FROM_THE_START)
    pipeline.cli("sync-now")

    def adeles_tasks() -> set[str]:
        return {task for mailbox, task in pipeline.event_keys() if mailbox == ADELE}

    everything = {*ids.values(), doomed["task_ids"][0], retyped["task_ids"][0]}
    assert wait_for(lambda: adeles_tasks() >= everything, timeout=60)

    client.flag_tasks([ids["flag cleared"]], value=None)
    client.delete_task(ids["deleted"])
    client.update_task(ids["dates removed"], start=None, finish=None)
    client.add_task(
        main["project_id"],
        name="child",
        parent=ids["becomes a summary"],
        start="2026-12-20T09:00:00",
        finish="2026-12-20T10:00:00",
    )
    client.delete_project(doomed["project_id"])
    client.update_project(retyped["project_id"], type=6)
    pipeline.cli("sync-now")

    gone = everything - {ids["stays"]}
    assert wait_for(lambda: not (adeles_tasks() & gone), timeout=60), adeles_tasks() & gone
    assert ids["stays"] in adeles_tasks()
    last = runs(redis_url, pipeline.scenario)[0]
    assert last["tasks"]["removed"] == 6 and last["projects"]["deleted"] == 1
    assert set(pipeline.stop_all().values()) == {0}
    removed = {
        (line["task_id"], line["reason"])
        for line in pipeline.log_lines("poller")
        if line["event"] == "task left the selection; removal published"
    }
    assert removed >= {
        (ids["flag cleared"], "not_flagged"),
        (ids["deleted"], "deleted"),
        (ids["dates removed"], "no_start"),
        (ids["becomes a summary"], "summary_task"),
        (doomed["task_ids"][0], "project_deleted"),
        (retyped["task_ids"][0], "master_project"),
    }


def start_two_pollers(pipeline: Pipeline, amqp_url: str, scenario: str) -> None:
    """Start poller-1 and poller-2 and wait until both consume the scenario's requests."""
    pipeline.start("poller-1", FROM_THE_START)
    pipeline.start("poller-2", FROM_THE_START)
    queue = topology_for(scenario).sync_requests.name
    connector = RabbitConnector(amqp_url, connection_name="test")
    assert wait_for(
        lambda: (inspect_queue(connector, queue) or QueueState(0, 0)).consumers == 2,
        timeout=30,
    )


def pollers_story(pipeline: Pipeline, redis_url: str, scenario: str, unanswered: set[str]) -> str:
    """What a failed wait needs to be understood: the runs so far and each poller's warnings."""
    lines = [f"{len(unanswered)} requests unanswered; runs: {runs(redis_url, scenario)}"]
    for name in ("poller-1", "poller-2"):
        lines += [
            f"{name}: {line}"
            for line in pipeline.log_lines(name)
            if line.get("level") in ("warning", "error", "raw") or "run" in line["event"]
        ]
    return "\n".join(lines[-80:])


def test_two_pollers_run_one_poll_at_a_time_and_coalesce_requests(
    tmp_path, amqp_url, redis_url, scenario
):
    pipeline = Pipeline(
        tmp_path, amqp_url=amqp_url, redis_url=redis_url, scenario=scenario, latency_ms=20
    )
    try:
        pipeline.client.generate(projects=15, tasks_per_project=20, flagged=True, ensure_field=True)
        start_two_pollers(pipeline, amqp_url, scenario)
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:
            channel = connection.channel()
            sent = [str(uuid.uuid4()) for _ in range(6)]
            for correlation_id in sent:
                channel.basic_publish(
                    "pwasync",
                    "sync.requested",
                    json.dumps({"scenario": scenario, "full": True}).encode(),
                    pika.BasicProperties(correlation_id=correlation_id),
                )
        finally:
            connection.close()

        def answered() -> set[str]:
            ids = set()
            for run in runs(redis_url, scenario):
                ids |= {run["correlation_id"], *run["coalesced_correlation_ids"]}
            return ids

        # A run that fails is retried after 2 s, then 10 s, then 60 s (the ack policy's tiers):
        # the wait leaves room for two failed runs on a loaded machine before it gives up.
        if not wait_for(lambda: answered() >= set(sent), timeout=180):
            pytest.fail(pollers_story(pipeline, redis_url, scenario, set(sent) - answered()))
        history = sorted(runs(redis_url, scenario), key=lambda r: r["started_at"])
        assert all(r["status"] == "succeeded" for r in history)
        assert 1 <= len(history) < len(sent)  # coalesced, not one run per request
        for earlier, later in zip(history, history[1:], strict=False):
            assert earlier["finished_at"] <= later["started_at"]  # never two at once
        assert set(pipeline.stop_all().values()) == {0}
    finally:
        pipeline.close()


def test_pwasync_connect_then_the_poller_syncs_with_the_stored_sign_in(pipeline, redis_url):
    """oauth end to end: `pwasync connect` (device code approved as in a browser), `pwasync
    check`, a poller run on the stored sign-in, and the one line after a revocation."""
    import subprocess
    import threading

    from services.launcher import pwasync_command

    client = pipeline.client
    client.update_user(ADELE, pwa_permissions=["reporting", "manage_custom_fields"])
    # Access tokens this close to expiry are refreshed on every use (MSAL's 5-minute margin), so
    # the revocation below shows at once instead of when the access token expires.
    client.config(token_lifetime_s=60)
    oauth = {"PWASYNC_PWA_AUTH": "oauth", "PWASYNC_SECRET_KEY": "e2e-secret-key"}
    pipeline.env.update({**oauth, **FROM_THE_START})
    connect = subprocess.Popen(
        pwasync_command("connect"),
        env=pipeline.env,
        cwd=pipeline.workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    instruction = connect.stdout.readline()
    code = instruction.rsplit("enter the code ", 1)[1].split()[0]
    threading.Timer(0.5, lambda: client.approve_device_code(code, ADELE)).start()
    out, err = connect.communicate(timeout=60)
    assert connect.returncode == 0, err
    assert f"signed in as {ADELE}" in out

    assert "created Task flag field" in pipeline.cli("fields", "create").stdout
    check = pipeline.cli("check", "--mailbox", ADELE)
    assert check.stdout.count("ok  ") == 9, check.stdout

    client.create_project("OAuth", [flagged_task("via oauth", resource_of(pipeline, ADELE))])
    pipeline.start("poller")
    pipeline.cli("sync-now")
    assert wait_for(lambda: bool(runs(redis_url, pipeline.scenario)), timeout=30)
    assert runs(redis_url, pipeline.scenario)[0]["tasks"]["published"] == 1

    client.revoke_sign_ins(ADELE)
    failed = pipeline.cli("check", "--mailbox", ADELE, check=False)
    assert failed.returncode == 1
    assert "AADSTS50173" in failed.stdout and "run `pwasync connect`" in failed.stdout
    assert set(pipeline.stop_all().values()) == {0}


def publish_sync_request(amqp_url: str, scenario: str, correlation_id: str, **fields) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        connection.channel().basic_publish(
            "pwasync",
            "sync.requested",
            json.dumps({"scenario": scenario, **fields}).encode(),
            pika.BasicProperties(correlation_id=correlation_id),
        )
    finally:
        connection.close()


def runs_started(pipeline: Pipeline, name: str) -> list[dict]:
    return [line for line in pipeline.log_lines(name) if line["event"] == "sync run started"]


def test_a_sync_request_is_acked_before_its_run_so_no_run_holds_a_delivery(
    tmp_path, amqp_url, redis_url, scenario
):
    """A run that outlasts RabbitMQ's consumer_timeout (30 min) would have its channel closed
    and its request redelivered. 3.10 cannot set the timeout per queue, so the test shows the
    cause is gone: while a run is in progress, the poller takes (and acks) the next request
    at once instead of leaving it behind a held delivery (prefetch one)."""
    pipeline = Pipeline(
        tmp_path, amqp_url=amqp_url, redis_url=redis_url, scenario=scenario, latency_ms=100
    )
    try:
        pipeline.client.generate(projects=15, tasks_per_project=5, flagged=True, ensure_field=True)
        pipeline.start("poller", FROM_THE_START)
        queue = topology_for(scenario).sync_requests.name
        connector = RabbitConnector(amqp_url, connection_name="test")
        assert wait_for(
            lambda: (inspect_queue(connector, queue) or QueueState(0, 0)).consumers == 1,
            timeout=30,
        )
        publish_sync_request(amqp_url, scenario, "first")
        assert wait_for(lambda: runs_started(pipeline, "poller"), timeout=30)
        publish_sync_request(amqp_url, scenario, "second", full=True)

        def taken_during_the_run() -> bool:
            state = inspect_queue(connector, queue)
            return state is not None and state.ready == 0 and not runs(redis_url, scenario)

        assert wait_for(taken_during_the_run, timeout=5), "the request waited behind the run"
        assert wait_for(lambda: len(runs(redis_url, scenario)) == 2, timeout=90)
        history = sorted(runs(redis_url, scenario), key=lambda r: r["started_at"])
        assert [(r["correlation_id"], r["full"], r["status"]) for r in history] == [
            ("first", False, "succeeded"),
            ("second", True, "succeeded"),
        ]
        assert set(pipeline.stop_all().values()) == {0}
    finally:
        pipeline.close()


def test_a_request_queued_behind_a_run_survives_the_sigkill_of_the_poller_running_it(
    tmp_path, amqp_url, redis_url, scenario
):
    """Poller A runs a request; B takes the next (full, with deletions allowed) and queues it in
    Redis, and A runs it after its own. A is SIGKILLed during that run: B resumes it once A's
    lease expired (it was taken, not removed, from the queue)."""
    pipeline = Pipeline(
        tmp_path, amqp_url=amqp_url, redis_url=redis_url, scenario=scenario, latency_ms=100
    )
    try:
        pipeline.client.generate(projects=15, tasks_per_project=5, flagged=True, ensure_field=True)
        start_two_pollers(pipeline, amqp_url, scenario)
        publish_sync_request(amqp_url, scenario, "first")
        assert wait_for(
            lambda: runs_started(pipeline, "poller-1") or runs_started(pipeline, "poller-2"),
            timeout=30,
        )
        publish_sync_request(amqp_url, scenario, "queued", full=True, allow_deletions=True)

        def running_the_queued_one() -> str | None:
            for name in ("poller-1", "poller-2"):
                if any(line["full"] for line in runs_started(pipeline, name)):
                    return name
            return None

        assert wait_for(lambda: running_the_queued_one() is not None, timeout=60)
        victim = running_the_queued_one()
        assert victim is not None
        pipeline.services.pop(victim).kill()  # SIGKILL, mid-run
        assert not any(r["correlation_id"] == "queued" for r in runs(redis_url, scenario))

        def resumed() -> list[dict]:
            return [
                r
                for r in runs(redis_url, scenario)
                if "queued" in {r["correlation_id"], *r["coalesced_correlation_ids"]}
            ]

        assert wait_for(lambda: resumed(), timeout=90), runs(redis_url, scenario)
        [run] = resumed()
        assert run["status"] == "succeeded" and run["full"] is True
        assert set(pipeline.stop_all().values()) == {0}
    finally:
        pipeline.close()


def test_a_deleted_projects_events_go_with_the_pwa_clock_ahead_of_the_pollers(pipeline, redis_url):
    """The sandbox's PWA is in Berlin; a poller told it is UTC reads every publish an hour
    later than it was (as a PWA clock an hour ahead would make it), so its upserts carry
    revisions after its own clock. The removals of a deleted project must still order after
    them, or the writer takes them for stale and the events stay forever."""
    client = pipeline.client
    client.generate(projects=1, tasks_per_project=1, flagged=True, ensure_field=True)
    adele = resource_of(pipeline, ADELE)
    doomed = client.create_project(
        "Deleted, clock ahead", [flagged_task("a", adele, 1), flagged_task("b", adele, 2)]
    )
    ahead = {**FROM_THE_START, "PWASYNC_PWA_TIMEZONE": "UTC"}
    for name in ("poller", "writer-1", "ledger"):
        pipeline.start(name, ahead if name == "poller" else FROM_THE_START)
    pipeline.cli("sync-now", env={"PWASYNC_PWA_TIMEZONE": "UTC"})

    def adeles_tasks() -> set[str]:
        return {task for mailbox, task in pipeline.event_keys() if mailbox == ADELE}

    assert wait_for(lambda: adeles_tasks() >= set(doomed["task_ids"]), timeout=60)
    client.delete_project(doomed["project_id"])
    pipeline.cli("sync-now", env={"PWASYNC_PWA_TIMEZONE": "UTC"})

    def removals_published() -> bool:
        history = runs(redis_url, pipeline.scenario)
        return len(history) >= 2 and history[0]["tasks"]["removed"] == 2

    assert wait_for(removals_published, timeout=60)
    assert wait_for(lambda: not (adeles_tasks() & set(doomed["task_ids"])), timeout=30), (
        "the removals were taken for stale"
    )
    assert set(pipeline.stop_all().values()) == {0}
