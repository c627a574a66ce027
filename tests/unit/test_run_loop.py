"""The poller's flow from a delivery to a run, with fakes: a ``sync.requested`` is queued and
acked before anything runs (a run never holds a delivery, so RabbitMQ's consumer_timeout cannot
end it), queued requests go to a processing list that only a finished run clears, and the next
lease holder resumes what a stopped or dead holder left there."""

import contextlib
import threading

import pytest

from common.consumer import Delivery
from common.errors import PermanentError, RetryableError
from common.messages import SyncRequested, encode
from common.topology import topology_for
from services.poller.coordination import QueuedRequest
from services.poller.service import RunLoop, SyncRequestHandler
from services.poller.sync import SyncInterrupted

QUEUE = topology_for("s").sync_requests


class FakeCoordinator:
    """The run coordinator's contract in memory: one lease, pending and processing lists."""

    def __init__(self) -> None:
        self.lock: str | None = None
        self.pending: list[QueuedRequest] = []
        self.processing: list[QueuedRequest] = []
        self._tokens = 0

    def enqueue(self, queued):
        self.pending.append(queued)

    def has_work(self):
        return bool(self.pending or self.processing)

    def try_lease(self):
        if self.lock is not None:
            return None
        self._tokens += 1
        self.lock = f"owner-{self._tokens}"
        return self.lock

    def take(self, owner):
        if self.lock != owner:
            return None
        self.processing += self.pending
        self.pending = []
        return list(self.processing)

    def finish(self, owner):
        if self.lock != owner:
            return True
        self.processing = []
        if self.pending:
            return False
        self.lock = None
        return True

    def release(self, owner):
        if self.lock == owner:
            self.lock = None

    def kept_alive(self, owner, lost):
        return contextlib.nullcontext()


class FakeRunner:
    """Records each run; ``during`` runs inside the n-th run (0-based), ``fail`` raises there."""

    def __init__(self, during=None, fail=None) -> None:
        self.runs: list[tuple[SyncRequested, str | None, list[str]]] = []
        self._during = during or {}
        self._fail = fail or {}

    def run(self, request, *, correlation_id=None, coalesced=None):
        number = len(self.runs)
        self.runs.append((request, correlation_id, list(coalesced or [])))
        if number in self._during:
            self._during[number]()
        if number in self._fail:
            raise self._fail[number]


