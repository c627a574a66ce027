"""The ledger process: consumes ``transfer.succeeded`` and allocates endpoints."""

from __future__ import annotations

import threading

from common.consumer import Delivery
from common.errors import BadMessage
from common.logging import get_logger
from common.messages import TransferSucceeded, decode
from common.settings import Settings
from services.ledger.endpoints import EndpointLedger
from services.runtime import open_infrastructure

log = get_logger(__name__)


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
        log.info(
            "endpoint allocated" if allocated else "task already holds an endpoint",
            task_id=str(transfer.task_id),
            project_id=str(transfer.project_id),
            transferred_at=transfer.transferred_at.isoformat(),
        )


def run_ledger(settings: Settings, stop: threading.Event) -> None:
    infra = open_infrastructure(settings, "ledger", stop)
    ledger = EndpointLedger(infra.redis, infra.keys, infra.redis_url)
    handler = TransferHandler(scenario=settings.scenario, ledger=ledger)
    try:
        infra.consumer(infra.topology.transfers, handler, concurrency=4).run(stop)
    finally:
        infra.close()
