"""RabbitMQ at the edge: connections, topology declaration and confirmed publishing.

pika is used only here and in ``common/consumer.py``; callers see ``ServiceUnavailable``,
``UnroutableMessage`` and ``PublishNotConfirmed`` instead of pika's exceptions.

pika connections are not thread-safe, so a ``Publisher`` belongs to one thread;
``ThreadLocalPublisher`` hands each thread its own (as dramatiq does). The writer, whose
hundreds of handler threads each publish a ``transfer.succeeded``, uses the
``PipelinedPublisher`` (``common/pipelined_publisher.py``) instead: one connection for all.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from common.errors import (
    ConfigError,
    PublishNotConfirmed,
    ServiceUnavailable,
    UnroutableMessage,
)
from common.logging import get_logger
from common.topology import QueueSpec, Topology

log = get_logger(__name__)

#: pika errors that mean "the connection or channel is gone; a new one may work".
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.ConnectionClosed,
    pika.exceptions.ChannelWrongStateError,
    pika.exceptions.ConnectionWrongStateError,
    pika.exceptions.StreamLostError,
    pika.exceptions.ChannelClosed,
)

HEARTBEAT_SECONDS = 30


def broker_urls(amqp_url: str) -> list[str]:
    """The broker URLs of ``PWASYNC_AMQP_URL``: several, comma-separated, are the nodes of one
    cluster (interface page), kept in the order given."""
    urls = [part.strip() for part in amqp_url.split(",") if part.strip()]
    if not urls:
        raise ConfigError("PWASYNC_AMQP_URL: names no broker")
    return urls


def broker_address(amqp_url: str) -> str:
    """host:port of each broker of a URL (list), for messages (never the credentials)."""
    addresses = []
    for url in broker_urls(amqp_url):
        parts = urlsplit(url)
        default_port = 5671 if parts.scheme == "amqps" else 5672
        addresses.append(f"{parts.hostname}:{parts.port or default_port}")
    return ", ".join(addresses)


def in_turn(items: list[Any], start: int) -> list[Any]:
    """``items`` beginning at ``start`` and wrapping round: the order nodes are tried in."""
    start %= len(items)
    return items[start:] + items[:start]


class RabbitConnector:
    """Opens connections to a broker or to the nodes of a cluster, in turn, translating
    failures to ``ServiceUnavailable``.

    Nodes are taken round robin: each connection starts with the node after the one the
    previous connection of this connector went to (the first one: the first node given), and
    falls through the others when that one cannot be reached. So a connection that dropped
    comes back on another node first (a node that stopped is not tried first again), and a
    process's connections spread over the cluster. Quorum queues are on every node, so any node
    serves every queue. Shared by threads: the turn is kept under a lock.
    """

    def __init__(
        self, amqp_url: str, *, connection_name: str, handshake_timeout: float = 15.0
    ) -> None:
        self._urls = broker_urls(amqp_url)
        self.address = broker_address(amqp_url)
        self._connection_name = connection_name
        self._handshake_timeout = handshake_timeout
        self._turn = 0
        self._lock = threading.Lock()

    def node_parameters(self) -> list[pika.URLParameters]:
        """One ``URLParameters`` per node, in the order given (pika's ``BlockingConnection``
        takes such a list; an asyncio client takes the URLs of ``broker_urls``)."""
        return [self._parameters(url) for url in self._urls]

    def parameters(self) -> list[pika.URLParameters]:
        """The nodes in the order the next connection tries them (``in_turn``)."""
        with self._lock:
            start = self._turn
        return in_turn(self.node_parameters(), start)

    def _parameters(self, url: str) -> pika.URLParameters:
        params = pika.URLParameters(url)
        params.heartbeat = HEARTBEAT_SECONDS
        params.blocked_connection_timeout = 60
        params.socket_timeout = 10
        params.connection_attempts = 1
        # A peer that accepts the socket but never completes the AMQP handshake (a node still
        # booting or failing to, an overloaded one) ends the attempt after this long.
        params.stack_timeout = self._handshake_timeout
        params.client_properties = {"connection_name": self._connection_name}
        return params

    def connect(self) -> pika.BlockingConnection:
        return self.open()[0]

    def open(self) -> tuple[pika.BlockingConnection, pika.URLParameters]:
        """A connection to the first node of ``parameters`` that takes one, and its parameters
        (the pipelined publisher opens its own connection to the same node)."""
        with self._lock:
            start, self._turn = self._turn, self._turn + 1
        nodes = list(enumerate(self.node_parameters()))
        failures = []
        for index, params in in_turn(nodes, start):
            try:
                connection = pika.BlockingConnection(params)
            except pika.exceptions.ProbableAuthenticationError:
                raise ServiceUnavailable(
                    f"RabbitMQ at {params.host}:{params.port} refused the credentials of "
                    "PWASYNC_AMQP_URL"
                ) from None
            # pika raises its connection workflow's errors (a handshake timeout) outside
            # AMQPError: untranslated, they would end a service's reconnect loop, which retries
            # only ServiceUnavailable.
            except (pika.exceptions.AMQPError, AMQPConnectorException, OSError) as exc:
                failures.append(f"{params.host}:{params.port} ({exc.__class__.__name__})")
                continue
            with self._lock:
                self._turn = index + 1  # the next connection starts after this node
            if failures:
                log.warning(
                    "connected to another RabbitMQ node",
                    node=f"{params.host}:{params.port}",
                    unreachable=failures,
                )
            return connection, params
        raise ServiceUnavailable(f"cannot reach RabbitMQ at {', '.join(failures)}")


@dataclass(frozen=True)
class QueueState:
    ready: int
    consumers: int


def inspect_queues(connector: RabbitConnector, names: list[str]) -> dict[str, QueueState | None]:
    """Ready messages and consumers of each queue (None: it does not exist yet), over one
    connection. A passive declare of a missing queue closes its channel, hence one per miss."""
    connection = connector.connect()
    states: dict[str, QueueState | None] = {}
    try:
        channel = connection.channel()
        for name in names:
            try:
                result = channel.queue_declare(name, passive=True)
                states[name] = QueueState(result.method.message_count, result.method.consumer_count)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != 404:
                    raise
                states[name] = None
                channel = connection.channel()
    finally:
        if connection.is_open:
            connection.close()
    return states


def inspect_queue(connector: RabbitConnector, name: str) -> QueueState | None:
    """Ready messages and consumers of a queue; None when it does not exist (yet)."""
    return inspect_queues(connector, [name])[name]


def declare_topology(connection: pika.BlockingConnection, topology: Topology) -> None:
    """Declare the exchange, every queue that does not exist yet and every binding of the
    scenario (idempotent), on a channel of its own.

    An existing queue is left as it is: its arguments are never asserted again, so a queue
    created by an earlier version (with other arguments) keeps working instead of every start
    failing with PRECONDITION_FAILED; its settings come from our policies where its arguments do
    not override them. A declaration the broker refuses (406: the exchange exists with another
    type; 403: the user may not configure) is a ``ConfigError``: retrying cannot fix it.
    """
    channel = connection.channel()
    try:
        try:
            channel.exchange_declare(topology.exchange, exchange_type="topic", durable=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            raise _refused(f"exchange {topology.exchange!r}", exc) from None
        for spec in topology.queue_specs():
            channel = _ensure_queue(connection, channel, spec, topology.settings_by_policy)
            for routing_key in spec.bindings:
                try:
                    channel.queue_bind(spec.name, topology.exchange, routing_key=routing_key)
                except pika.exceptions.ChannelClosedByBroker as exc:
                    raise _refused(f"the binding of queue {spec.name!r}", exc) from None
    finally:
        if channel.is_open:
            with contextlib.suppress(*CONNECTION_ERRORS):
                channel.close()


def _ensure_queue(
    connection: pika.BlockingConnection,
    channel: BlockingChannel,
    spec: QueueSpec,
    settings_by_policy: bool,
) -> BlockingChannel:
    """The queue exists afterwards; returns the channel to go on with (a 404 closes one)."""
    try:
        channel.queue_declare(spec.name, passive=True)
        return channel
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 404:
            raise _refused(f"queue {spec.name!r}", exc) from None
    channel = connection.channel()
    arguments = spec.declaration_arguments(settings_by_policy=settings_by_policy)
    try:
        channel.queue_declare(spec.name, durable=True, arguments=arguments)
        return channel
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 406:
            raise _refused(f"queue {spec.name!r}", exc) from None
        refusal = exc
    # Another process created it meanwhile, with other arguments (an earlier version): keep it.
    channel = connection.channel()
    try:
        channel.queue_declare(spec.name, passive=True)
    except pika.exceptions.ChannelClosedByBroker:
        raise _refused(f"queue {spec.name!r}", refusal) from None
    return channel


def _refused(what: str, exc: pika.exceptions.ChannelClosedByBroker) -> BaseException:
    """A refusal that retrying cannot fix becomes one clear line (exit 2); others stay
    connection errors (the caller reconnects)."""
    if exc.reply_code in (403, 406):
        hint = (
            "it exists with other properties; delete it or give this scenario other names"
            if exc.reply_code == 406
            else "give the user of PWASYNC_AMQP_URL configure permission on the vhost"
        )
        return ConfigError(f"RabbitMQ refused to declare {what}: {exc.reply_text} ({hint})")
    return exc


def message_properties(
    *,
    message_id: str,
    correlation_id: str | None,
    headers: Mapping[str, Any] | None,
) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type="application/json",
        content_encoding="utf-8",
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=message_id,
        correlation_id=correlation_id,
        timestamp=int(time.time()),
        headers=dict(headers or {}),
    )


class TryAgain(Exception):
    """One publish attempt failed in a way another may not (its cause says how)."""


def unroutable(exchange: str, routing_key: str) -> UnroutableMessage:
    return UnroutableMessage(
        f"no queue is bound to {exchange or '(default exchange)'!r} "
        f"with routing key {routing_key!r}"
    )


def confirm_with_attempts(
    attempt: Callable[[], None], *, address: str, routing_key: str, attempts: int
) -> None:
    """Run ``attempt`` until it returns (the broker confirmed), at most ``attempts`` times,
    backing off between them; ``UnroutableMessage`` goes straight up."""
    last_error: BaseException | None = None
    for number in range(1, attempts + 1):
        try:
            attempt()
            return
        except TryAgain as exc:
            last_error = exc.__cause__ or exc
        if number < attempts:
            time.sleep(0.2 * 2**number)
    raise PublishNotConfirmed(
        f"RabbitMQ at {address} did not confirm a message to {routing_key!r} after {attempts} "
        f"attempts ({last_error.__class__.__name__ if last_error else 'unknown'})"
    )


class Publisher:
    """Publishes persistent, mandatory messages and waits for the broker's confirm.

    One connection of its own, opened on first use and re-opened after a failure. Belongs to
    one thread.
    """

    def __init__(self, connector: RabbitConnector, topology: Topology, *, attempts: int = 3):
        self._connector = connector
        self._topology = topology
        self._attempts = attempts
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None

    def publish(
        self,
        routing_key: str,
        body: bytes,
        *,
        exchange: str | None = None,
        message_id: str | None = None,
        correlation_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> str:
        """Publish and return the message id once the broker has confirmed the message."""
        message_id = message_id or str(uuid.uuid4())
        properties = message_properties(
            message_id=message_id, correlation_id=correlation_id, headers=headers
        )
        target = self._topology.exchange if exchange is None else exchange

        def attempt() -> None:
            try:
                channel = self._open_channel()
                channel.basic_publish(
                    target, routing_key, body, properties=properties, mandatory=True
                )
            except pika.exceptions.UnroutableError:
                raise unroutable(target, routing_key) from None
            except pika.exceptions.NackError as exc:
                raise TryAgain from exc
            except (*CONNECTION_ERRORS, ServiceUnavailable) as exc:
                self.close()
                raise TryAgain from exc

        confirm_with_attempts(
            attempt,
            address=self._connector.address,
            routing_key=routing_key,
            attempts=self._attempts,
        )
        return message_id

    def _open_channel(self) -> BlockingChannel:
        if self._channel is not None and self._channel.is_open and self._connection is not None:
            # An idle BlockingConnection only answers heartbeats when asked to process events.
            self._connection.process_data_events(time_limit=0)
            return self._channel
        self.close()
        self._connection = self._connector.connect()
        declare_topology(self._connection, self._topology)
        channel = self._connection.channel()
        channel.confirm_delivery()
        self._channel = channel
        return channel

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            # Closing a broken connection may fail; it is gone either way.
            with contextlib.suppress(Exception):
                connection.close()


class MessagePublisher(Protocol):
    """What services publish through: ``ThreadLocalPublisher`` or ``PipelinedPublisher``."""

    def publish(self, routing_key: str, body: bytes, **kwargs: Any) -> str: ...

    def close(self) -> None: ...


class ThreadLocalPublisher:
    """A ``Publisher`` per calling thread, all closed together."""

    def __init__(self, connector: RabbitConnector, topology: Topology) -> None:
        self._connector = connector
        self._topology = topology
        self._local = threading.local()
        self._all: list[Publisher] = []
        self._lock = threading.Lock()

    def _publisher(self) -> Publisher:
        publisher = getattr(self._local, "publisher", None)
        if publisher is None:
            publisher = Publisher(self._connector, self._topology)
            self._local.publisher = publisher
            with self._lock:
                self._all.append(publisher)
        return publisher

    def publish(self, routing_key: str, body: bytes, **kwargs: Any) -> str:
        return self._publisher().publish(routing_key, body, **kwargs)

    def close(self) -> None:
        """Close every thread's publisher. Call once the threads have stopped publishing."""
        with self._lock:
            publishers, self._all = self._all, []
        for publisher in publishers:
            publisher.close()
        self._local = threading.local()
