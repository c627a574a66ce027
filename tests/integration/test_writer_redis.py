"""The writer's Redis edge on the real Redis: shared mailbox limits, task leases and order,
and the race of two handlers on one task."""

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from common import metrics
from common.messages import Assignee, TaskChanged
from common.redis_store import Keys
from services.event_writer.handler import TaskChangedHandler
from services.event_writer.mailbox_limits import GraphLimitKeys, MailboxLimiter
from services.event_writer.planner import RecordedEvent
from services.event_writer.task_store import AssigneeFailure, Begun, Busy, Finish, Stale, TaskStore
from tests.unit.fakes import FakeGraph

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


@pytest.fixture
def keys(scenario, graph_keys):
    return Keys(scenario)  # graph_keys: the app's Graph-limit keys are removed afterwards


def limiter(redis_client, keys, redis_url, **kwargs):
    """A replica's limiter, for the Entra app of this test's scenario."""
    return MailboxLimiter(redis_client, app_keys(keys), redis_url, **kwargs)


def app_keys(keys):
    return GraphLimitKeys(f"tenant-{keys.scenario}", "app")


def test_two_replicas_share_four_slots_per_mailbox(redis_client, keys, redis_url):
    first, second = limiter(redis_client, keys, redis_url), limiter(redis_client, keys, redis_url)
    a = first.acquire({"m@x.com": 3, "other@x.com": 4})
    b = second.acquire({"m@x.com": 3})
    assert len(a["m@x.com"].tokens) == 3 and len(a["other@x.com"].tokens) == 4
    assert len(b["m@x.com"].tokens) == 1  # 4 in flight cluster-wide, whoever holds them
    assert second.acquire({"m@x.com": 1})["m@x.com"].tokens == ()
    first.release({"m@x.com": list(a["m@x.com"].tokens)})
    assert len(second.acquire({"m@x.com": 4})["m@x.com"].tokens) == 3


def test_a_pause_stops_every_replica_for_that_mailbox_only(redis_client, keys, redis_url):
    first, second = limiter(redis_client, keys, redis_url), limiter(redis_client, keys, redis_url)
    first.pause("m@x.com", 30)
    first.pause("m@x.com", 1)  # never shortened
    grants = second.acquire({"m@x.com": 1, "other@x.com": 1})
    assert grants["m@x.com"].tokens == () and 29 < grants["m@x.com"].wait_seconds <= 30
    assert len(grants["other@x.com"].tokens) == 1


def test_the_ten_minute_budget_is_shared_and_says_how_long_to_wait(redis_client, keys, redis_url):
    first = limiter(redis_client, keys, redis_url, budget=6)
    second = limiter(redis_client, keys, redis_url, budget=6)
    spent = 0
    for replica in (first, second, first):
        grant = replica.acquire({"m@x.com": 4})["m@x.com"]
        spent += len(grant.tokens)
        replica.release({"m@x.com": list(grant.tokens)})
    assert spent == 6
    grant = second.acquire({"m@x.com": 1})["m@x.com"]
    assert grant.tokens == () and 600 <= grant.wait_seconds <= 660


def test_slots_of_a_dead_writer_end_with_their_lease(redis_client, keys, redis_url):
    dead = limiter(redis_client, keys, redis_url)
    dead.acquire({"m@x.com": 4})
    # Age the leases instead of waiting for them.
    slots = app_keys(keys).slots("m@x.com")
    for token in redis_client.zrange(slots, 0, -1):
        redis_client.zadd(slots, {token: 1})
    assert (
        len(limiter(redis_client, keys, redis_url).acquire({"m@x.com": 4})["m@x.com"].tokens) == 4
    )


def test_slots_in_flight_are_renewed_and_a_dead_writers_run_out(redis_client, keys, redis_url):
    live, dead = limiter(redis_client, keys, redis_url), limiter(redis_client, keys, redis_url)
    mine = live.acquire({"m@x.com": 3})["m@x.com"].tokens
    theirs = dead.acquire({"m@x.com": 1})["m@x.com"].tokens
    live.release({"m@x.com": [mine[2]]})  # answered: given back, never renewed again
    slots = app_keys(keys).slots("m@x.com")
    seconds, micros = redis_client.time()
    soon = seconds * 1000 + micros // 1000 + 500
    redis_client.zadd(slots, {token: soon for token in redis_client.zrange(slots, 0, -1)})
    live.renew_slots()  # what the writer's renewal thread does every few seconds
    scores = dict(redis_client.zrange(slots, 0, -1, withscores=True))
    assert set(scores) == {*mine[:2], *theirs}
    assert all(scores[token] > soon + 5000 for token in mine[:2])
    assert scores[theirs[0]] == soon  # the dead writer renews nothing: its slot lapses


