"""The writer's loops on the real Redis answering error replies (issue 11, item 1).

An acceptance run with Redis refusing writes for 12 s did not hit the window, so the faults are
put into the loops directly: the next command of a kind is replaced by an EVAL of
``redis.error_reply``, so the real Redis answers the error and redis-py parses it as it would
``OOM``, ``READONLY`` or ``BUSY`` from a full, failed-over or busy server. After each fault the
writer must go on writing events, its loops must report fresh heartbeats, and no task lease
may be left held.
"""

import asyncio
import threading
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
from tests.unit.fakes import FakeGraph, Recorder

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
MAILBOXES = [f"user{i}@contoso.com" for i in range(4)]
OOM = "OOM command not allowed when used memory > 'maxmemory'."
READONLY = "READONLY You can't write against a read only replica."
BUSY = "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."


class ErrorReplies:
    """Arms the real Redis to answer the next matching command of ``client`` (the writer's
    asyncio client) with an error."""

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

        async def refuse(reply):
            await original_execute("EVAL", "return redis.error_reply(ARGV[1])", 0, reply)

        async def execute_command(*args, **options):
            reply = reply_for(args)
            if reply is not None:
                await refuse(reply)
            return await original_execute(*args, **options)

        def pipeline(*args, **kwargs):
            pipe = original_pipeline(*args, **kwargs)
            original = pipe.execute

            async def execute(*a, **k):
                for queued in pipe.command_stack:
                    reply = reply_for(queued[0])
                    if reply is not None:
                        await pipe.reset()
                        await refuse(reply)
                return await original(*a, **k)

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
    """FakeGraph behind the dispatcher's transport port."""

    def __init__(self, graph):
        self.graph, self.throttle = graph, set()
        self.delay = 0.0  # seconds each request is in flight

    async def send(self, request):
        await asyncio.sleep(self.delay)
        if request.mailbox in self.throttle:
            self.throttle.discard(request.mailbox)
            return GraphResult(429, {}, {"retry-after": "0.05"})
        return self.graph.answer(request)

    async def send_batch(self, requests):
        return [await self.send(r) for r in requests]


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


class Writer:
    """The writer's parts on one event loop (the test's), as service.py puts them together."""

    def __init__(self, client, keys, limit_keys, redis_url, *, lease_wait):
        self.graph = FakeGraph(MAILBOXES)
        self.transport = Transport(self.graph)
        self.limiter = MailboxLimiter(client, limit_keys, redis_url)
        self.heartbeats = Heartbeats()
        self.dispatcher = GraphDispatcher(
            self.transport,
            self.limiter,
            linger_seconds=0.002,
            max_sends=2,
            heartbeats=self.heartbeats,
        ).start()
        self.stop = asyncio.Event()
        self.renewer = asyncio.ensure_future(
            self.limiter.keep_slots(self.stop, heartbeats=self.heartbeats)
        )
        self.handler = TaskChangedHandler(
            store=TaskStore(client, keys, redis_url),
            submit=self.dispatcher.submit,
            publish_transfer=Recorder(),
            lease_wait_seconds=lease_wait,
            graph_answer_timeout=5.0,
        )

    async def close(self):
        self.stop.set()
        await self.renewer
        await self.dispatcher.close()


@pytest.fixture
def writer(async_redis, redis_client, redis_url, scenario, graph_keys, loop_runner, monkeypatch):
    monkeypatch.setattr(mailbox_limits, "RENEW_SECONDS", 0.05)
    keys = Keys(scenario)
    faults = ErrorReplies(async_redis)

    async def make():
        return Writer(async_redis, keys, graph_keys, redis_url, lease_wait=0.5)

    made = loop_runner.run(make())
    made.faults, made.redis, made.keys, made.run = faults, redis_client, keys, loop_runner.run
    yield made
    loop_runner.run(made.close())


async def handle_retrying(handler, task, outcome, *, pause=0.0, attempts=5):
    """Handle ``task`` like the consumer would (a retryable failure retried)."""
    for _ in range(attempts):
        try:
            await handler.handle(task)
            outcome["ok"] = True
            return
        except RetryableError as exc:
            outcome["retried"] = outcome.get("retried", []) + [str(exc)]
            await asyncio.sleep(pause)  # the retry queue's delay, shortened
        except Exception as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc
            return


