"""The poller process: consumes ``sync.requested``, runs one poll at a time per scenario, and
publishes the scheduled requests.

Every run, scheduled or manual, goes through the scenario's ``sync-requested`` queue (prefetch
one). Replicas compete for it; the run lease and the queue of coalesced requests in Redis
(``coordination``) make sure that one poll runs at a time per scenario and that requests
arriving meanwhile become one more run, not one run each.
"""

from __future__ import annotations

import socket
import threading
import uuid
from datetime import UTC, datetime, timedelta

from common.consumer import Delivery
from common.health import HEARTBEATS
from common.http import new_http_client
from common.logging import get_logger
from common.messages import SyncRequested, TaskChanged, decode, encode
from common.rabbit import ThreadLocalPublisher
from common.settings import Settings
from common.topology import ROUTING_KEY_SYNC_REQUESTED, routing_key_task_changed
from services.poller.connection import open_pwa, token_store
from services.poller.coordination import QueuedRequest, RunCoordinator, merge_requests
from services.poller.deletion_guard import DeletionGuard
from services.poller.pwa_api import PwaSource
from services.poller.pwa_time import to_pwa_wall_clock
from services.poller.state import PollerState
from services.poller.sync import SyncRunner
from services.runtime import open_infrastructure

log = get_logger(__name__)

#: How often each replica looks for requests queued by a replica that died holding the lease.
ORPHAN_CHECK_SECONDS = 10.0

#: Backoff of a scheduled tick whose claim or publish failed: doubling from the first, capped.
TICK_RETRY_FIRST_SECONDS = 1.0
TICK_RETRY_MAX_SECONDS = 30.0


class SyncRequestHandler:
    """Turns ``sync.requested`` deliveries into runs, one at a time per scenario."""

    def __init__(
        self,
        *,
        scenario: str,
        runner: SyncRunner,
        coordinator: RunCoordinator,
        lease_lost: threading.Event,
    ) -> None:
        self._scenario = scenario
        self._runner = runner
        self._coordinator = coordinator
        self._lease_lost = lease_lost

    def __call__(self, delivery: Delivery) -> None:
        request = decode(delivery.body, SyncRequested)
        if request.scenario != self._scenario:
            log.info("sync request is for another scenario; ignored", requested=request.scenario)
            return
        mine = QueuedRequest(request, delivery.correlation_id)
        owner = self._coordinator.try_run(mine)
        if owner is None:
            log.info("a sync run is in progress; this request joins the next run (coalesced)")
            return
        self._run_while_queued(owner, mine)

    def _run_while_queued(self, owner: str, mine: QueuedRequest) -> None:
        batch = [mine, *self._coordinator.take_queued()]
        with self._coordinator.kept_alive(owner, self._lease_lost):
            try:
                while True:
                    for request, correlation_ids in merge_requests(batch):
                        self._runner.run(
                            request,
                            correlation_id=correlation_ids[0] if correlation_ids else None,
                            coalesced=correlation_ids[1:],
                        )
                    if self._coordinator.finish_if_idle(owner):
                        return
                    batch = self._coordinator.take_queued()
            except BaseException:
                # This delivery is retried by the ack policy; the requests that joined it wait
                # in the queue again for the next run.
                self._coordinator.requeue([q for q in batch if q is not mine])
                self._coordinator.release(owner)
                raise


class Scheduler:
    """Publishes a ``sync.requested`` at each scheduled time (once across replicas), and resumes
    requests left queued by a replica that died holding the run lease."""

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
        """Sleep until ``due`` (forever when None), checking for orphans; False when stopped."""
        while True:
            remaining = (due - datetime.now(UTC)).total_seconds() if due else ORPHAN_CHECK_SECONDS
            if due is not None and remaining <= 0:
                return True
            if stop.wait(min(ORPHAN_CHECK_SECONDS, remaining)):
                return False
            self._heartbeat.beat()
            self._resume_orphans()

    def _resume_orphans(self) -> None:
        try:
            if self._coordinator.orphaned():
                log.warning("sync requests were left queued without a run; resuming them")
                self._publish("manual")
        except Exception as exc:  # noqa: BLE001 - checked again in a moment
            log.warning("could not check for queued sync requests", error=str(exc))

    def _request(self, trigger: str) -> SyncRequested:
        return SyncRequested(
            scenario=self._scenario, trigger=trigger, requested_at=datetime.now(UTC)
        )

    def _publish(self, trigger: str) -> None:
        try:
            self._publisher.publish(
                ROUTING_KEY_SYNC_REQUESTED,
                encode(self._request(trigger)),
                correlation_id=str(uuid.uuid4()),
            )
        except Exception as exc:  # noqa: BLE001 - orphans are checked again in a moment
            log.error("could not publish the sync request", trigger=trigger, error=str(exc))


def run_poller(settings: Settings, stop: threading.Event) -> None:
    settings.require_pwa()
    assert settings.pwa_url is not None
    infra = open_infrastructure(settings, "poller", stop)
    state = PollerState(infra.redis, infra.keys, infra.redis_url)
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
        pwa_auth=settings.pwa_auth,
        pwa_api=settings.pwa_api,
    )
    if settings.pwa_auth == "oauth" and token_store(settings, infra.redis).load_raw() is None:
        log.error("Project Online: nobody is signed in; run `pwasync connect` (runs fail until)")

    http = new_http_client(ca_bundle=settings.ca_bundle, timeout=settings.http_timeout_seconds)
    pwa = open_pwa(settings, http, infra.redis, stop=stop)
    routing_key = routing_key_task_changed(settings.scenario)

    def publish_task(message: TaskChanged) -> None:
        message_id = f"{message.task_id}@{message.revision.isoformat()}:{message.change}"
        infra.publish(routing_key, message, message_id=message_id)

    lease_lost = threading.Event()
    runner = SyncRunner(
        scenario=settings.scenario,
        feed=PwaSource(pwa, settings),
        publish=publish_task,
        state=state,
        pwa_zone=settings.pwa_zone,
        site_url=settings.pwa_url,
        should_stop=lambda: stop.is_set() or lease_lost.is_set(),
        request_counter=lambda: pwa.requests_made,
        deletion_guard=DeletionGuard(
            settings.deletion_guard_percent, settings.deletion_guard_min_tasks
        ),
    )
    coordinator = RunCoordinator(infra.redis, infra.keys, infra.redis_url)
    handler = SyncRequestHandler(
        scenario=settings.scenario, runner=runner, coordinator=coordinator, lease_lost=lease_lost
    )
    scheduler = threading.Thread(
        target=Scheduler(settings, infra.publisher, coordinator).run,
        args=(stop,),
        name="scheduler",
        daemon=True,
    )
    scheduler.start()
    try:
        infra.consumer(infra.topology.sync_requests, handler, concurrency=1).run(stop)
    finally:
        scheduler.join(timeout=2)
        infra.close()
        http.close()
