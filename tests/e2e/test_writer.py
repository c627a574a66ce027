"""Writers as processes against the sandbox, fed task.changed messages directly (no poller):
Outlook's limits across replicas, throttling, poison messages, a lost map, SIGTERM."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pika
import pytest

from common.consumer import DEAD_REASON_HEADER
from common.messages import Assignee, TaskChanged, encode
from common.rabbit import Publisher, QueueState, RabbitConnector, inspect_queue
from common.redis_store import Keys, connect_redis
from common.topology import routing_key_task_changed, topology_for
from tests.e2e.harness import Pipeline, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def tasks_for(scenario, mailboxes, count, *, per_task=1, revision=T0, name="Task"):
    tasks = []
    for index in range(count):
        assignees = [
            Assignee(resource_id=uuid.uuid5(uuid.NAMESPACE_URL, m), name=m, email=m)
            for m in (mailboxes[(index + k) % len(mailboxes)] for k in range(per_task))
        ]
        tasks.append(
            TaskChanged(
                scenario=scenario,
                project_id=str(uuid.UUID(int=1)),
                project_name="Load",
                task_id=str(uuid.UUID(int=index + 1)),
                task_name=f"{name} {index}",
                start=datetime(2026, 12, 1, 9) + timedelta(days=index % 30),
                finish=datetime(2026, 12, 1, 17) + timedelta(days=index % 30),
                timezone="Europe/Berlin",
                assignees=assignees,
                revision=revision,
                read_at=revision,
            )
        )
    return tasks


def publish(amqp_url, scenario, bodies):
    connector = RabbitConnector(amqp_url, connection_name="test-load")
    publisher = Publisher(connector, topology_for(scenario))
    try:
        for body in bodies:
            publisher.publish(
                routing_key_task_changed(scenario),
                body if isinstance(body, bytes) else encode(body),
            )
    finally:
        publisher.close()


def exact(pipeline, expected):
    keys = pipeline.event_keys()
    return set(keys) == expected and all(n == 1 for n in keys.values())


def expected_keys(tasks):
    return {(a.email, str(t.task_id)) for t in tasks for a in t.assignees}


@pytest.fixture
def slow_pipeline(tmp_path, amqp_url, redis_url, scenario):
    pipe = Pipeline(
        tmp_path, amqp_url=amqp_url, redis_url=redis_url, scenario=scenario, latency_ms=50
    )
    yield pipe
    pipe.close()


def test_two_writers_never_exceed_four_requests_per_mailbox(slow_pipeline, amqp_url):
    pipeline = slow_pipeline
    mailboxes = pipeline.client.generate(projects=1, tasks_per_project=1, mailboxes=3)["mailboxes"]
    tasks = tasks_for(pipeline.scenario, mailboxes, 150, per_task=2)
    publish(amqp_url, pipeline.scenario, tasks)
    pipeline.client.reset_stats()
    pipeline.start("writer-1")
    pipeline.start("writer-2")
    assert wait_for(lambda: exact(pipeline, expected_keys(tasks)), timeout=120)
    stats = pipeline.client.stats()["graph"]
    peaks = stats["peak_concurrency"]["by_mailbox"]
    assert set(peaks) == set(mailboxes)
    assert max(peaks.values()) == 4  # saturated, and never above
    assert stats["throttled"] == 0
    assert set(pipeline.stop_all().values()) == {0}


def test_throttled_mailboxes_wait_out_retry_after_and_nothing_is_duplicated(
    slow_pipeline, amqp_url
):
    pipeline = slow_pipeline
    mailboxes = pipeline.client.generate(projects=1, tasks_per_project=1, mailboxes=4)["mailboxes"]
    # Graph allows fewer concurrent requests than the writers assume, and throttles at random.
    pipeline.client.config(
        mailbox_concurrency_limit=2,
        transaction_id_window_s=0,
        faults={"graph": {"throttle_ratio": 0.05, "unavailable_ratio": 0}},
    )
    tasks = tasks_for(pipeline.scenario, mailboxes, 100)
    publish(amqp_url, pipeline.scenario, tasks)
    pipeline.start("writer-1")
    pipeline.start("writer-2")
    assert wait_for(lambda: exact(pipeline, expected_keys(tasks)), timeout=180)
    assert pipeline.client.stats()["graph"]["throttled"] > 0
    waits = [
        line
        for name in ("writer-1", "writer-2")
        for line in pipeline.log_lines(name)
        if line["event"] == "Graph throttled a mailbox"
    ]
    assert waits and all(line["wait"] > 0 for line in waits)
    assert set(pipeline.stop_all().values()) == {0}


def test_a_poison_message_is_dead_lettered_with_its_reason_and_the_writer_goes_on(
    slow_pipeline, amqp_url
):
    pipeline = slow_pipeline
    mailboxes = pipeline.client.generate(projects=1, tasks_per_project=1, mailboxes=2)["mailboxes"]
    pipeline.start("writer-1")
    [good, backwards] = tasks_for(pipeline.scenario, mailboxes, 2)
    backwards = backwards.model_copy(update={"finish": backwards.start - timedelta(hours=1)})
    publish(amqp_url, pipeline.scenario, [b"{not json", backwards, good])
    queue = topology_for(pipeline.scenario).task_changes
    connector = RabbitConnector(amqp_url, connection_name="test")
    assert wait_for(
        lambda: (inspect_queue(connector, queue.dead_letter_queue) or QueueState(0, 0)).ready == 2,
        timeout=60,
    )
    assert wait_for(lambda: exact(pipeline, expected_keys([good])), timeout=60)
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        reasons = []
        for _ in range(2):
            _, properties, _ = channel.basic_get(queue.dead_letter_queue, auto_ack=True)
            reasons.append(properties.headers[DEAD_REASON_HEADER])
    finally:
        connection.close()
    assert any("not UTF-8 JSON" in r for r in reasons)
    assert any("finishes before it starts" in r for r in reasons)
    assert pipeline.services["writer-1"].alive()
    assert pipeline.stop_all() == {"writer-1": 0}


def test_a_lost_map_is_recovered_without_duplicates(slow_pipeline, amqp_url, redis_url):
    pipeline = slow_pipeline
    mailboxes = pipeline.client.generate(projects=1, tasks_per_project=1, mailboxes=3)["mailboxes"]
    pipeline.client.config(transaction_id_window_s=0)  # Graph's dedupe cannot help
    tasks = tasks_for(pipeline.scenario, mailboxes, 30)
    publish(amqp_url, pipeline.scenario, tasks)
    pipeline.start("writer-1")
    assert wait_for(lambda: exact(pipeline, expected_keys(tasks)), timeout=60)
    assert pipeline.stop_all() == {"writer-1": 0}

    client = connect_redis(redis_url)  # Redis loses the writer's bookkeeping
    for key in client.scan_iter(match=Keys(pipeline.scenario).all_pattern):
        client.delete(key)
    client.close()
    renamed = tasks_for(pipeline.scenario, mailboxes, 30, revision=T0 + timedelta(1), name="New")
    publish(amqp_url, pipeline.scenario, renamed)
    pipeline.start("writer-2")
    assert wait_for(
        lambda: {e["subject"] for e in pipeline.client.events()} == {t.task_name for t in renamed},
        timeout=60,
    )
    assert exact(pipeline, expected_keys(tasks))
    assert pipeline.stop_all() == {"writer-2": 0}


def test_sigterm_finishes_in_flight_work_and_exits_0_within_ten_seconds(
    tmp_path, amqp_url, redis_url, scenario
):
    pipeline = Pipeline(
        tmp_path, amqp_url=amqp_url, redis_url=redis_url, scenario=scenario, latency_ms=300
    )
    try:
        mailboxes = pipeline.client.generate(projects=1, tasks_per_project=1, mailboxes=5)[
            "mailboxes"
        ]
        tasks = tasks_for(scenario, mailboxes, 400)
        publish(amqp_url, scenario, tasks)
        writer = pipeline.start("writer-1")
        assert wait_for(lambda: len(pipeline.event_keys()) >= 20, timeout=60)
        started = time.monotonic()
        assert writer.terminate(timeout=15) == 0
        assert time.monotonic() - started < 10
        del pipeline.services["writer-1"]
        assert len(pipeline.event_keys()) < 400, "the run finished before the stop"
        lines = pipeline.log_lines("writer-1")
        assert not any("unfinished" in line.get("event", "") for line in lines)
        pipeline.start("writer-2")  # what was not done is still queued, nothing twice
        assert wait_for(lambda: exact(pipeline, expected_keys(tasks)), timeout=120)
        assert pipeline.stop_all() == {"writer-2": 0}
    finally:
        pipeline.close()


def test_sigterm_while_graph_hangs_exits_0_within_the_stop_timeout(
    tmp_path, amqp_url, redis_url, scenario
):
    # Issue 11, item 19: the drains (consumer twice, dispatcher, publisher) each had a bound,
    # but not their sum, and handler threads waiting on Graph kept the process alive after them.
    pipeline = Pipeline(tmp_path, amqp_url=amqp_url, redis_url=redis_url, scenario=scenario)
    try:
        mailboxes = pipeline.client.generate(projects=1, tasks_per_project=1, mailboxes=5)[
            "mailboxes"
        ]
        tasks = tasks_for(scenario, mailboxes, 400)
        publish(amqp_url, scenario, tasks)
        writer = pipeline.start("writer-1", {"PWASYNC_STOP_TIMEOUT_SECONDS": "6"})
        assert wait_for(lambda: len(pipeline.event_keys()) >= 20, timeout=60)
        # Every Graph call now hangs well past the stop timeout (not longer: the calls in flight
        # still land in the sandbox, and the exact end state below waits for them).
        pipeline.client.config(graph_latency_ms=15_000)
        time.sleep(2)
        started = time.monotonic()
        assert writer.terminate(timeout=90) == 0
        elapsed = time.monotonic() - started
        del pipeline.services["writer-1"]
        assert elapsed < 6 + 2, f"stopped after {elapsed:.1f} s"
        lines = pipeline.log_lines("writer-1")
        assert any(line.get("event", "").startswith("stop timeout") for line in lines)
        pipeline.client.config(graph_latency_ms=0)
        pipeline.start("writer-2")  # what was cut short is redelivered, nothing twice
        assert wait_for(lambda: exact(pipeline, expected_keys(tasks)), timeout=180)
        assert pipeline.stop_all() == {"writer-2": 0}
    finally:
        pipeline.close()
