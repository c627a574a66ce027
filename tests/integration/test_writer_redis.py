"""The writer's Redis edge on the real Redis: shared mailbox limits, task leases and order,
and the race of two handlers on one task."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from common import metrics
from common.messages import Assignee, TaskChanged
from common.redis_store import Keys
from services.event_writer.handler import TaskChangedHandler
from services.event_writer.mailbox_limits import GraphLimitKeys, MailboxLimiter
from services.event_writer.planner import RecordedEvent
from services.event_writer.task_store import (
    AssigneeFailure,
    Begun,
    Busy,
    Finish,
    Stale,
    TaskReports,
    TaskStore,
)
from tests.unit.fakes import FakeGraph, Recorder

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


@pytest.fixture
def keys(scenario, graph_keys):
    return Keys(scenario)  # graph_keys: the app's Graph-limit keys are removed afterwards


@pytest.fixture
def run(loop_runner):
    """Awaits one of the writer's coroutines on the test's event loop."""
    return loop_runner.run


@pytest.fixture
def limiter(async_redis, keys, redis_url):
    """A replica's limiter, for the Entra app of this test's scenario."""

    def make(**kwargs):
        return MailboxLimiter(async_redis, app_keys(keys), redis_url, **kwargs)

    return make


def app_keys(keys):
    return GraphLimitKeys(f"tenant-{keys.scenario}", "app")


def test_two_replicas_share_four_slots_per_mailbox(limiter, run):
    first, second = limiter(), limiter()
    a = run(first.acquire({"m@x.com": 3, "other@x.com": 4}))
    b = run(second.acquire({"m@x.com": 3}))
    assert len(a["m@x.com"].tokens) == 3 and len(a["other@x.com"].tokens) == 4
    assert len(b["m@x.com"].tokens) == 1  # 4 in flight cluster-wide, whoever holds them
    assert run(second.acquire({"m@x.com": 1}))["m@x.com"].tokens == ()
    run(first.release({"m@x.com": list(a["m@x.com"].tokens)}))
    assert len(run(second.acquire({"m@x.com": 4}))["m@x.com"].tokens) == 3


def test_one_release_gives_back_only_the_slots_named_in_every_mailbox(
    redis_client, keys, limiter, run
):
    writer = limiter()
    grants = run(writer.acquire({"a@x.com": 3, "b@x.com": 2, "c@x.com": 1}))
    a, b = grants["a@x.com"].tokens, grants["b@x.com"].tokens
    run(writer.release({"a@x.com": list(a[:2]), "b@x.com": list(b), "c@x.com": []}))
    slots = app_keys(keys).slots
    assert redis_client.zrange(slots("a@x.com"), 0, -1) == [a[2]]
    assert redis_client.zcard(slots("b@x.com")) == 0
    assert redis_client.zcard(slots("c@x.com")) == 1  # nothing named: nothing given back
    assert not writer.lease_alive("a@x.com", a[0]) and writer.lease_alive("a@x.com", a[2])


def test_slots_given_back_in_a_slot_request_are_free_for_it(limiter, run):
    """A busy mailbox's answered requests hand their slots to the next ones in one trip."""
    writer, other = limiter(), limiter()
    mine = run(writer.acquire({"m@x.com": 4}))["m@x.com"].tokens
    assert run(other.acquire({"m@x.com": 1}))["m@x.com"].tokens == ()
    again = run(writer.acquire({"m@x.com": 4}, {"m@x.com": list(mine[:3])}))["m@x.com"]
    assert len(again.tokens) == 3  # the three given back, not the one still in flight


def test_a_pause_stops_every_replica_for_that_mailbox_only(limiter, run):
    first, second = limiter(), limiter()
    run(first.pause("m@x.com", 30))
    run(first.pause("m@x.com", 1))  # never shortened
    grants = run(second.acquire({"m@x.com": 1, "other@x.com": 1}))
    assert grants["m@x.com"].tokens == () and 29 < grants["m@x.com"].wait_seconds <= 30
    assert len(grants["other@x.com"].tokens) == 1


def test_the_ten_minute_budget_is_shared_and_says_how_long_to_wait(limiter, run):
    first, second = limiter(budget=6), limiter(budget=6)
    spent = 0
    for replica in (first, second, first):
        grant = run(replica.acquire({"m@x.com": 4}))["m@x.com"]
        spent += len(grant.tokens)
        run(replica.release({"m@x.com": list(grant.tokens)}))
    assert spent == 6
    grant = run(second.acquire({"m@x.com": 1}))["m@x.com"]
    assert grant.tokens == () and 600 <= grant.wait_seconds <= 660


