"""The dispatcher under faults of its limiter (issue 11, items 1 and 7): whatever the limiter
raises, and wherever (asking for slots, giving them back, sharing a pause), the dispatcher
fails the requests it owes, backs off, and goes on answering later ones; and its table of
mailboxes holds only the mailboxes with work."""

import asyncio
import threading
import time

import pytest
import redis.exceptions

from common.errors import RetryableError, ServiceUnavailable
from common.health import Heartbeats
from services.event_writer import graph_protocol as gp
from services.event_writer.graph_protocol import GraphResult
from tests.unit.test_dispatcher import Limiter, Running, Transport

#: What redis-py raises for Redis's answer to a write under ``maxmemory`` with ``noeviction``;
#: a RuntimeError stands for any other bug in a limiter.
OOM = redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")


class FaultyLimiter(Limiter):
    """The in-memory limiter, with the next ``faults[operation]`` calls raising."""

    def __init__(self):
        super().__init__()
        self.faults = {"acquire": [], "release": [], "pause": []}
        self.calls = {"acquire": 0, "release": 0, "pause": 0}

    def _maybe_fail(self, operation):
        with self.lock:
            self.calls[operation] += 1
            if self.faults[operation]:
                raise self.faults[operation].pop(0)

    async def acquire(self, wanted, released=None):
        self._maybe_fail("acquire")
        return await super().acquire(wanted, released)

    async def release(self, tokens):
        self._maybe_fail("release")
        await super().release(tokens)

    async def pause(self, mailbox, seconds):
        self._maybe_fail("pause")
        await super().pause(mailbox, seconds)


@pytest.fixture
def heartbeats():
    return Heartbeats()


@pytest.fixture
def parts(heartbeats):
    transport, limiter = Transport(), FaultyLimiter()
    dispatcher = Running(
        transport,
        limiter,
        linger_seconds=0.005,
        max_wait_seconds=1.0,
        poll_seconds=0.005,
        max_sends=1,  # one send at a time: a send that never frees its place stops everything
        heartbeats=heartbeats,
    ).start()
    yield transport, limiter, dispatcher
    dispatcher.close()


def create(mailbox, n):
    return gp.create(mailbox, {"n": n})


@pytest.mark.parametrize("fault", [OOM, RuntimeError("a bug")], ids=["oom", "bug"])
def test_a_failed_slot_request_fails_what_it_was_for_and_the_dispatcher_goes_on(parts, fault):
    _, limiter, dispatcher = parts
    limiter.faults["acquire"] = [fault]
    first = dispatcher.submit(create("a@x.com", 0))
    with pytest.raises(RetryableError):
        first.result(timeout=5)
    later = dispatcher.submit(create("a@x.com", 1))
    assert later.result(timeout=5).body["id"] == "a@x.com:1"


@pytest.mark.parametrize("fault", [OOM, RuntimeError("a bug")], ids=["oom", "bug"])
def test_slots_that_cannot_be_given_back_do_not_stop_the_sender(parts, fault):
    _, limiter, dispatcher = parts
    limiter.faults["release"] = [fault]
    assert dispatcher.submit(create("a@x.com", 0)).result(timeout=5).ok
    # The sender freed its place and the slot (its lease in Redis ends by itself).
    results = [dispatcher.submit(create("a@x.com", n)) for n in range(1, 6)]
    assert all(f.result(timeout=5).ok for f in results)


@pytest.mark.parametrize("fault", [OOM, RuntimeError("a bug")], ids=["oom", "bug"])
def test_a_pause_that_cannot_be_shared_still_pauses_here_and_retries(parts, fault):
    transport, limiter, dispatcher = parts
    limiter.faults["pause"] = [fault]
    transport.script["slow@x.com"] = [GraphResult(429, {}, {"retry-after": "0.01"})]
    assert dispatcher.submit(create("slow@x.com", 0)).result(timeout=5).ok
    assert dispatcher.submit(create("other@x.com", 1)).result(timeout=5).ok


def test_a_transport_that_raises_anything_fails_only_its_requests(parts):
    transport, _, dispatcher = parts
    calls = []

    async def broken(request):
        calls.append(request)
        if len(calls) == 1:
            raise RuntimeError("a bug in the transport")
        return GraphResult(201, {"id": "ok"})

    transport.send = broken
    with pytest.raises(RuntimeError):
        dispatcher.submit(create("a@x.com", 0)).result(timeout=5)
    assert dispatcher.submit(create("a@x.com", 1)).result(timeout=5).ok


def test_redis_refusing_for_a_while_is_not_a_hot_loop(parts):
    _, limiter, dispatcher = parts
    limiter.faults["acquire"] = [ServiceUnavailable("cannot reach Redis")] * 1000
    stop = threading.Event()

    def keep_submitting():  # handlers retrying their messages as fast as they can
        while not stop.is_set():
            dispatcher.submit(create("a@x.com", 0)).exception(timeout=5)

    thread = threading.Thread(target=keep_submitting)
    thread.start()
    time.sleep(1.0)
    stop.set()
    thread.join()
    # Backing off: a few dozen attempts a second at most, not thousands.
    assert limiter.calls["acquire"] < 60


def test_every_loop_of_the_dispatcher_reports_its_heartbeat(parts, heartbeats):
    transport, limiter, dispatcher = parts
    checks = heartbeats.checks()
    assert {"graph-dispatcher", "graph-senders"} <= set(checks)
    assert all(check() for check in checks.values())
    limiter.faults["release"] = [OOM]
    limiter.faults["acquire"] = [RuntimeError("a bug")]
    dispatcher.submit(create("a@x.com", 0)).exception(timeout=5)
    assert dispatcher.submit(create("a@x.com", 1)).result(timeout=5).ok
    assert all(check() for check in heartbeats.checks().values())
    dispatcher.close()
    assert heartbeats.checks() == {}  # stopped on purpose: no longer reported


def test_a_sender_stuck_in_one_send_turns_its_heartbeat_stale(heartbeats):
    release = threading.Event()
    transport = Transport()

    async def stuck(request):
        await asyncio.to_thread(release.wait, 10)
        return GraphResult(201, {"id": "late"})

    transport.send = stuck
    dispatcher = Running(
        transport, Limiter(), linger_seconds=0.001, heartbeats=heartbeats, max_send_seconds=0.2
    ).start()
    try:
        future = dispatcher.submit(create("a@x.com", 0))
        time.sleep(0.4)
        assert heartbeats.checks()["graph-senders"]() is False
        release.set()
        assert future.result(timeout=5).ok
        assert heartbeats.checks()["graph-senders"]() is True
    finally:
        dispatcher.close()


def test_idle_mailboxes_leave_the_table(parts):
    _, _, dispatcher = parts
    futures = [dispatcher.submit(create(f"m{i}@x.com", i)) for i in range(200)]
    assert all(f.result(timeout=10).ok for f in futures)
    deadline = time.monotonic() + 5
    while dispatcher.mailboxes_known() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert dispatcher.mailboxes_known() == 0
