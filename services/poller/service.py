"""The poller process: consumes ``sync.requested``, runs one poll at a time per scenario, and
publishes the scheduled requests.

Every run, scheduled or manual, goes through the scenario's ``sync-requested`` queue (prefetch
one). A delivery is only queued in Redis and acked; each replica's run loop then competes for
the run lease and runs what is queued (``coordination``), so one poll runs at a time per
scenario, requests arriving meanwhile become one more run, not one run each, and no run holds
a delivery (a run may take longer than RabbitMQ's ``consumer_timeout``).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial

import structlog

from common.ack_policy import DEFAULT_MAX_ATTEMPTS, DeadLetter, Retry, decide
from common.batch_publisher import BatchPublisher, Outgoing
from common.consumer import ROUTING_KEY_HEADER, Delivery, dead_letter_headers
from common.errors import Stopping
from common.health import HEARTBEATS
from common.http import new_http_client
from common.logging import bound_correlation_id, get_logger
from common.mailboxes import MailboxPolicy
from common.messages import SyncRequested, TaskChanged, decode, encode
from common.rabbit import MessagePublisher, ThreadLocalPublisher
from common.settings import Settings
from common.topology import ROUTING_KEY_SYNC_REQUESTED, WorkQueue, routing_key_task_changed
from services.poller.connection import token_store
from services.poller.coordination import QueuedRequest, RunCoordinator, merge_requests
from services.poller.deletion_guard import DeletionGuard
from services.poller.observed import observe_poller_state
from services.poller.pwa_time import to_pwa_wall_clock
from services.poller.sources import open_plan_source, require_source
from services.poller.state import PollerState
from services.poller.sync import SyncRunner
from services.runtime import open_infrastructure

log = get_logger(__name__)

#: How often each replica's run loop looks for queued requests without a run (requests that
#: another replica queued just as the last run ended, or that a dead replica left behind).
RUN_CHECK_SECONDS = 10.0
#: How long the scheduler sleeps at most before it computes the next tick again.
SCHEDULE_WAIT_SECONDS = 60.0

#: Backoff of a scheduled tick whose claim or publish failed: doubling from the first, capped.
TICK_RETRY_FIRST_SECONDS = 1.0
TICK_RETRY_MAX_SECONDS = 30.0

#: How long a stopping poller waits for its run loop and scheduler.
STOP_JOIN_SECONDS = 5.0

DeadLetterRequests = Callable[[list[QueuedRequest], str], None]


class SyncRequestHandler:
    """Turns ``sync.requested`` deliveries into queued requests: the delivery is acked once the
    request is kept in Redis, and the run loop runs it."""

    def __init__(
        self, *, scenario: str, coordinator: RunCoordinator, wake: Callable[[], None]
    ) -> None:
        self._scenario = scenario
        self._coordinator = coordinator
        self._wake = wake

    def __call__(self, delivery: Delivery) -> None:
        request = decode(delivery.body, SyncRequested)
        if request.scenario != self._scenario:
            log.info("sync request is for another scenario; ignored", requested=request.scenario)
            return
        self._coordinator.enqueue(QueuedRequest(request, delivery.correlation_id))
        log.info("sync request queued for the next run")
        self._wake()


class RunLoop:
    """Runs the queued requests whenever this replica gets the run lease, one run at a time.

    A failed run keeps its requests on the processing list and is retried with the ack policy's
    backoff and attempt limit (``decide``), holding the lease meanwhile so that requests arriving
    during the wait join the retry; a run that cannot succeed (a permanent error, or the attempts
    used up) has its requests dead-lettered, as a delivery's would be. A run cut short by a stop
    or a lost lease leaves them there for the next holder.
    """

    def __init__(
        self,
        *,
        runner: SyncRunner,
        coordinator: RunCoordinator,
        lease_lost: threading.Event,
        queue: WorkQueue,
        dead_letter: DeadLetterRequests,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        check_seconds: float = RUN_CHECK_SECONDS,
    ) -> None:
        self._runner = runner
        self._coordinator = coordinator
        self._lease_lost = lease_lost
        self._queue = queue
        self._dead_letter = dead_letter
        self._max_attempts = max_attempts
        self._check_seconds = check_seconds
        self._wake = threading.Event()

    def wake(self) -> None:
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            try:
                self.run_once(stop)
            except Exception as exc:  # noqa: BLE001 - the loop survives; the work stays queued
                log.error("the run loop failed; trying again shortly", error=str(exc))
            if stop.is_set():
                return
            self._wake.wait(self._check_seconds)  # a stopping poller wakes it too

    def run_once(self, stop: threading.Event) -> None:
        """Run what is queued if this replica gets the lease; return when it is given back."""
        if not self._coordinator.has_work():
            return
        owner = self._coordinator.try_lease()
        if owner is None:
            return  # another replica runs; it takes what is pending before it lets go
        try:
            with self._coordinator.kept_alive(owner, self._lease_lost):
                self._run_while_queued(owner, stop)
        finally:
            # A no-op once ``finish`` gave it back (the token is checked); otherwise the
            # processing list stays for the next holder.
            with contextlib.suppress(Exception):
                self._coordinator.release(owner)

    def _run_while_queued(self, owner: str, stop: threading.Event) -> None:
        attempt = 1
        while not stop.is_set():
            batch = self._coordinator.take(owner)
            if batch is None:
                log.error("the run lease was lost before the run; another replica runs")
                return
            try:
                self._run_batch(batch)
            except Stopping as exc:  # stopping, or the lease was lost
                log.info("run stopped; its requests stay queued for the next run", why=str(exc))
                return
            except Exception as exc:  # noqa: BLE001 - decided like a failed delivery
                decision = decide(
                    exc, attempt=attempt, queue=self._queue, max_attempts=self._max_attempts
                )
                if isinstance(decision, Retry):
                    log.warning(
                        "sync run failed; retrying with the requests kept",
                        attempt=attempt,
                        retry_in_seconds=decision.delay_seconds,
                        reason=decision.reason,
                    )
                    attempt += 1 if decision.counts else 0
                    if stop.wait(decision.delay_seconds):
                        return
                    continue
                assert isinstance(decision, DeadLetter)
                self._dead_letter(batch, decision.reason)
            attempt = 1
            if self._coordinator.finish(owner):
                return

    def _run_batch(self, batch: list[QueuedRequest]) -> None:
        for request, correlation_ids in merge_requests(batch):
            correlation_id = correlation_ids[0] if correlation_ids else None
            # The run happens outside the request's delivery: bind its correlation id here, so
            # the run's log lines and the task changes it publishes (and so the writers' and
            # the ledger's lines) carry it.
            with structlog.contextvars.bound_contextvars(correlation_id=correlation_id):
                self._runner.run(
                    request, correlation_id=correlation_id, coalesced=correlation_ids[1:]
                )


class Scheduler:
    """Publishes a ``sync.requested`` at each scheduled time (once across replicas)."""

    def __init__(
        self,
        settings: Settings,
        publisher: ThreadLocalPublisher,
        coordinator: RunCoordinator,
    ) -> None:
        self._schedule = settings.parsed_schedule
        self._zone = settings.schedule_zone
        self._scenario = settings.scenario
        self._publisher = publisher
        self._coordinator = coordinator
        self._replica = f"{socket.gethostname()}/{uuid.uuid4().hex[:8]}"

    def run(self, stop: threading.Event) -> None:
        # Beats every few seconds however far the next tick is; an exception that ends this
        # thread leaves the heartbeat registered, so /healthz turns red.
        self._heartbeat = HEARTBEATS.register("scheduler", max_silence=120.0)
        self._run(stop)
        self._heartbeat.close()

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._heartbeat.beat()
            due = self._schedule.next_run(datetime.now(UTC), self._zone)
            if due is not None:
                log.info(
                    "next scheduled sync",
                    at=due.isoformat(),
                    at_utc=due.astimezone(UTC).isoformat(),
                    schedule=self._schedule.describe(),
                )
            if not self._wait_until(due, stop):
                return
            if due is not None:
                self._run_tick(due, stop)

    def _run_tick(self, due: datetime, stop: threading.Event) -> None:
        """Claim the tick and, if ours, publish it: each step retried with a bounded backoff
        until it succeeds or the scheduler stops, so a claimed tick is not dropped. Every attempt
        publishes the same message (ids fixed per tick), and ticks that fall due meanwhile are
        covered by this one run."""
        message_id = f"schedule:{due.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
        correlation_id = str(uuid.uuid4())
        claimed = False
        delay = TICK_RETRY_FIRST_SECONDS
        while True:
            try:
                if not claimed:
                    if not self._coordinator.claim_tick(due, self._replica):
                        return
                    claimed = True
                self._publisher.publish(
                    ROUTING_KEY_SYNC_REQUESTED,
                    encode(self._request("schedule")),
                    message_id=message_id,
                    correlation_id=correlation_id,
                )
                return
            except Exception as exc:  # noqa: BLE001 - retried below until it works or we stop
                log.error(
                    "could not publish the scheduled sync request; retrying"
                    if claimed
                    else "could not claim the scheduled tick; retrying",
                    at=due.isoformat(),
                    retry_in_seconds=delay,
                    error=str(exc),
                )
            if stop.wait(delay):
                return
            self._heartbeat.beat()
            delay = min(delay * 2, TICK_RETRY_MAX_SECONDS)

    def _wait_until(self, due: datetime | None, stop: threading.Event) -> bool:
        """Sleep until ``due`` (forever when None); False when stopped."""
        while True:
            remaining = (due - datetime.now(UTC)).total_seconds() if due else SCHEDULE_WAIT_SECONDS
            if due is not None and remaining <= 0:
                return True
            if stop.wait(min(SCHEDULE_WAIT_SECONDS, remaining)):
                return False
            self._heartbeat.beat()

    def _request(self, trigger: str) -> SyncRequested:
        return SyncRequested(
            scenario=self._scenario, trigger=trigger, requested_at=datetime.now(UTC)
        )


def run_poller(settings: Settings, stop: threading.Event) -> None:
    require_source(settings)
    infra = open_infrastructure(settings, "poller", stop)
    state = PollerState(infra.redis, infra.keys, infra.redis_url)
    observe_poller_state(state, settings.parsed_schedule)
    # Without PWASYNC_SYNC_START, "the first run's time", less the overlap that covers a PWA
    # clock running behind ours (a publish just after this start must not count as old data).
    start = settings.sync_start or datetime.now(UTC) - timedelta(
        seconds=settings.sync_overlap_seconds
    )
    in_force = state.initialize_start(to_pwa_wall_clock(start, settings.pwa_zone))
    log.info(
        "poller starting",
        sync_start=in_force.isoformat(),
        schedule=settings.schedule,
        source=settings.source,
        pwa_auth=settings.pwa_auth,
        pwa_api=settings.pwa_api,
    )
    if (
        settings.source == "project"
        and settings.pwa_auth == "oauth"
        and token_store(settings, infra.redis).load_raw() is None
    ):
        log.error("Project Online: nobody is signed in; run `pwasync connect` (runs fail until)")

    http = new_http_client(ca_bundle=settings.ca_bundle, timeout=settings.http_timeout_seconds)
    source = open_plan_source(settings, http, infra.redis, stop=stop)
    routing_key = routing_key_task_changed(settings.scenario)

    # A run's task changes go out in batches whose confirms are awaited together.
    task_publisher = BatchPublisher(infra.connector, infra.topology)

    def publish_tasks(messages: list[TaskChanged]) -> None:
        correlation_id = bound_correlation_id()
        task_publisher.publish_all(
            [
                Outgoing(
                    routing_key,
                    encode(message),
                    message_id=f"{message.task_id}@{message.revision.isoformat()}:{message.change}",
                    correlation_id=correlation_id,
                )
                for message in messages
            ]
        )

    lease_lost = threading.Event()
    runner = SyncRunner(
        scenario=settings.scenario,
        feed=source.feed,
        publish=publish_tasks,
        state=state,
        pwa_zone=settings.pwa_zone,
        task_link=source.task_link,
        should_stop=lambda: stop.is_set() or lease_lost.is_set(),
        request_counter=source.requests_made,
        mailboxes=MailboxPolicy.from_settings(settings),
        deletion_guard=DeletionGuard(
            settings.deletion_guard_percent, settings.deletion_guard_min_tasks
        ),
        parallel_reads=settings.parallel_reads,
    )
    coordinator = RunCoordinator(infra.redis, infra.keys, infra.redis_url)
    queue = infra.topology.sync_requests
    run_loop = RunLoop(
        runner=runner,
        coordinator=coordinator,
        lease_lost=lease_lost,
        queue=queue,
        dead_letter=partial(dead_letter_requests, infra.publisher, queue),
    )
    handler = SyncRequestHandler(
        scenario=settings.scenario, coordinator=coordinator, wake=run_loop.wake
    )
    threads = [
        threading.Thread(target=run_loop.run, args=(stop,), name="run-loop", daemon=True),
        threading.Thread(
            target=Scheduler(settings, infra.publisher, coordinator).run,
            args=(stop,),
            name="scheduler",
            daemon=True,
        ),
    ]
    for thread in threads:
        thread.start()
    try:
        infra.consumer(queue, handler, concurrency=1).run(stop)
    finally:
        stop.set()
        run_loop.wake()
        # A run stops between two projects; what it did not finish stays queued in Redis.
        for thread in threads:
            thread.join(timeout=STOP_JOIN_SECONDS)
        task_publisher.close()
        infra.close()
        source.close()
        http.close()


def dead_letter_requests(
    publisher: MessagePublisher, queue: WorkQueue, batch: list[QueuedRequest], reason: str
) -> None:
    """Dead-letter the requests of a run that cannot succeed, with the headers the consumer
    gives a dead-lettered delivery (``pwasync dlq replay`` sends them back)."""
    for queued in batch:
        publisher.publish(
            queue.dead_letter_queue,
            encode(queued.request),
            exchange="",
            correlation_id=queued.correlation_id,
            headers={
                **dead_letter_headers(reason, queue.name),
                ROUTING_KEY_HEADER: ROUTING_KEY_SYNC_REQUESTED,
            },
        )
    log.error("sync requests dead-lettered", reason=reason, requests=len(batch))