class RecordingStop(threading.Event):
    """A stop event that never sleeps: it records each wait."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout=None):
        self.waits.append(timeout)
        return self.is_set()


def delivery(correlation_id: str, **request) -> Delivery:
    body = encode(SyncRequested(scenario="s", **request))
    return Delivery(body, "sync.requested", None, correlation_id)


def queued(correlation_id: str, **request) -> QueuedRequest:
    return QueuedRequest(SyncRequested(scenario="s", **request), correlation_id)


def run_loop(runner, coordinator, dead_letters=None, **options):
    def dead_letter(batch, reason):
        dead_letters.append(([q.correlation_id for q in batch], reason))

    return RunLoop(
        runner=runner,
        coordinator=coordinator,
        lease_lost=threading.Event(),
        queue=QUEUE,
        dead_letter=dead_letter,
        **options,
    )


def test_a_delivery_is_acked_once_queued_and_before_any_run():
    coordinator, runner, woken = FakeCoordinator(), FakeRunner(), []
    handler = SyncRequestHandler(
        scenario="s", coordinator=coordinator, wake=lambda: woken.append(True)
    )
    handler(delivery("a", full=True))  # returning is the ack
    assert runner.runs == []
    assert coordinator.pending == [queued("a", full=True)]
    assert woken == [True]
    assert coordinator.lock is None  # the handler never takes the run lease


def test_a_request_for_another_scenario_is_not_queued():
    coordinator = FakeCoordinator()
    SyncRequestHandler(scenario="other", coordinator=coordinator, wake=lambda: None)(delivery("a"))
    assert coordinator.pending == []


def test_the_queued_requests_run_merged_then_the_lease_is_given_back():
    coordinator, runner = FakeCoordinator(), FakeRunner()
    coordinator.pending = [queued("a"), queued("b", full=True)]
    run_loop(runner, coordinator).run_once(RecordingStop())
    assert runner.runs == [(SyncRequested(scenario="s", full=True), "a", ["b"])]
    assert coordinator.lock is None and not coordinator.has_work()


def test_requests_arriving_during_a_run_coalesce_into_one_more_run():
    coordinator = FakeCoordinator()

    def arrive():
        coordinator.enqueue(queued("b"))
        coordinator.enqueue(queued("c", allow_deletions=True))

    runner = FakeRunner(during={0: arrive})
    coordinator.pending = [queued("a")]
    run_loop(runner, coordinator).run_once(RecordingStop())
    assert [(r.allow_deletions, c, more) for r, c, more in runner.runs] == [
        (False, "a", []),
        (True, "b", ["c"]),
    ]
    assert coordinator.lock is None and not coordinator.has_work()


def test_a_second_replica_does_not_run_while_the_lease_is_held():
    coordinator = FakeCoordinator()
    coordinator.lock = "the other replica"
    coordinator.pending = [queued("a")]
    runner = FakeRunner()
    run_loop(runner, coordinator).run_once(RecordingStop())
    assert runner.runs == [] and coordinator.pending == [queued("a")]


def test_a_stopped_run_leaves_its_requests_for_the_next_lease_holder():
    coordinator = FakeCoordinator()
    coordinator.pending = [queued("a", full=True), queued("b", project_ids=[])]
    stopped = FakeRunner(fail={0: SyncInterrupted("stopping: 3 of 5 projects left")})
    run_loop(stopped, coordinator).run_once(RecordingStop())
    assert coordinator.lock is None  # given back at once, not left to expire
    assert coordinator.processing == [queued("a", full=True), queued("b")]

    coordinator.enqueue(queued("c"))
    resumed = FakeRunner()
    run_loop(resumed, coordinator).run_once(RecordingStop())
    assert resumed.runs == [(SyncRequested(scenario="s", full=True), "a", ["b", "c"])]
    assert not coordinator.has_work()


def test_a_dead_holders_processing_list_runs_first_once_its_lease_expired():
    coordinator = FakeCoordinator()
    coordinator.processing = [queued("left behind", allow_deletions=True)]
    coordinator.pending = [queued("new")]
    runner = FakeRunner()
    run_loop(runner, coordinator).run_once(RecordingStop())
    [(request, first, others)] = runner.runs
    assert request.allow_deletions and (first, others) == ("left behind", ["new"])
    assert not coordinator.has_work()


def test_a_failed_run_is_retried_with_backoff_keeping_its_requests():
    coordinator = FakeCoordinator()
    coordinator.pending = [queued("a")]
    runner = FakeRunner(fail={0: RetryableError("PWA 503"), 1: RetryableError("PWA 503")})
    stop = RecordingStop()
    run_loop(runner, coordinator).run_once(stop)
    assert [c for _, c, _ in runner.runs] == ["a", "a", "a"]
    assert stop.waits == [QUEUE.retry_tiers[0], QUEUE.retry_tiers[1]]
    assert not coordinator.has_work() and coordinator.lock is None


def test_a_run_that_cannot_succeed_has_its_requests_dead_lettered_not_dropped():
    coordinator, dead = FakeCoordinator(), []
    coordinator.pending = [queued("a"), queued("b")]
    runner = FakeRunner(fail={0: PermanentError("403: the account may not read ProjectData")})
    run_loop(runner, coordinator, dead).run_once(RecordingStop())
    assert dead == [(["a", "b"], "PermanentError: 403: the account may not read ProjectData")]
    assert not coordinator.has_work() and coordinator.lock is None


def test_a_dead_letter_that_cannot_be_published_keeps_the_requests():
    coordinator = FakeCoordinator()
    coordinator.pending = [queued("a")]
    runner = FakeRunner(fail={0: PermanentError("bad")})
    loop = RunLoop(
        runner=runner,
        coordinator=coordinator,
        lease_lost=threading.Event(),
        queue=QUEUE,
        dead_letter=lambda batch, reason: (_ for _ in ()).throw(ConnectionError("broker down")),
    )
    with pytest.raises(ConnectionError):
        loop.run_once(RecordingStop())
    assert coordinator.processing == [queued("a")] and coordinator.lock is None


def test_the_run_loop_survives_any_exception_and_waits_before_it_tries_again():
    class Broken(FakeCoordinator):
        calls = 0

        def has_work(self):
            Broken.calls += 1
            if Broken.calls == 3:
                stop.set()
            raise RuntimeError("READONLY You can't write against a read only replica")

    stop = threading.Event()
    run_loop(FakeRunner(), Broken(), check_seconds=0.01).run(stop)
    assert Broken.calls == 3
