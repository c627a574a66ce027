"""The ledger process: consumes ``transfer.succeeded`` and allocates endpoints."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

from common import metrics
from common.consumer import Delivery
from common.errors import BadMessage
from common.health import HEARTBEATS
from common.logging import get_logger
from common.messages import TransferSucceeded, decode
from common.settings import Settings
from common.topology import routing_key_task_changed
from services.ledger.endpoints import EndpointLedger
from services.runtime import open_infrastructure

log = get_logger(__name__)

RELEASE_INTERVAL_SECONDS = 30.0


class TransferHandler:
    def __init__(self, *, scenario: str, ledger: EndpointLedger) -> None:
        self._scenario = scenario
        self._ledger = ledger

    def __call__(self, delivery: Delivery) -> None:
        transfer = decode(delivery.body, TransferSucceeded)
        if transfer.scenario != self._scenario:
            # Routing keys are namespaced per scenario, so this is a producer bug: keep it.
            raise BadMessage(f"transfer of scenario {transfer.scenario!r} on this queue")
        allocated = self._ledger.allocate(
            transfer.task_id, transfer.project_id, transfer.transferred_at
        )
        if allocated:
            metrics.ENDPOINTS_ALLOCATED.inc()
        metrics.ENDPOINTS_IN_USE.set(self._ledger.count_in_use())
        log.info(
            "endpoint allocated" if allocated else "task already holds an endpoint",
            task_id=str(transfer.task_id),
            project_id=str(transfer.project_id),
            transferred_at=transfer.transferred_at.isoformat(),
        )


class HeldTaskReleaser:
    """Sends held tasks back to the writers as endpoint slots free up.

    Slots free up when windows end or when the limit is raised (every process reads the same
    ``PWASYNC_ENDPOINT_LIMIT``, so a restart with a higher limit releases at once).
    """

    def __init__(self, ledger: EndpointLedger, limit: int, publish: Callable[[bytes], None]):
        self._ledger = ledger
        self._limit = limit
        self._publish = publish

    def release_once(self) -> int:
        bodies = self._ledger.release_held(self._limit)
        for body in bodies:
            self._publish(body.encode("utf-8"))
        if bodies:
            log.info("held tasks released", count=len(bodies), limit=self._limit)
        return len(bodies)

    def run(self, stop: threading.Event, interval: float = RELEASE_INTERVAL_SECONDS) -> None:
        """Every ``interval`` until ``stop``; any error is logged and the next round retries
        (the interval is long enough not to need a backoff). Beats on /healthz every round."""
        heartbeat = HEARTBEATS.register("held-releaser", max_silence=max(120.0, 4 * interval))
        while not stop.is_set():
            try:
                self.release_once()
            except Exception as exc:  # noqa: BLE001 - Redis or the broker away, or a bug
                log.warning("could not release held tasks", error=str(exc))
            heartbeat.beat()
            stop.wait(interval)
        heartbeat.close()


def run_ledger(settings: Settings, stop: threading.Event) -> None:
    infra = open_infrastructure(settings, "ledger", stop)
    ledger = EndpointLedger(infra.redis, infra.keys, infra.redis_url)
    handler = TransferHandler(scenario=settings.scenario, ledger=ledger)
    routing_key = routing_key_task_changed(settings.scenario)

    def republish(body: bytes) -> None:
        infra.publisher.publish(routing_key, body, correlation_id=str(uuid.uuid4()))

    releaser = threading.Thread(
        target=HeldTaskReleaser(ledger, settings.endpoint_limit, republish).run,
        args=(stop,),
        name="held-releaser",
        daemon=True,
    )
    if settings.endpoint_limit:
        releaser.start()
    try:
        infra.consumer(infra.topology.transfers, handler, concurrency=4).run(stop)
    finally:
        if releaser.is_alive():
            releaser.join(timeout=2)
        infra.close()
