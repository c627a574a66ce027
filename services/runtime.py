"""What every long-running service shares: signals, waiting for Redis, the exit code.

A service runs in the foreground until SIGTERM or SIGINT. The signal handler only sets an
event; the service's own loop notices it, stops taking work, finishes what is in flight and
returns, and the process exits 0.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
import structlog
from pydantic import BaseModel

from common import metrics
from common.consumer import Consumer, Handler
from common.errors import ConfigError
from common.health import HealthServer
from common.logging import get_logger
from common.messages import encode
from common.pipelined_publisher import PipelinedPublisher
from common.rabbit import MessagePublisher, RabbitConnector, ThreadLocalPublisher
from common.redis_store import REDIS_ERRORS, Keys, connect_redis, redis_address
from common.settings import Settings
from common.topology import Topology, WorkQueue, topology_for

log = get_logger(__name__)


def install_stop_handlers(stop: threading.Event) -> None:
    def handle(signum: int, _frame: object) -> None:
        if not stop.is_set():
            log.info("stop requested; finishing in-flight work", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def wait_for_redis(client: redis.Redis, url: str, stop: threading.Event) -> None:
    """Block until Redis answers PING (containers may start before it), or until stopped."""
    delay = 1.0
    while not stop.is_set():
        try:
            client.ping()
            return
        except REDIS_ERRORS as exc:
            log.warning(
                "waiting for Redis",
                address=redis_address(url),
                error=exc.__class__.__name__,
                retry_in_seconds=delay,
            )
            stop.wait(delay)
            delay = min(delay * 2, 30.0)


@dataclass
class Infrastructure:
    """The broker and Redis a service works with, opened together and closed together, and
    the health endpoints that report on them."""

    topology: Topology
    connector: RabbitConnector
    publisher: MessagePublisher
    redis: redis.Redis
    redis_url: str
    keys: Keys
    consumers: list[Consumer] = field(default_factory=list)
    health: HealthServer | None = None

    def consumer(self, queue: WorkQueue, handler: Handler, *, concurrency: int) -> Consumer:
        consumer = Consumer(
            connector=self.connector,
            topology=self.topology,
            queue=queue,
            handler=handler,
            publisher=self.publisher,
            concurrency=concurrency,
        )
        self.consumers.append(consumer)
        return consumer

    def serve_health(self, port: int) -> None:
        """Serve /healthz, /readyz and /metrics on ``port`` (0: do not serve)."""
        if not port:
            return
        try:
            self.health = HealthServer(
                port,
                liveness={"consumers": lambda: all(c.alive() for c in self.consumers)},
                readiness={
                    "broker": lambda: (
                        bool(self.consumers) and all(c.connected.is_set() for c in self.consumers)
                    ),
                    "redis": lambda: bool(self.redis.ping()),
                },
            ).start()
        except OSError as exc:
            raise ConfigError(
                f"PWASYNC_HTTP_PORT: cannot listen on port {port} ({exc.strerror})"
            ) from None

    def publish(self, routing_key: str, message: BaseModel, *, message_id: str | None = None):
        """Publish (confirmed) with the correlation id of the message being handled."""
        correlation_id = structlog.contextvars.get_contextvars().get("correlation_id")
        return self.publisher.publish(
            routing_key, encode(message), message_id=message_id, correlation_id=correlation_id
        )

    def close(self) -> None:
        if self.health is not None:
            self.health.stop()
        self.publisher.close()
        self.redis.close()


def open_infrastructure(
    settings: Settings, service: str, stop: threading.Event, *, pipelined: bool = False
) -> Infrastructure:
    """Connect to the scenario's broker and Redis; waits for Redis (containers start in any
    order). The broker connection is made lazily and retried by the consumer and publishers."""
    topology = topology_for(settings.scenario)
    connector = RabbitConnector(
        settings.amqp_url.get_secret_value(),
        connection_name=f"pwasync-{service}-{settings.scenario}",
    )
    redis_url = settings.redis_url.get_secret_value()
    client = connect_redis(redis_url)
    infra = Infrastructure(
        topology=topology,
        connector=connector,
        # A connection per publishing thread, or (a writer's hundreds of handler threads) one
        # connection whose I/O thread sends for all of them without a round trip each.
        publisher=(
            PipelinedPublisher(connector, topology)
            if pipelined
            else ThreadLocalPublisher(connector, topology)
        ),
        redis=client,
        redis_url=redis_url,
        keys=Keys(settings.scenario),
    )
    metrics.ENDPOINT_LIMIT.set(settings.endpoint_limit)  # usage against it on the dashboard
    # Probes answer while the service waits for its dependencies: alive, not ready.
    infra.serve_health(settings.http_port)
    wait_for_redis(client, redis_url, stop)
    return infra


def run_service(name: str, body: Callable[[threading.Event], None]) -> int:
    """Run ``body(stop)`` with signal handling; 0 when it returns after a stop request."""
    stop = threading.Event()
    install_stop_handlers(stop)
    log.info("service starting", service=name)
    body(stop)
    log.info("service stopped", service=name)
    return 0
