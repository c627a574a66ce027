"""The endpoint ledger on the real Redis: the billing rule, the limit, and concurrency.

The rule is checked against a plain model with Hypothesis over random sequences of transfers,
redeliveries, failed transfers, clock jumps (forwards and backwards) and ledger restarts.
Simulated times lie in the future of the Redis server's clock, so Redis never expires a key
that the model still considers held.
"""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from common.consumer import Delivery
from common.errors import ServiceUnavailable
from common.messages import TransferSucceeded, encode, transfers_message
from common.redis_store import Keys
from services.ledger.endpoints import RELEASE_AGAIN_AFTER, WINDOW, Claim, EndpointLedger
from services.ledger.service import HeldTaskReleaser, TransferHandler

pytestmark = pytest.mark.integration

BASE = datetime.now(UTC).replace(microsecond=0) + timedelta(days=400)
TASKS = [str(uuid.UUID(int=n)) for n in range(1, 5)]
PROJECT = str(uuid.UUID(int=99))


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class LedgerModel:
    """The rule in its plainest form: a transfer at t allocates when the task's latest window
    has ended at t (and the window it would open has not already ended now)."""

    def __init__(self) -> None:
        self.windows: dict[str, tuple[datetime, datetime]] = {}
        self.allocations: list[datetime] = []

    def transfer(self, task: str, at: datetime, now: datetime) -> bool:
        latest = self.windows.get(task)
        if latest is not None and latest[1] > at:
            return False
        if at + WINDOW <= now:
            return False
        self.windows[task] = (at, at + WINDOW)
        self.allocations.append(at)
        return True

    def in_use(self, now: datetime) -> set[str]:
        return {task for task, (start, end) in self.windows.items() if end > now}


def ledger_machine(redis_url: str):
    class LedgerMachine(RuleBasedStateMachine):
        @initialize()
        def fresh(self) -> None:
            self.client = redis.Redis.from_url(redis_url, decode_responses=True)
            self.keys = Keys(f"t-prop-{uuid.uuid4().hex[:8]}")
            self.clock = Clock(BASE)
            self.ledger = EndpointLedger(self.client, self.keys, redis_url, clock=self.clock)
            self.model = LedgerModel()
            self.last: tuple[str, datetime] | None = None

        def teardown(self) -> None:
            keys = list(self.client.scan_iter(match=self.keys.all_pattern, count=1000))
            if keys:
                self.client.delete(*keys)
            self.client.close()

        @rule(
            task=st.sampled_from(TASKS),
            # transfer times around "now": a clock that is ahead or behind, by up to 40 days
            offset_hours=st.integers(min_value=-40 * 24, max_value=40 * 24),
        )
        def transfer(self, task, offset_hours):
            at = self.clock.now + timedelta(hours=offset_hours)
            expected = self.model.transfer(task, at, self.clock.now)
            assert self.ledger.allocate(task, PROJECT, at) == expected
            self.last = (task, at)

        @rule()
        def redeliver_last(self):
            if self.last is not None:
                task, at = self.last
                assert self.ledger.allocate(task, PROJECT, at) is False
                assert self.model.transfer(task, at, self.clock.now) is False

        @rule(task=st.sampled_from(TASKS))
        def failed_transfer(self, task):
            # a failed transfer publishes nothing: the ledger never hears of it
            pass

        @rule(days=st.integers(min_value=1, max_value=45))
        def time_passes(self, days):
            self.clock.now += timedelta(days=days)

        @rule()
        def ledger_restarts(self):
            self.ledger = EndpointLedger(self.client, self.keys, redis_url, clock=self.clock)

        @invariant()
        def in_use_matches_the_model(self):
            held = {e.task_id for e in self.ledger.in_use()}
            assert held == self.model.in_use(self.clock.now)

        @invariant()
        def history_counts_every_allocation_once(self):
            window_start = (self.clock.now - timedelta(days=29)).date()
            expected: dict[str, int] = {}
            for at in self.model.allocations:
                if window_start <= at.date() <= self.clock.now.date():
                    expected[at.date().isoformat()] = expected.get(at.date().isoformat(), 0) + 1
            history = {d: n for d, n in self.ledger.history().items() if n}
            assert history == expected

    return LedgerMachine


