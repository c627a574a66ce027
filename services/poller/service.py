"""The poller process: consumes ``sync.requested`` and publishes scheduled requests.

Every run, scheduled or manual, goes through the scenario's ``sync-requested`` queue, consumed
with a prefetch of one: runs never overlap inside a poller, and a run interrupted by a crash is
redelivered instead of forgotten.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

import structlog

from common.consumer import Delivery
from common.http import new_http_client
from common.identity import pwa_token_source
from common.logging import get_logger
from common.messages import SyncRequested, TaskChanged, decode, encode
from common.rabbit import ThreadLocalPublisher
from common.settings import Settings
from common.topology import ROUTING_KEY_SYNC_REQUESTED, routing_key_task_changed
from services.poller.odata import property_name
from services.poller.projectdata import ProjectDataClient
from services.poller.pwa_http import PwaHttp
from services.poller.sync import SyncRunner
from services.poller.watermark import WatermarkStore, to_pwa_wall_clock
from services.runtime import open_infrastructure

log = get_logger(__name__)


class SyncRequestHandler:
    """Turns one ``sync.requested`` delivery into one sync run of this scenario."""

    def __init__(self, *, scenario: str, runner: SyncRunner) -> None:
        self._scenario = scenario
        self._runner = runner

    def __call__(self, delivery: Delivery) -> None:
        request = decode(delivery.body, SyncRequested)
        if request.scenario != self._scenario:
            log.info("sync request is for another scenario; ignored", requested=request.scenario)
            return
        structlog.contextvars.bind_contextvars(trigger=request.trigger, full=request.full)
        log.info(
            "sync run started",
            project_ids=[str(p) for p in request.project_ids],
            task_ids=[str(t) for t in request.task_ids],
        )
        self._runner.run(request)


class Scheduler:
    """Publishes a ``sync.requested`` at each scheduled time until stopped."""

    def __init__(self, settings: Settings, publisher: ThreadLocalPublisher) -> None:
        self._schedule = settings.parsed_schedule
        self._zone = settings.schedule_zone
        self._scenario = settings.scenario
        self._publisher = publisher

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            now = datetime.now(UTC)
            due = self._schedule.next_run(now, self._zone)
            if due is None:
                return
            log.info("next scheduled sync", at=due.isoformat(), schedule=self._schedule.describe())
            if stop.wait((due - now).total_seconds()):
                return
            request = SyncRequested(
                scenario=self._scenario, trigger="schedule", requested_at=datetime.now(UTC)
            )
            try:
                self._publisher.publish(
                    ROUTING_KEY_SYNC_REQUESTED, encode(request), correlation_id=str(uuid.uuid4())
                )
            except Exception as exc:  # noqa: BLE001 - a missed tick is logged; the next one runs
                log.error("could not publish the scheduled sync request", error=str(exc))


def run_poller(settings: Settings, stop: threading.Event) -> None:
    settings.require_pwa()
    assert settings.pwa_url is not None
    infra = open_infrastructure(settings, "poller", stop)
    watermarks = WatermarkStore(infra.redis, infra.keys, infra.redis_url)
    start = settings.sync_start or datetime.now(UTC)
    in_force = watermarks.initialize(to_pwa_wall_clock(start, settings.pwa_zone))
    log.info("poller starting", watermark=in_force.isoformat(), schedule=settings.schedule)

    http = new_http_client(ca_bundle=settings.ca_bundle)
    feed = ProjectDataClient(PwaHttp(http, settings.pwa_url, pwa_token_source(settings, http)))
    routing_key = routing_key_task_changed(settings.scenario)

    def publish_task(message: TaskChanged) -> None:
        infra.publish(
            routing_key, message, message_id=f"{message.task_id}@{message.revision.isoformat()}"
        )

    runner = SyncRunner(
        scenario=settings.scenario,
        feed=feed,
        publish=publish_task,
        watermarks=watermarks,
        flag_property=property_name(settings.create_event_field),
        pwa_zone=settings.pwa_zone,
        stop=stop,
    )
    handler = SyncRequestHandler(scenario=settings.scenario, runner=runner)
    scheduler = threading.Thread(
        target=Scheduler(settings, infra.publisher).run,
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
