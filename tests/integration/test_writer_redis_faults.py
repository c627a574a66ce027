"""The writer's loops on the real Redis answering error replies (issue 11, item 1).

An acceptance run with Redis refusing writes for 12 s did not hit the window, so the faults are
put into the loops directly: the next command of a kind is replaced by an EVAL of
``redis.error_reply``, so the real Redis answers the error and redis-py parses it as it would
``OOM``, ``READONLY`` or ``BUSY`` from a full, failed-over or busy server. After each fault the
writer must go on writing events, its loops must report fresh heartbeats, and no task lease
may be left held.
"""

import threading
import time
import uuid
from datetime import UTC, datetime

import pytest

from common.errors import RetryableError
from common.health import Heartbeats
from common.messages import Assignee, TaskChanged
from common.redis_store import Keys
from services.event_writer import mailbox_limits
from services.event_writer.dispatcher import GraphDispatcher
from services.event_writer.graph_protocol import GraphResult
from services.event_writer.handler import TaskChangedHandler
from services.event_writer.mailbox_limits import MailboxLimiter
from services.event_writer.task_store import TaskStore
from tests.unit.fakes import FakeGraph

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
MAILBOXES = [f"user{i}@contoso.com" for i in range(4)]
OOM = "OOM command not allowed when used memory > 'maxmemory'."
READONLY = "READONLY You can't write against a read only replica."
BUSY = "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."


class ErrorReplies:
    """Arms the real Redis to answer the next matching command of ``client`` with an error."""

    def __init__(self, client):
        self._lock = threading.Lock()
        self._armed = []  # (matches(args), reply)
        self.hits = []
        original_execute, original_pipeline = client.execute_command, client.pipeline

        def reply_for(args):
            with self._lock:
                for index, (matches, reply) in enumerate(self._armed):
                    if matches(args):
                        del self._armed[index]
                        self.hits.append(reply.split()[0])
                        return reply
            return None

        def refuse(reply):
            original_execute("EVAL", "return redis.error_reply(ARGV[1])", 0, reply)

        def execute_command(*args, **options):
            reply = reply_for(args)
            if reply is not None:
                refuse(reply)
            return original_execute(*args, **options)

        def pipeline(*args, **kwargs):
            pipe = original_pipeline(*args, **kwargs)
            original = pipe.execute

            def execute(*a, **k):
                for queued in pipe.command_stack:
                    args = queued[0] if isinstance(queued, tuple) else queued.args
                    reply = reply_for(args)
                    if reply is not None:
                        pipe.reset()
                        refuse(reply)
                return original(*a, **k)

            pipe.execute = execute
            return pipe

        client.execute_command = execute_command
        client.pipeline = pipeline

    def arm(self, matches, reply):
        with self._lock:
            self._armed.append((matches, reply))

    def pending(self):
        with self._lock:
            return len(self._armed)


def script(limiter_script):
    return lambda args: args[:2] == ("EVALSHA", limiter_script.sha)


class Transport:
    """FakeGraph behind the dispatcher's transport port, safe for its sender threads."""

    def __init__(self, graph):
        self.graph, self.lock, self.throttle = graph, threading.Lock(), set()
        self.delay = 0.0  # seconds each request is in flight

    def send(self, request):
        time.sleep(self.delay)
        with self.lock:
            if request.mailbox in self.throttle:
                self.throttle.discard(request.mailbox)
                return GraphResult(429, {}, {"retry-after": "0.05"})
            return self.graph.answer(request)

    def send_batch(self, requests):
        return [self.send(r) for r in requests]


def message(scenario, n):
    mailbox = MAILBOXES[n % len(MAILBOXES)]
    return TaskChanged(
        scenario=scenario,
        project_id=str(uuid.UUID(int=1)),
        task_id=str(uuid.UUID(int=1000 + n)),
        task_name=f"Task {n}",
        start=datetime(2026, 12, 1, 9),
        finish=datetime(2026, 12, 1, 17),
        timezone="UTC",
        assignees=[Assignee(resource_id=str(uuid.UUID(int=n + 1)), name="A", email=mailbox)],
        revision=T0,
        read_at=T0,
    )


@pytest.fixture
def writer(redis_client, redis_url, scenario, graph_keys, monkeypatch):
    monkeypatch.setattr(mailbox_limits, "RENEW_SECONDS", 0.05)
    keys = Keys(scenario)
    faults = ErrorReplies(redis_client)
    graph = FakeGraph(MAILBOXES)
    transport = Transport(graph)
    limiter = MailboxLimiter(redis_client, graph_keys, redis_url)
    heartbeats = Heartbeats()
    dispatcher = GraphDispatcher(
        transport, limiter, linger_seconds=0.002, senders=2, heartbeats=heartbeats
    ).start()
    stop = threading.Event()
    renewer = limiter.keep_slots(stop, heartbeats=heartbeats)
    store = TaskStore(redis_client, keys, redis_url)
    handler = TaskChangedHandler(
        store=store,
        submit=dispatcher.submit,
        publish_transfer=lambda m: None,
        lease_wait_seconds=0.5,
        graph_answer_timeout=5.0,
    )
    world = dict(
        faults=faults,
        graph=graph,
        transport=transport,
        limiter=limiter,
        heartbeats=heartbeats,
        handler=handler,
        redis=redis_client,
        keys=keys,
        renewer=renewer,
    )
    yield world
    stop.set()
    dispatcher.close()


