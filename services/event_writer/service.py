"""The writer process: consumes ``task.changed`` and writes Outlook events through Graph."""

from __future__ import annotations

import threading

import structlog

from common.consumer import Consumer
from common.http import new_http_client
from common.identity import GraphAppTokens
from common.logging import get_logger
from common.messages import TransferSucceeded, encode
from common.rabbit import RabbitConnector, ThreadLocalPublisher
from common.redis_store import Keys, connect_redis
from common.settings import Settings
from common.topology import routing_key_transfer_succeeded, topology_for
from services.event_writer.event_map import EventMap
from services.event_writer.graph import GraphCalendar
from services.event_writer.handler import TaskChangedHandler
from services.runtime import wait_for_redis

log = get_logger(__name__)


def run_writer(settings: Settings, stop: threading.Event) -> None:
    settings.require_graph()
    topology = topology_for(settings.scenario)
    connector = RabbitConnector(
        settings.amqp_url.get_secret_value(), connection_name=f"pwasync-writer-{settings.scenario}"
    )
    publisher = ThreadLocalPublisher(connector, topology)
    redis_url = settings.redis_url.get_secret_value()
    redis_client = connect_redis(redis_url)
    wait_for_redis(redis_client, redis_url, stop)

    concurrency = settings.writer_concurrency
    http = new_http_client(ca_bundle=settings.ca_bundle, max_connections=concurrency * 2)
    calendar = GraphCalendar(http, settings.graph_url, GraphAppTokens(settings, http), stop=stop)
    routing_key = routing_key_transfer_succeeded(settings.scenario)

    def publish_transfer(message: TransferSucceeded) -> None:
        publisher.publish(
            routing_key,
            encode(message),
            correlation_id=structlog.contextvars.get_contextvars().get("correlation_id"),
        )

    handler = TaskChangedHandler(
        calendar=calendar,
        event_map=EventMap(redis_client, Keys(settings.scenario), redis_url),
        publish_transfer=publish_transfer,
    )
    consumer = Consumer(
        connector=connector,
        topology=topology,
        queue=topology.task_changes,
        handler=handler,
        publisher=publisher,
        concurrency=concurrency,
    )
    log.info("writer starting", concurrency=concurrency, graph=settings.graph_url)
    try:
        consumer.run(stop)
    finally:
        publisher.close()
        http.close()
        redis_client.close()
