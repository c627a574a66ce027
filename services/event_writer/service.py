"""The writer process: consumes ``task.changed`` and writes Outlook events through Graph."""

from __future__ import annotations

import threading

from common.http import new_http_client
from common.identity import GraphAppTokens
from common.logging import get_logger
from common.messages import TransferSucceeded
from common.settings import Settings
from common.topology import routing_key_transfer_succeeded
from services.event_writer.event_map import EventMap
from services.event_writer.graph import GraphCalendar
from services.event_writer.handler import TaskChangedHandler
from services.runtime import open_infrastructure

log = get_logger(__name__)


def run_writer(settings: Settings, stop: threading.Event) -> None:
    settings.require_graph()
    infra = open_infrastructure(settings, "writer", stop)
    concurrency = settings.writer_concurrency
    http = new_http_client(ca_bundle=settings.ca_bundle, max_connections=concurrency * 2)
    calendar = GraphCalendar(http, settings.graph_url, GraphAppTokens(settings, http), stop=stop)
    routing_key = routing_key_transfer_succeeded(settings.scenario)

    def publish_transfer(message: TransferSucceeded) -> None:
        infra.publish(routing_key, message)

    handler = TaskChangedHandler(
        calendar=calendar,
        event_map=EventMap(infra.redis, infra.keys, infra.redis_url),
        publish_transfer=publish_transfer,
    )
    log.info("writer starting", concurrency=concurrency, graph=settings.graph_url)
    try:
        infra.consumer(infra.topology.task_changes, handler, concurrency=concurrency).run(stop)
    finally:
        infra.close()
        http.close()