def handle(handler, task, within=15.0):
    """Handle ``task`` like the consumer would (a retryable failure retried), in a thread: a
    writer that hangs fails the test instead of hanging it."""
    outcome = {}

    def run():
        for _ in range(5):
            try:
                handler.handle(task)
                outcome["ok"] = True
                return
            except RetryableError as exc:
                outcome["retried"] = outcome.get("retried", []) + [str(exc)]
            except Exception as exc:  # noqa: BLE001 - reported below
                outcome["error"] = exc
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(within)
    assert not thread.is_alive(), f"the writer hangs: task {task.task_id} not done in {within} s"
    assert outcome.get("ok"), outcome
    return outcome


def assert_healthy_and_done(world, scenario, count):
    assert all(check() for check in world["heartbeats"].checks().values()), world[
        "heartbeats"
    ].checks()
    assert {"graph-dispatcher", "graph-senders", "graph-slot-renewer"} <= set(
        world["heartbeats"].checks()
    )
    events = [e for box in world["graph"].events.values() for e in box.values()]
    assert len(events) == count  # every task once
    leases = list(world["redis"].scan_iter(match=world["keys"].writer_lease("*")))
    assert leases == []


@pytest.mark.parametrize("reply", [OOM, READONLY, BUSY], ids=["oom", "readonly", "busy"])
def test_an_error_reply_in_any_loop_leaves_the_writer_working(writer, scenario, reply):
    faults, limiter = writer["faults"], writer["limiter"]
    handler = writer["handler"]
    # The slot request of the dispatcher (a Lua script) ...
    faults.arm(script(limiter._acquire), reply)
    handle(handler, message(scenario, 0))
    # ... giving slots back after a send (a pipeline of ZREMs, in a sender thread) ...
    faults.arm(lambda args: args[0] == "ZREM", reply)
    handle(handler, message(scenario, 1))
    # ... sharing a 429's pause with the other replicas (a sender thread) ...
    writer["transport"].throttle.add(MAILBOXES[2])
    faults.arm(script(limiter._pause), reply)
    handle(handler, message(scenario, 2))
    # ... and renewing the slots in flight (the renewer thread; it renews while a request
    # is out, so the fault waits for one).
    faults.arm(script(limiter._renew), reply)
    writer["transport"].delay = 0.2
    n = 3
    while faults.pending() and n < 20:
        handle(handler, message(scenario, n))
        n += 1
    writer["transport"].delay = 0.0
    assert faults.pending() == 0 and len(faults.hits) == 4
    assert writer["renewer"].is_alive()
    # Every loop goes on: more tasks, every mailbox, all written once.
    for k in range(n, n + 8):
        handle(handler, message(scenario, k))
    assert_healthy_and_done(writer, scenario, n + 8)


def test_a_redis_refusing_writes_for_seconds_mid_sync_loses_and_duplicates_nothing(tmp_path):
    """The real fault on a Redis of the test's own: ``maxmemory 1`` under ``noeviction`` for
    2 s while tasks are handled (OOM inside the scripts, the pipelines and plain commands)."""
    from common.redis_store import connect_redis
    from services.event_writer.mailbox_limits import GraphLimitKeys
    from tests.chaos.nodes import RedisServer

    server = RedisServer(tmp_path / "redis", appendfsync="no")
    server.start()
    client = connect_redis(server.url)
    stop = threading.Event()
    try:
        keys = Keys("oom")
        graph = FakeGraph(MAILBOXES)
        heartbeats = Heartbeats()
        limiter = MailboxLimiter(client, GraphLimitKeys("t", "app"), server.url)
        dispatcher = GraphDispatcher(
            Transport(graph), limiter, linger_seconds=0.002, heartbeats=heartbeats
        ).start()
        limiter.keep_slots(stop, heartbeats=heartbeats)
        store = TaskStore(client, keys, server.url)
        handler = TaskChangedHandler(
            store=store,
            submit=dispatcher.submit,
            publish_transfer=lambda m: None,
            lease_wait_seconds=0.2,
            graph_answer_timeout=5.0,
        )
        for n in range(4):
            handle(handler, message("oom", n))
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", "1")
        results, refusals = {}, []

        def work(n):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    handler.handle(message("oom", n))
                    results[n] = "done"
                    return
                except RetryableError as exc:
                    refusals.append(str(exc))
                    time.sleep(0.1)  # the retry queue's delay, shortened
                except Exception as exc:  # noqa: BLE001 - reported below
                    results[n] = exc
                    return

        threads = [threading.Thread(target=work, args=(n,), daemon=True) for n in range(4, 24)]
        for thread in threads:
            thread.start()
        time.sleep(2.0)
        client.config_set("maxmemory", "0")
        for thread in threads:
            thread.join(40)
        assert results == {n: "done" for n in range(4, 24)}
        assert any("OOM" in r for r in refusals)  # the fault was felt, as a retryable error
        events = [e for box in graph.events.values() for e in box.values()]
        task_keys = [
            p["value"]
            for e in events
            for p in e["singleValueExtendedProperties"]
            if "/" in p["value"]
        ]
        assert len(task_keys) == 24 and len(set(task_keys)) == 24  # every task's event, once
        assert all(check() for check in heartbeats.checks().values())
        assert list(client.scan_iter(match=keys.writer_lease("*"))) == []
        dispatcher.close()
    finally:
        stop.set()
        client.close()
        server.close()
