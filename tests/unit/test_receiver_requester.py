"""The publishing loop: nothing announced is lost while the broker is away, and no spin."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from common.errors import ServiceUnavailable
from services.receiver.coalescing import PublishCoalescer
from services.receiver.requester import SyncRequester

A, B = uuid.uuid4(), uuid.uuid4()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Broker:
    def __init__(self) -> None:
        self.down = False
        self.published: list[list[uuid.UUID]] = []
        self.attempts = 0

    def publish(self, projects: list[uuid.UUID]) -> None:
        self.attempts += 1
        if self.down:
            raise ServiceUnavailable("RabbitMQ at 127.0.0.1:5672 is unreachable")
        self.published.append(projects)


@pytest.fixture
def setup():
    clock, broker = Clock(), Broker()
    return clock, broker, SyncRequester(PublishCoalescer(2.0), broker.publish, clock=clock)


def test_announced_calls_are_published_at_once_then_at_the_window_end(setup):
    clock, broker, requester = setup
    requester.announce(A, 0.0)
    requester.announce(B, 0.0)
    requester.announce(A, 0.5)
    requester.send_due()
    assert broker.published == [sorted([A, B])]
    clock.now = 0.75  # the calls paused long enough
    requester.send_due()
    assert broker.published[-1] == [A]


def test_a_failed_publish_keeps_the_request_and_waits_longer_each_time(setup):
    clock, broker, requester = setup
    broker.down = True
    requester.announce(A, 0.0)
    requester.send_due()
    assert broker.attempts == 1 and requester.failing_since == 0.0
    requester.send_due()  # within the pause: no attempt, no spin
    clock.now = 0.99
    requester.send_due()
    assert broker.attempts == 1
    clock.now = 1.0
    requester.send_due()
    assert broker.attempts == 2
    clock.now = 2.5  # the pause doubled to 2 s after the second failure
    requester.send_due()
    assert broker.attempts == 2
    broker.down = False
    clock.now = 3.0
    requester.send_due()
    assert broker.published == [[A]] and requester.failing_since is None


def test_on_stop_the_folded_calls_get_one_last_attempt(setup):
    clock, broker, requester = setup
    requester.announce(A, 0.0)
    requester.send_due()
    requester.announce(A, 0.1)  # folded into the window's trailing request, due at 0.35
    stopped = threading.Event()
    stopped.set()
    requester.run(stopped)  # stopping now: the trailing request goes out all the same
    assert broker.published == [[A], [A]]


def test_what_fails_on_stop_is_logged_by_project_not_retried(setup):
    clock, broker, requester = setup
    requester.announce(A, 0.0)
    broker.down = True
    stopped = threading.Event()
    stopped.set()
    requester.run(stopped)
    assert broker.attempts == 1 and broker.published == []


def test_a_publish_that_raises_anything_does_not_end_the_loop():
    calls = []

    def publish(projects):
        calls.append(projects)
        if len(calls) == 1:
            raise RuntimeError("a bug in the publisher")

    requester = SyncRequester(PublishCoalescer(0.0), publish)
    stop = threading.Event()
    loop = threading.Thread(target=requester.run, args=(stop,))
    loop.start()
    requester.announce(A, time.monotonic())
    try:
        deadline = threading.Event()
        for _ in range(50):
            if len(calls) >= 2:
                break
            deadline.wait(0.1)
        assert len(calls) == 2 and loop.is_alive()  # retried after its 1 s pause
    finally:
        stop.set()
        loop.join(timeout=5)


def test_the_loop_reports_its_heartbeat_while_it_runs():
    from common.health import Heartbeats

    heartbeats = Heartbeats()
    requester = SyncRequester(PublishCoalescer(2.0), Broker().publish, heartbeats=heartbeats)
    stop = threading.Event()
    loop = threading.Thread(target=requester.run, args=(stop,))
    loop.start()
    try:
        deadline = time.monotonic() + 5
        while "sync-requester" not in heartbeats.checks() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert heartbeats.checks()["sync-requester"]() is True
    finally:
        stop.set()
        loop.join(timeout=5)
    assert "sync-requester" not in heartbeats.checks()  # a stopped loop is not a dead one