def test_a_grant_says_what_the_budget_holds_and_handed_on_requests_are_counted(limiter, run):
    first, second = limiter(budget=10), limiter(budget=10)
    grant = run(first.acquire({"m@x.com": 4}))["m@x.com"]
    assert len(grant.tokens) == 4 and grant.budget_left == 6
    run(first.charge("m@x.com", 3))  # three requests sent on those slots without asking
    run(first.release({"m@x.com": list(grant.tokens)}))
    grant = run(second.acquire({"m@x.com": 4}))["m@x.com"]
    assert len(grant.tokens) == 3 and grant.budget_left == 0  # 4 + 3 + 3 = the budget
    assert run(second.acquire({"m@x.com": 1}))["m@x.com"].wait_seconds >= 600 - 60


def test_a_slot_may_be_handed_on_while_its_lease_is_known_to_hold(
    redis_client, async_redis, keys, redis_url, run
):
    from services.event_writer.mailbox_limits import LEASE_SECONDS, RENEW_SECONDS

    now = [1000.0]
    writer = MailboxLimiter(async_redis, app_keys(keys), redis_url, clock=lambda: now[0])
    first, second = run(writer.acquire({"m@x.com": 2}))["m@x.com"].tokens
    now[0] += LEASE_SECONDS - RENEW_SECONDS - 0.1
    assert writer.lease_alive("m@x.com", first)
    now[0] += 0.2  # no renewal came through for that long
    assert not writer.lease_alive("m@x.com", first)
    redis_client.zrem(app_keys(keys).slots("m@x.com"), second)  # its lease ran out in Redis
    run(writer.renew_slots())
    assert writer.lease_alive("m@x.com", first)
    assert not writer.lease_alive("m@x.com", second)  # renewing found it gone
    run(writer.release({"m@x.com": [first, second]}))
    assert not writer.lease_alive("m@x.com", first)


def test_slots_of_a_dead_writer_end_with_their_lease(redis_client, keys, limiter, run):
    dead = limiter()
    run(dead.acquire({"m@x.com": 4}))
    # Age the leases instead of waiting for them.
    slots = app_keys(keys).slots("m@x.com")
    for token in redis_client.zrange(slots, 0, -1):
        redis_client.zadd(slots, {token: 1})
    assert len(run(limiter().acquire({"m@x.com": 4}))["m@x.com"].tokens) == 4


def test_slots_in_flight_are_renewed_and_a_dead_writers_run_out(redis_client, keys, limiter, run):
    live, dead = limiter(), limiter()
    mine = run(live.acquire({"m@x.com": 3}))["m@x.com"].tokens
    theirs = run(dead.acquire({"m@x.com": 1}))["m@x.com"].tokens
    run(live.release({"m@x.com": [mine[2]]}))  # answered: given back, never renewed again
    slots = app_keys(keys).slots("m@x.com")
    seconds, micros = redis_client.time()
    soon = seconds * 1000 + micros // 1000 + 500
    redis_client.zadd(slots, {token: soon for token in redis_client.zrange(slots, 0, -1)})
    run(live.renew_slots())  # what the writer's renewal loop does every few seconds
    scores = dict(redis_client.zrange(slots, 0, -1, withscores=True))
    assert set(scores) == {*mine[:2], *theirs}
    assert all(scores[token] > soon + 5000 for token in mine[:2])
    assert scores[theirs[0]] == soon  # the dead writer renews nothing: its slot lapses


def test_begin_and_finish_keep_order_lease_dirt_and_the_map(
    redis_client, async_redis, keys, redis_url, run
):
    store = TaskStore(async_redis, keys, redis_url)
    reports = TaskReports(redis_client, keys, redis_url)
    task, alice = str(uuid.uuid4()), str(uuid.uuid4())
    first = run(store.begin(task, "2026-01-02|x", "upsert", ["a@x.com"]))
    assert isinstance(first, Begun) and not first.was_dirty and first.recorded == {}
    assert first.mailbox_states == {}
    assert isinstance(run(store.begin(task, "2026-01-03|x", "upsert", [])), Busy)
    event = RecordedEvent(alice, "a@x.com", "AAMk1", "f1")
    failure = AssigneeFailure(
        str(uuid.uuid4()), "Ghost", "g@x.com", "ErrorInvalidUser", "gone", "t"
    )
    counted = metrics.ASSIGNEE_FAILURES.labels("ErrorInvalidUser")._value.get()
    assert run(store.finish(task, first.token, Finish(record=[event], failures=[failure])))
    assert metrics.ASSIGNEE_FAILURES.labels("ErrorInvalidUser")._value.get() == counted + 1
    assert reports.failures() == {task: [json_of(failure)]}
    assert reports.failures_of(task) == [json_of(failure)] and reports.failures_of(alice) == []
    assert reports.handling(task) == {"order": "2026-01-02|x", "change": "upsert", "dirty": "0"}
    assert reports.handling(alice) == {}
    run(store.mark_mailbox("a@x.com", "clean"))
    assert isinstance(run(store.begin(task, "2026-01-01|x", "upsert", [])), Stale)
    again = run(store.begin(task, "2026-01-02|x", "upsert", ["a@x.com", "new@x.com"]))
    assert again.recorded == {alice: event} and not again.was_dirty
    assert again.mailbox_states == {"a@x.com": "clean"}
    run(store.abandon(task, again.token))  # died mid-way: dirty stays
    third = run(store.begin(task, "2026-01-02|x", "upsert", []))
    assert third.was_dirty
    run(store.finish(task, third.token, Finish(uncertain=True)))
    assert reports.failures() == {}  # the failure is gone with the assignee
    fourth = run(store.begin(task, "2026-01-04|x", "remove", []))
    assert fourth.was_dirty
    run(store.finish(task, fourth.token, Finish(forget=[alice], removal=True)))
    assert isinstance(run(store.begin(task, "2026-01-03|x", "upsert", [])), Stale)  # tombstone
    assert not redis_client.exists(keys.task_events(task))
    assert 0 < redis_client.ttl(keys.writer_task(task)) <= 30 * 86400


