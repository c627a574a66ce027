"""The ledger process: consumes ``transfer.succeeded`` and allocates endpoints."""

from __future__ import annotations

import threading

from common.consumer import Consumer, Delivery
from common.errors import BadMessage
from common.logging import get_logger
from common.messages import TransferSucceeded, decode
from common.rabbit import RabbitConnector, ThreadLocalPublisher
from common.redis_store import Keys, connect_redis
from common.settings import Settings
from common.topology import topology_for
from services.ledger.endpoints import EndpointLedger
from services.runtime import wait_for_redis

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
    topology = topology_for(settings.scenario)
    connector = RabbitConnector(
        settings.amqp_url.get_secret_value(), connection_name=f"pwasync-ledger-{settings.scenario}"
    )
    publisher = ThreadLocalPublisher(connector, topology)
    redis_url = settings.redis_url.get_secret_value()
    redis_client = connect_redis(redis_url)
    wait_for_redis(redis_client, redis_url, stop)
    ledger = EndpointLedger(redis_client, Keys(settings.scenario), redis_url)
    consumer = Consumer(
        connector=connector,
        topology=topology,
        queue=topology.transfers,
        handler=TransferHandler(scenario=settings.scenario, ledger=ledger),
        publisher=publisher,
        concurrency=4,
    )
    try:
        consumer.run(stop)
    finally:
        publisher.close()
        redis_client.close()