def test_begin_and_finish_keep_order_lease_dirt_and_the_map(redis_client, keys, redis_url):
    store = TaskStore(redis_client, keys, redis_url)
    task, alice = str(uuid.uuid4()), str(uuid.uuid4())
    first = store.begin(task, "2026-01-02|x", "upsert", ["a@x.com"])
    assert isinstance(first, Begun) and not first.was_dirty and first.recorded == {}
    assert first.mailbox_states == {}
    assert isinstance(store.begin(task, "2026-01-03|x", "upsert", []), Busy)
    event = RecordedEvent(alice, "a@x.com", "AAMk1", "f1")
    failure = AssigneeFailure(
        str(uuid.uuid4()), "Ghost", "g@x.com", "ErrorInvalidUser", "gone", "t"
    )
    counted = metrics.ASSIGNEE_FAILURES.labels("ErrorInvalidUser")._value.get()
    assert store.finish(task, first.token, Finish(record=[event], failures=[failure]))
    assert metrics.ASSIGNEE_FAILURES.labels("ErrorInvalidUser")._value.get() == counted + 1
    assert store.failures() == {task: [json_of(failure)]}
    assert store.failures_of(task) == [json_of(failure)] and store.failures_of(alice) == []
    assert store.handling(task) == {"order": "2026-01-02|x", "change": "upsert", "dirty": "0"}
    assert store.handling(alice) == {}
    store.mark_mailbox("a@x.com", "clean")
    assert isinstance(store.begin(task, "2026-01-01|x", "upsert", []), Stale)
    again = store.begin(task, "2026-01-02|x", "upsert", ["a@x.com", "new@x.com"])
    assert again.recorded == {alice: event} and not again.was_dirty
    assert again.mailbox_states == {"a@x.com": "clean"}
    store.abandon(task, again.token)  # died mid-way: dirty stays
    third = store.begin(task, "2026-01-02|x", "upsert", [])
    assert third.was_dirty
    store.finish(task, third.token, Finish(uncertain=True))
    assert store.failures() == {}  # the failure is gone with the assignee
    fourth = store.begin(task, "2026-01-04|x", "remove", [])
    assert fourth.was_dirty
    store.finish(task, fourth.token, Finish(forget=[alice], removal=True))
    assert isinstance(store.begin(task, "2026-01-03|x", "upsert", []), Stale)  # tombstone
    assert not redis_client.exists(keys.task_events(task))
    assert 0 < redis_client.ttl(keys.writer_task(task)) <= 30 * 86400


def json_of(failure):
    import json

    return json.loads(failure.to_json())


def test_a_lease_is_renewed_while_held_and_lost_leases_are_reported(redis_client, keys, redis_url):
    store = TaskStore(redis_client, keys, redis_url)
    task = str(uuid.uuid4())
    begun = store.begin(task, "k", "upsert", [])
    redis_client.pexpire(keys.writer_lease(task), 500)
    store.renew_leases()
    assert redis_client.pttl(keys.writer_lease(task)) > 5000
    redis_client.delete(keys.writer_lease(task))  # ran out while the writer stalled
    assert store.finish(task, begun.token, Finish()) is False
    assert redis_client.hget(keys.writer_task(task), "dirty") == "1"


class GatedGraph(FakeGraph):
    """Graph that holds every request of one mailbox until the test opens the gate."""

    def __init__(self, mailboxes):
        super().__init__(mailboxes)
        self.entered = threading.Event()
        self.gate = threading.Event()

    def submit(self, request):
        self.entered.set()
        assert self.gate.wait(10)
        return super().submit(request)


def snapshot(task_id, revision, name, assignees):
    return TaskChanged(
        scenario="race",
        project_id=str(uuid.uuid4()),
        task_id=task_id,
        task_name=name,
        start=datetime(2026, 12, 1, 9),
        finish=datetime(2026, 12, 1, 17),
        assignees=assignees,
        revision=revision,
        read_at=revision,
    )


@pytest.mark.parametrize("newer_first", [True, False])
def test_two_handlers_racing_on_one_task_never_let_the_older_snapshot_win(
    redis_client, keys, redis_url, newer_first
):
    """Two writers get two snapshots of one task at the same time; whichever starts first,
    the newer snapshot's event is what stays."""
    graph = GatedGraph(["a@x.com"])
    alice = [Assignee(resource_id=str(uuid.uuid4()), name="Alice", email="a@x.com")]
    task_id = str(uuid.uuid4())
    store = TaskStore(redis_client, keys, redis_url)
    handlers = [
        TaskChangedHandler(store=store, submit=graph.submit, publish_transfer=lambda m: None)
        for _ in range(2)
    ]
    older = snapshot(task_id, T0, "old name", alice)
    newer = snapshot(task_id, T0 + timedelta(minutes=1), "new name", alice)
    first, second = (newer, older) if newer_first else (older, newer)
    errors = []

    def run(handler, message):
        try:
            handler.handle(message)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    one = threading.Thread(target=run, args=(handlers[0], first))
    one.start()
    assert graph.entered.wait(10)  # the first handler holds the lease, stuck in Graph
    two = threading.Thread(target=run, args=(handlers[1], second))
    two.start()
    time.sleep(0.3)  # the second handler now waits for the lease (no assertion on time)
    assert two.is_alive()
    graph.gate.set()
    one.join(10)
    two.join(10)
    assert errors == []
    [event] = graph.events["a@x.com"].values()
    assert event["subject"] == "new name"