def test_the_rule_holds_over_random_histories(redis_url):
    machine = ledger_machine(redis_url)
    machine.TestCase.settings = settings(
        max_examples=60,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    machine.TestCase().runTest()


@pytest.fixture
def ledger(redis_client, redis_url, scenario):
    return EndpointLedger(redis_client, Keys(scenario), redis_url, clock=Clock(BASE))


def released(ledger: EndpointLedger, limit: int) -> list[str]:
    """The bodies one release round publishes (to a broker that confirms everything)."""
    return ledger.release_held(limit, lambda body: None)


def payload(task: str) -> str:
    return json.dumps({"task_id": str(task), "project_id": str(PROJECT)})


def test_one_tasks_endpoint_and_hold_are_read_alone(ledger):
    clock = ledger._clock
    a, b = str(uuid.uuid4()), "Xm3kPl4nn3rT4sk"  # a GUID's text and an opaque id
    named = json.dumps(
        {"task_id": str(b), "project_id": str(PROJECT), "task_name": "Site survey",
         "project_name": "Berlin"}
    )  # fmt: skip
    assert ledger.endpoint_of(a) is None and ledger.held_of(b) is None
    assert ledger.claim(a, 1, payload(a)) is Claim.CLAIMED
    assert ledger.claim(b, 1, named) is Claim.HELD
    assert ledger.allocate(a, PROJECT, clock.now)
    endpoint = ledger.endpoint_of(a)
    assert endpoint is not None and endpoint.expires_at == clock.now + WINDOW
    assert endpoint.project_id == PROJECT and ledger.endpoint_of(b) is None
    held = ledger.held_of(b)
    assert held is not None and (held.task_name, held.project_name) == ("Site survey", "Berlin")
    assert ledger.held() == [held] and ledger.held_of(a) is None
    clock.now += WINDOW
    assert ledger.endpoint_of(a) is None  # over: its key may outlive it a little


def test_the_limit_holds_tasks_back_and_releases_them_when_endpoints_expire(ledger):
    clock = ledger._clock
    a, b, c = (str(uuid.uuid4()) for _ in range(3))
    assert ledger.claim(a, 2, payload(a)) is Claim.CLAIMED
    assert ledger.claim(b, 2, payload(b)) is Claim.CLAIMED
    assert ledger.claim(c, 2, payload(c)) is Claim.HELD
    assert ledger.claim(c, 2, payload(c)) is Claim.HELD  # still held, not counted twice
    assert [h.task_id for h in ledger.held()] == [c] and ledger.count_held() == 1
    assert released(ledger, 2) == []  # no slot yet

    assert ledger.allocate(a, PROJECT, clock.now)
    assert ledger.allocate(b, PROJECT, clock.now)
    assert ledger.claim(a, 2, payload(a)) is Claim.HOLDS  # holders keep syncing at the limit

    clock.now += WINDOW + timedelta(seconds=1)
    assert released(ledger, 2) == [payload(c)]
    assert ledger.held() == [] and ledger.count_held() == 0
    assert ledger.claim(c, 2, payload(c)) is Claim.CLAIMED  # the released claim is its own


def test_raising_the_limit_releases_held_tasks(ledger):
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    assert ledger.claim(a, 1, payload(a)) is Claim.CLAIMED
    assert ledger.claim(b, 1, payload(b)) is Claim.HELD
    assert released(ledger, 1) == []
    assert released(ledger, 2) == [payload(b)]


def test_a_transfer_that_wrote_nothing_gives_its_slot_back(ledger):
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    assert ledger.claim(a, 1, payload(a)) is Claim.CLAIMED
    ledger.give_back(a)
    assert ledger.claim(b, 1, payload(b)) is Claim.CLAIMED


def test_a_claim_of_a_dead_writer_ends_with_its_lease(ledger):
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    assert ledger.claim(a, 1, payload(a)) is Claim.CLAIMED
    assert ledger.claim(b, 1, payload(b)) is Claim.HELD
    ledger._clock.now += timedelta(minutes=16)
    assert released(ledger, 1) == [payload(b)]


def test_concurrent_writers_never_exceed_the_limit(redis_url, scenario):
    """Eight writer threads claim 200 different tasks at once against a limit of 50."""
    tasks = [str(uuid.uuid4()) for _ in range(200)]
    results: dict[str, Claim] = {}
    lock = threading.Lock()
    start = threading.Barrier(8)

    def writer(mine):
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        ledger = EndpointLedger(client, Keys(scenario), redis_url, clock=Clock(BASE))
        start.wait()
        for task in mine:
            outcome = ledger.claim(task, 50, payload(task))
            if outcome is Claim.CLAIMED:
                ledger.allocate(task, PROJECT, BASE)
            with lock:
                results[task] = outcome
        client.close()

    threads = [threading.Thread(target=writer, args=(tasks[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    ledger = EndpointLedger(client, Keys(scenario), redis_url, clock=Clock(BASE))
    assert sum(1 for r in results.values() if r is Claim.CLAIMED) == 50
    assert len(ledger.in_use()) == 50
    assert len(ledger.held()) == 150
    client.close()


def test_concurrent_redeliveries_allocate_once(redis_url, scenario):
    task = str(uuid.uuid4())
    outcomes = []
    start = threading.Barrier(6)

    def ledger_replica():
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        ledger = EndpointLedger(client, Keys(scenario), redis_url, clock=Clock(BASE))
        start.wait()
        outcomes.append(ledger.allocate(task, PROJECT, BASE))
        client.close()

    threads = [threading.Thread(target=ledger_replica) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [False] * 5 + [True]


def _hold(ledger, count: int) -> list[str]:
    """``count`` tasks held back by a limit of 1 (whose slot is then given back), oldest first."""
    first = str(uuid.uuid4())
    assert ledger.claim(first, 1, payload(first)) is Claim.CLAIMED
    held = []
    for _ in range(count):
        task = str(uuid.uuid4())
        ledger._clock.now += timedelta(milliseconds=1)  # held in this order
        assert ledger.claim(task, 1, payload(task)) is Claim.HELD
        held.append(task)
    ledger.give_back(first)
    return held


class FlakyBroker:
    """Confirms every publish but the ones numbered in ``fail`` (1-based)."""

    def __init__(self, fail: set[int]) -> None:
        self.fail = fail
        self.calls = 0
        self.confirmed: list[str] = []

    def __call__(self, body: bytes) -> None:
        self.calls += 1
        if self.calls in self.fail:
            raise ServiceUnavailable("the broker did not confirm the publish")
        self.confirmed.append(json.loads(body)["task_id"])


def test_a_release_whose_publish_fails_loses_no_held_task(ledger):
    """Issue 11, item 12: body k of N not confirmed; k..N stay held and go out later."""
    b, c, d = _hold(ledger, 3)
    broker = FlakyBroker(fail={2})
    releaser = HeldTaskReleaser(ledger, 3, broker)
    with pytest.raises(ServiceUnavailable):
        releaser.release_once()
    assert broker.confirmed == [str(b)]
    assert [h.task_id for h in ledger.held()] == [c, d]  # still held, and reported

    assert releaser.release_once() == 0  # their slots stay reserved while a release may run
    ledger._clock.now += RELEASE_AGAIN_AFTER
    assert releaser.release_once() == 2
    assert broker.confirmed == [str(b), str(c), str(d)]
    assert ledger.held() == []
    assert ledger.claim(str(uuid.uuid4()), 3, payload(b)) is Claim.HELD  # the 3 slots are theirs


def test_a_release_that_could_not_record_its_publish_sends_it_again(ledger, monkeypatch):
    """Published, then Redis went away (or the ledger died): the body goes out again later,
    and the writer's ordering key drops the repeat."""
    (b,) = _hold(ledger, 1)
    broker = FlakyBroker(fail=set())

    def redis_away(*args, **kwargs):
        raise ServiceUnavailable("cannot reach Redis")

    monkeypatch.setattr(ledger, "_forget_released", redis_away)
    with pytest.raises(ServiceUnavailable):
        HeldTaskReleaser(ledger, 1, broker).release_once()
    monkeypatch.undo()
    assert [h.task_id for h in ledger.held()] == [b]
    ledger._clock.now += RELEASE_AGAIN_AFTER
    assert HeldTaskReleaser(ledger, 1, broker).release_once() == 1
    assert broker.confirmed == [str(b), str(b)]
    assert ledger.held() == []


def test_a_held_task_taken_by_a_writer_during_its_release_stays_with_the_writer(ledger):
    """A newer task.changed of a task being released: the writer's claim takes it (the slot is
    reserved for it); the release does not remove anything the writer stored later."""
    (b,) = _hold(ledger, 1)

    def writer_meanwhile(body: bytes) -> None:
        assert ledger.claim(b, 1, payload(b) + " ") is Claim.CLAIMED

    assert HeldTaskReleaser(ledger, 1, writer_meanwhile).release_once() == 1
    assert ledger.held() == []
    assert ledger.claim(str(uuid.uuid4()), 1, payload(b)) is Claim.HELD  # b still holds the slot


def test_a_batch_of_transfers_allocates_each_task_once_in_one_round_trip(ledger, scenario):
    """A version-2 message: every new task gets its endpoint, a task already holding one and a
    task twice in the batch get nothing more, and the message delivered again allocates
    nothing."""
    at = ledger._clock.now
    fresh, holder = str(uuid.uuid4()), str(uuid.uuid4())
    assert ledger.allocate(holder, PROJECT, at)
    transfers = [
        TransferSucceeded(scenario=scenario, project_id=PROJECT, task_id=t, transferred_at=at)
        for t in (fresh, holder, fresh)
    ]
    body = encode(transfers_message([(t, f"run-{i}") for i, t in enumerate(transfers)]))
    delivery = Delivery(body=body, routing_key="x", message_id=None, correlation_id=None)
    assert ledger.allocate_many([(t.task_id, PROJECT, at) for t in transfers]) == [
        True,
        False,
        False,
    ]
    TransferHandler(scenario=scenario, ledger=ledger)(delivery)  # delivered again
    assert {e.task_id for e in ledger.in_use()} == {fresh, holder}
    assert sum(ledger.history().values()) == 2
