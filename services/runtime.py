"""What every long-running service shares: signals, waiting for Redis, the exit code.

A service runs in the foreground until SIGTERM or SIGINT. The signal handler only sets an
event; the service's own loop notices it, stops taking work, finishes what is in flight and
returns, and the process exits 0.

Each step of that stop has its own bound (the consumer's drain, the dispatcher's close, the
publisher's confirms, a Graph or PWA call's timeout), but not their sum, and a handler thread
still waiting on Graph kept the interpreter from exiting after them. ``StopDeadline`` is the
one bound over all of it: ``PWASYNC_STOP_TIMEOUT_SECONDS`` after the signal the process exits
0 whatever is left. Nothing is lost by that: an unacked delivery goes back to the broker and
its handling is idempotent, as after a SIGKILL, only sooner than the platform's one.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import redis
from pydantic import BaseModel

from common import metrics
from common.broker_policies import with_queue_policies
from common.consumer import Consumer, Handler
from common.errors import ServiceUnavailable
from common.garbage_collection import pace_for_service
from common.health import HealthServer, serve_health
from common.logging import bound_correlation_id, flush_logs, get_logger
from common.messages import encode
from common.rabbit import MessagePublisher, RabbitConnector, ThreadLocalPublisher
from common.redis_store import REDIS_ERRORS, Keys, connect_redis_for, redis_address
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


def wait_for_redis(
    connect: Callable[[], redis.Redis], url: str, stop: threading.Event, *, delay: float = 1.0
) -> redis.Redis | None:
    """A client once Redis answers PING (containers may start before it), or None if stopped
    first. ``connect`` is tried again too: a Redis Cluster client asks its nodes for the slot
    map when it is made, and fails then if none answers. Waits ``delay`` seconds, doubling."""
    while not stop.is_set():
        client = None
        try:
            client = connect()
            client.ping()
            return client
        except (*REDIS_ERRORS, ServiceUnavailable) as exc:
            if client is not None:
                client.close()  # the next try makes a client of its own
            log.warning(
                "waiting for Redis",
                address=redis_address(url),
                error=exc.__class__.__name__,
                retry_in_seconds=delay,
            )
            stop.wait(delay)
            delay = min(delay * 2, 30.0)
    return None


class Consuming(Protocol):
    """What the health endpoints ask of a consumer (threaded or asyncio)."""

    connected: threading.Event

    def alive(self, max_silence: float = 60.0) -> bool: ...


@dataclass
class Infrastructure:
    """The broker and Redis a service works with, opened together and closed together, and
    the health endpoints that report on them."""

    topology: Topology
    connector: RabbitConnector
    publisher: MessagePublisher
    # None only inside open_infrastructure, until Redis first answers.
    redis: redis.Redis | None
    redis_url: str
    keys: Keys
    consumers: list[Consuming] = field(default_factory=list)
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
        self.health = serve_health(
            port,
            liveness={"consumers": lambda: all(c.alive() for c in self.consumers)},
            readiness={
                "broker": lambda: (
                    bool(self.consumers) and all(c.connected.is_set() for c in self.consumers)
                ),
                "redis": lambda: self.redis is not None and bool(self.redis.ping()),
            },
        )

    def publish(self, routing_key: str, message: BaseModel, *, message_id: str | None = None):
        """Publish (confirmed) with the correlation id of the message being handled."""
        correlation_id = bound_correlation_id()
        return self.publisher.publish(
            routing_key, encode(message), message_id=message_id, correlation_id=correlation_id
        )

    def close(self) -> None:
        if self.health is not None:
            self.health.stop()
        self.publisher.close()
        if self.redis is not None:
            self.redis.close()


def service_topology(settings: Settings) -> Topology:
    """The scenario's topology, its queue settings applied as policies where the management
    API is configured (``common.broker_policies``)."""
    management_url = settings.rabbitmq_management_url
    return with_queue_policies(
        topology_for(settings.scenario),
        management_url=management_url.get_secret_value() if management_url else None,
        amqp_url=settings.amqp_url.get_secret_value(),
        ca_bundle=settings.ca_bundle,
    )


def open_infrastructure(settings: Settings, service: str, stop: threading.Event) -> Infrastructure:
    """Connect to the scenario's broker and Redis; waits for Redis (containers start in any
    order). The broker connection is made lazily and retried by the consumer and publishers."""
    topology = service_topology(settings)
    connector = RabbitConnector(
        settings.amqp_url.get_secret_value(),
        connection_name=f"pwasync-{service}-{settings.scenario}",
    )
    redis_url = settings.redis_url.get_secret_value()
    infra = Infrastructure(
        topology=topology,
        connector=connector,
        # A connection per publishing thread, opened on its first publish (the writer, on
        # its event loop, publishes through an AsyncPublisher of its own instead).
        publisher=ThreadLocalPublisher(connector, topology),
        redis=None,
        redis_url=redis_url,
        keys=Keys(settings.scenario),
    )
    metrics.ENDPOINT_LIMIT.set(settings.endpoint_limit)  # usage against it on the dashboard
    # Probes answer while the service waits for its dependencies: alive, not ready.
    infra.serve_health(settings.http_port)
    connected = wait_for_redis(lambda: connect_redis_for(settings), redis_url, stop)
    # Stopped before Redis answered: a client all the same (one server or Sentinel: made
    # without a connection; a cluster that never answered fails here), for a service that
    # builds its parts before it looks at ``stop``.
    infra.redis = connected or connect_redis_for(settings)
    return infra


class StopDeadline:
    """Ends the process ``seconds`` after ``stop`` is set, if it has not exited by then.

    A daemon thread, armed until the process is gone: it also cuts short the interpreter's
    own exit, which joins every handler thread still blocked in a call. ``exit`` is
    ``os._exit`` (no atexit handlers, no thread joins); tests pass their own."""

    def __init__(
        self,
        stop: threading.Event,
        seconds: float,
        service: str,
        *,
        exit: Callable[[int], None] = os._exit,
    ) -> None:
        self._stop, self._seconds, self._service, self._exit = stop, seconds, service, exit
        self._thread = threading.Thread(target=self._watch, name="stop-deadline", daemon=True)

    def start(self) -> StopDeadline:
        self._thread.start()
        return self

    def _watch(self) -> None:
        self._stop.wait()
        time.sleep(self._seconds)
        log.error(
            "stop timeout reached; exiting with work unfinished (the broker redelivers it)",
            service=self._service,
            stop_timeout_seconds=self._seconds,
            threads_left=[t.name for t in threading.enumerate() if not t.daemon],
        )
        flush_logs()
        self._exit(0)


def run_service(
    name: str, body: Callable[[threading.Event], None], *, stop_timeout: float = 25.0
) -> int:
    """Run ``body(stop)`` with signal handling; 0 when it returns after a stop request, and
    0 at the latest ``stop_timeout`` seconds after the request (``StopDeadline``)."""
    stop = threading.Event()
    install_stop_handlers(stop)
    StopDeadline(stop, stop_timeout, name).start()
    pace_for_service()
    log.info("service starting", service=name)
    body(stop)
    log.info("service stopped", service=name)
    return 0