def handle(writer, task, within=15.0):
    """Handle ``task``; a writer that hangs fails the test instead of hanging it."""
    outcome = {}
    try:
        writer.run(asyncio.wait_for(handle_retrying(writer.handler, task, outcome), within))
    except TimeoutError:
        raise AssertionError(
            f"the writer hangs: task {task.task_id} not done in {within} s"
        ) from None
    assert outcome.get("ok"), outcome
    return outcome


def assert_healthy_and_done(writer, count):
    checks = writer.heartbeats.checks()
    assert all(check() for check in checks.values()), checks
    assert {"graph-dispatcher", "graph-senders", "graph-slot-renewer"} <= set(checks)
    events = [e for box in writer.graph.events.values() for e in box.values()]
    assert len(events) == count  # every task once
    leases = list(writer.redis.scan_iter(match=writer.keys.writer_lease("*")))
    assert leases == []


@pytest.mark.parametrize("reply", [OOM, READONLY, BUSY], ids=["oom", "readonly", "busy"])
def test_an_error_reply_in_any_loop_leaves_the_writer_working(writer, scenario, reply):
    faults, limiter = writer.faults, writer.limiter
    # The slot request of the dispatcher (a Lua script) ...
    faults.arm(script(limiter._acquire), reply)
    handle(writer, message(scenario, 0))
    # ... giving slots back after a send (a script for every mailbox) ...
    faults.arm(script(limiter._release), reply)
    handle(writer, message(scenario, 1))
    # ... sharing a 429's pause with the other replicas ...
    writer.transport.throttle.add(MAILBOXES[2])
    faults.arm(script(limiter._pause), reply)
    handle(writer, message(scenario, 2))
    # ... and renewing the slots in flight (the renewer loop; it renews while a request is
    # out, so the fault waits for one).
    faults.arm(script(limiter._renew), reply)
    writer.transport.delay = 0.2
    n = 3
    while faults.pending() and n < 20:
        handle(writer, message(scenario, n))
        n += 1
    writer.transport.delay = 0.0
    assert faults.pending() == 0 and len(faults.hits) == 4
    assert not writer.renewer.done()
    # Every loop goes on: more tasks, every mailbox, all written once.
    for k in range(n, n + 8):
        handle(writer, message(scenario, k))
    assert_healthy_and_done(writer, n + 8)


def test_a_redis_refusing_writes_for_seconds_mid_sync_loses_and_duplicates_nothing(tmp_path):
    """The real fault on a Redis of the test's own: ``maxmemory 1`` under ``noeviction`` for
    2 s while tasks are handled (OOM inside the scripts, the pipelines and plain commands)."""
    from common.redis_store import connect_redis, connect_redis_async
    from services.event_writer.mailbox_limits import GraphLimitKeys
    from tests.chaos.nodes import RedisServer

    server = RedisServer(tmp_path / "redis", appendfsync="no")
    server.start()
    admin = connect_redis(server.url)
    keys = Keys("oom")

    async def scenario():
        client = connect_redis_async(server.url)
        writer = Writer(client, keys, GraphLimitKeys("t", "app"), server.url, lease_wait=0.2)
        try:
            for n in range(4):
                outcome = {}
                await handle_retrying(writer.handler, message("oom", n), outcome)
                assert outcome.get("ok"), outcome
            admin.config_set("maxmemory-policy", "noeviction")
            admin.config_set("maxmemory", "1")
            outcomes = {n: {} for n in range(4, 24)}
            work = asyncio.gather(
                *(
                    handle_retrying(
                        writer.handler, message("oom", n), outcomes[n], pause=0.1, attempts=300
                    )
                    for n in outcomes
                )
            )
            await asyncio.sleep(2.0)
            admin.config_set("maxmemory", "0")
            await asyncio.wait_for(work, 40)
            assert all(check() for check in writer.heartbeats.checks().values())
            return writer, outcomes
        finally:
            await writer.close()
            await client.aclose()

    try:
        writer, outcomes = asyncio.run(scenario())
        assert all(outcome.get("ok") for outcome in outcomes.values()), outcomes
        refusals = [r for outcome in outcomes.values() for r in outcome.get("retried", [])]
        assert any("OOM" in r for r in refusals)  # the fault was felt, as a retryable error
        events = [e for box in writer.graph.events.values() for e in box.values()]
        task_keys = [
            p["value"]
            for e in events
            for p in e["singleValueExtendedProperties"]
            if "/" in p["value"]
        ]
        assert len(task_keys) == 24 and len(set(task_keys)) == 24  # every task's event, once
        assert list(admin.scan_iter(match=keys.writer_lease("*"))) == []
    finally:
        admin.close()
        server.close()
