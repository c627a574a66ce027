"""The poller's scheduler loop: a claimed tick is published, retried with a bounded backoff
until it is, and never published twice."""

import threading
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from common.redis_store import ServiceUnavailable
from services.poller.service import Scheduler


class RecordingStop(threading.Event):
    """A stop event that never sleeps: it records each wait and stops after ``limit`` waits."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.waits: list[float] = []
        self._limit = limit

    def wait(self, timeout=None):
        self.waits.append(timeout)
        if len(self.waits) >= self._limit:
            self.set()
        return self.is_set()


class OneTick:
    """Due once, just now; then nothing is due (the loop waits for the stop event)."""

    def __init__(self) -> None:
        self.due = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
        self.calls = 0

    def next_run(self, now, tz):
        self.calls += 1
        return self.due if self.calls == 1 else None

    def describe(self):
        return "every 1 minute"


class Coordinator:
    def __init__(self, claim_failures: int = 0) -> None:
        self.claims: list[datetime] = []
        self._claim_failures = claim_failures

    def claim_tick(self, due, replica):
        self.claims.append(due)
        if len(self.claims) <= self._claim_failures:
            raise ServiceUnavailable("cannot reach Redis")
        return len(self.claims) == self._claim_failures + 1

    def orphaned(self):
        return False


class Publisher:
    def __init__(self, failures: int) -> None:
        self.attempts: list[dict] = []
        self.published: list[dict] = []
        self._failures = failures

    def publish(self, routing_key, body, **kwargs):
        self.attempts.append(kwargs)
        if len(self.attempts) <= self._failures:
            raise ConnectionError("broker unreachable")
        self.published.append(kwargs)
        return "id"


def scheduler(publisher, coordinator):
    settings = SimpleNamespace(parsed_schedule=OneTick(), schedule_zone=UTC, scenario="s")
    return Scheduler(settings, publisher, coordinator)


def test_a_claimed_tick_whose_publish_fails_is_retried_until_published_once():
    publisher, coordinator = Publisher(failures=3), Coordinator()
    stop = RecordingStop(limit=4)  # three backoffs, then the wait for the next tick
    scheduler(publisher, coordinator).run(stop)
    assert len(coordinator.claims) == 1
    assert len(publisher.attempts) == 4
    assert len(publisher.published) == 1
    # Every attempt is the same message, so a broker that did take a "failed" one sees a repeat.
    assert len({a["correlation_id"] for a in publisher.attempts}) == 1
    assert len({a["message_id"] for a in publisher.attempts}) == 1
    assert stop.waits[:3] == [1.0, 2.0, 4.0]


def test_the_publish_retry_backs_off_to_a_bound_and_ends_on_stop():
    publisher = Publisher(failures=10**6)
    stop = RecordingStop(limit=8)
    scheduler(publisher, Coordinator()).run(stop)
    assert publisher.published == []
    assert len(publisher.attempts) == 8
    assert stop.waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_a_tick_whose_claim_fails_is_claimed_again_not_dropped():
    publisher, coordinator = Publisher(failures=0), Coordinator(claim_failures=2)
    stop = RecordingStop(limit=3)
    scheduler(publisher, coordinator).run(stop)
    assert len(coordinator.claims) == 3
    assert len({c for c in coordinator.claims}) == 1
    assert len(publisher.published) == 1
    assert stop.waits[:2] == [1.0, 2.0]
