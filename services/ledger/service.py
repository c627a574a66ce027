"""The ledger process: consumes ``transfer.succeeded`` and allocates endpoints."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import redis.exceptions
import structlog

from common import metrics
from common.consumer import Delivery
from common.errors import BadMessage, Contended, RetryableError
from common.health import HEARTBEATS
from common.logging import get_logger
from common.messages import TransferSucceeded, decode_transfers
from common.settings import Settings
from common.topology import routing_key_task_changed
from services.ledger.endpoints import EndpointLedger
from services.runtime import open_infrastructure

log = get_logger(__name__)

RELEASE_INTERVAL_SECONDS = 30.0
#: A transfer waits this long for Redis per try, for as long as Redis is away.
REDIS_AWAY_RETRY_SECONDS = 10.0
#: Redis answering but not taking writes: out of memory, a replica after a failover, busy.
_REFUSALS = (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError)


class RedisAway(Contended):
    """The allocation could not be made (or made durable) because Redis is away or refusing
    writes. A transfer's only work is that allocation, so this says nothing about the message:
    it is retried without counting an attempt, for as long as it takes. Counted, it was
    dead-lettered after 8 attempts (about 21 minutes) and its task kept its events without an
    endpoint."""


class TransferHandler:
    def __init__(self, *, scenario: str, ledger: EndpointLedger) -> None:
        self._scenario = scenario
        self._ledger = ledger

    def __call__(self, delivery: Delivery) -> None:
        transfers = decode_transfers(delivery.body)
        scenario = transfers[0][0].scenario
        if scenario != self._scenario:
            # Routing keys are namespaced per scenario, so this is a producer bug: keep it.
            raise BadMessage(f"transfer of scenario {scenario!r} on this queue")
        try:
            allocated = self._ledger.allocate_many(
                [(t.task_id, t.project_id, t.transferred_at) for t, _ in transfers]
            )
        except Contended:
            raise
        except (RetryableError, *_REFUSALS) as exc:  # only Redis is behind allocate
            raise RedisAway(
                f"Redis did not take the allocation ({exc})", retry_after=REDIS_AWAY_RETRY_SECONDS
            ) from exc
        for (transfer, correlation_id), new in zip(transfers, allocated, strict=True):
            if new:
                metrics.ENDPOINTS_ALLOCATED.inc()
            _log_allocation(transfer, new, correlation_id or delivery.correlation_id)


def _log_allocation(transfer: TransferSucceeded, new: bool, correlation_id: str | None) -> None:
    """One line per transfer, with the correlation id of the run that caused it (a message of
    version 2 carries transfers of several runs)."""
    with structlog.contextvars.bound_contextvars(correlation_id=correlation_id):
        log.info(
            "endpoint allocated" if new else "task already holds an endpoint",
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
        bodies = self._ledger.release_held(
            self._limit, lambda body: self._publish(body.encode("utf-8"))
        )
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
    # Read at scrape time: right after a restart too, and the same from every replica.
    metrics.ENDPOINTS_IN_USE.set_function(metrics.reading(ledger.count_in_use))
    metrics.HELD_TASKS.set_function(metrics.reading(ledger.count_held))

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