def json_of(failure):
    import json

    return json.loads(failure.to_json())


def test_a_lease_is_renewed_while_held_and_lost_leases_are_reported(
    redis_client, async_redis, keys, redis_url, run
):
    store = TaskStore(async_redis, keys, redis_url)
    task = str(uuid.uuid4())
    begun = run(store.begin(task, "k", "upsert", []))
    redis_client.pexpire(keys.writer_lease(task), 500)
    run(store.renew_leases())
    assert redis_client.pttl(keys.writer_lease(task)) > 5000
    redis_client.delete(keys.writer_lease(task))  # ran out while the writer stalled
    assert run(store.finish(task, begun.token, Finish())) is False
    assert redis_client.hget(keys.writer_task(task), "dirty") == "1"


class GatedGraph(FakeGraph):
    """Graph that holds every request of one mailbox until the test opens the gate."""

    def __init__(self, mailboxes):
        super().__init__(mailboxes)
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    def submit(self, request):
        self.entered.set()
        ticket = super().submit(request)
        answer = ticket.future
        gated = asyncio.get_running_loop().create_future()

        async def hold():
            await self.gate.wait()
            gated.set_result(answer.result())

        self.held = asyncio.ensure_future(hold())
        ticket.future = gated
        return ticket


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
    async_redis, keys, redis_url, run, newer_first
):
    """Two writers get two snapshots of one task at the same time; whichever starts first,
    the newer snapshot's event is what stays."""
    alice = [Assignee(resource_id=str(uuid.uuid4()), name="Alice", email="a@x.com")]
    task_id = str(uuid.uuid4())
    older = snapshot(task_id, T0, "old name", alice)
    newer = snapshot(task_id, T0 + timedelta(minutes=1), "new name", alice)
    first, second = (newer, older) if newer_first else (older, newer)

    async def race():
        graph = GatedGraph(["a@x.com"])
        store = TaskStore(async_redis, keys, redis_url)
        handlers = [
            TaskChangedHandler(store=store, submit=graph.submit, publish_transfer=Recorder())
            for _ in range(2)
        ]
        one = asyncio.ensure_future(handlers[0].handle(first))
        await asyncio.wait_for(graph.entered.wait(), 10)  # it holds the lease, stuck in Graph
        two = asyncio.ensure_future(handlers[1].handle(second))
        await asyncio.sleep(0.3)  # the second handler now waits for the lease
        assert not two.done()
        graph.gate.set()
        await asyncio.wait_for(asyncio.gather(one, two), 10)
        return graph

    graph = run(race())
    [event] = graph.events["a@x.com"].values()
    assert event["subject"] == "new name"


def test_commands_of_one_turn_go_as_one_pipeline_each_with_its_own_reply(
    async_redis, redis_client, keys, run
):
    """Coalescing: what the handlings of one turn send is one round trip; a script Redis does
    not know yet runs once (NOSCRIPT ran nothing), and an error reply is its command's own."""
    from common.redis_store import Coalescing

    counter = f"pwasync:{{{keys.scenario}}}:coalesced"
    text = f"pwasync:{{{keys.scenario}}}:text"
    redis_client.set(text, "not a hash")
    # A script of its own (a comment makes its sha unique): Redis has never seen it.
    script = async_redis.register_script(
        f"-- {uuid.uuid4().hex}\nreturn redis.call('INCR', KEYS[1])"
    )
    pipelines = []
    original = async_redis.pipeline

    def counting(*args, **kwargs):
        pipelines.append(1)
        return original(*args, **kwargs)

    async_redis.pipeline = counting
    batched = Coalescing(async_redis)

    async def turn():
        return await asyncio.gather(
            *(batched.script(script, [counter], []) for _ in range(5)),
            batched.command("HGET", text, "field"),  # WRONGTYPE: a string, not a hash
            return_exceptions=True,
        )

    try:
        replies = run(turn())
    finally:
        async_redis.pipeline = original
        redis_client.delete(counter, text)
    assert sorted(replies[:5]) == [1, 2, 3, 4, 5]  # each script ran once
    assert "WRONGTYPE" in str(replies[5])
    assert len(pipelines) == 2  # the turn's pipeline, and the NOSCRIPT ones once more
