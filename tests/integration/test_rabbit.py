"""The RabbitMQ edge on the real broker: topology, confirmed publishing, the consumer's policy."""

import socket
import threading
import time
import uuid

import pika
import pytest

from common.consumer import (
    ATTEMPT_HEADER,
    DEAD_REASON_HEADER,
    SOURCE_QUEUE_HEADER,
    Consumer,
    Delivery,
)
from common.errors import (
    BadMessage,
    Contended,
    RetryableError,
    ServiceUnavailable,
    UnroutableMessage,
)
from common.pipelined_publisher import PipelinedPublisher
from common.rabbit import Publisher, RabbitConnector, ThreadLocalPublisher
from common.topology import topology_for

pytestmark = pytest.mark.integration


def get_one(amqp_url, queue, timeout=10.0):
    """Fetch one message from a queue with basic_get (acking it), waiting up to ``timeout``."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            method, properties, body = channel.basic_get(queue, auto_ack=True)
            if method is not None:
                return properties, body
            time.sleep(0.1)
        return None
    finally:
        connection.close()


def depth(amqp_url, queue):
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        return connection.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        connection.close()


def test_a_confirmed_message_arrives_persistent_with_its_ids(amqp_url, scenario):
    topology = topology_for(scenario)
    publisher = Publisher(RabbitConnector(amqp_url, connection_name="test"), topology)
    try:
        message_id = publisher.publish(
            topology.task_changes.routing_key, b'{"a": 1}', correlation_id="corr-1"
        )
    finally:
        publisher.close()
    properties, body = get_one(amqp_url, topology.task_changes.name)
    assert body == b'{"a": 1}'
    assert properties.message_id == message_id
    assert properties.correlation_id == "corr-1"
    assert properties.delivery_mode == 2
    assert properties.content_type == "application/json"


def test_publishing_to_an_unbound_routing_key_fails_loudly(amqp_url, scenario):
    publisher = Publisher(RabbitConnector(amqp_url, connection_name="test"), topology_for(scenario))
    try:
        with pytest.raises(UnroutableMessage, match="no queue is bound"):
            publisher.publish(f"{scenario}.nobody.listens", b"{}")
    finally:
        publisher.close()


class Harness:
    """Runs a Consumer on a thread with a scripted handler."""

    def __init__(self, amqp_url, scenario, handler, publisher=ThreadLocalPublisher, **kwargs):
        self.topology = topology_for(scenario)
        self.connector = RabbitConnector(amqp_url, connection_name="test")
        self.publisher = publisher(self.connector, self.topology)
        self.stop = threading.Event()
        self.consumer = Consumer(
            connector=self.connector,
            topology=self.topology,
            queue=self.topology.transfers,
            handler=handler,
            publisher=self.publisher,
            **kwargs,
        )
        self.thread = threading.Thread(target=self.consumer.run, args=(self.stop,), daemon=True)

    def __enter__(self):
        self.thread.start()
        assert self.consumer.connected.wait(10)
        return self

    def send(self, body, **kwargs):
        return self.publisher.publish(self.topology.transfers.routing_key, body, **kwargs)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(15)
        self.publisher.close()
        assert not self.thread.is_alive()


def test_success_is_acked_once(amqp_url, scenario):
    seen = []
    with Harness(amqp_url, scenario, seen.append) as harness:
        harness.send(b"{}", correlation_id="c")
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
    assert [d.correlation_id for d in seen] == ["c"]
    queue = topology_for(scenario).transfers
    assert depth(amqp_url, queue.name) == 0
    assert depth(amqp_url, queue.dead_letter_queue) == 0


# The writer settles through the PipelinedPublisher, the other services through thread-local ones.
SETTLING_PUBLISHERS = pytest.mark.parametrize(
    "publisher", [ThreadLocalPublisher, PipelinedPublisher]
)


@SETTLING_PUBLISHERS
def test_a_permanent_failure_is_dead_lettered_with_its_reason(amqp_url, scenario, publisher):
    def handler(delivery: Delivery):
        raise BadMessage("body does not fit TransferSucceeded: task_id: Field required")

    with Harness(amqp_url, scenario, handler, publisher) as harness:
        message_id = harness.send(b'{"x": 1}')
        dead = get_one(amqp_url, harness.topology.transfers.dead_letter_queue)
    assert dead is not None
    properties, body = dead
    assert body == b'{"x": 1}' and properties.message_id == message_id
    assert properties.headers[DEAD_REASON_HEADER] == (
        "BadMessage: body does not fit TransferSucceeded: task_id: Field required"
    )
    assert properties.headers[SOURCE_QUEUE_HEADER] == harness.topology.transfers.name
    assert depth(amqp_url, harness.topology.transfers.name) == 0


@SETTLING_PUBLISHERS
def test_a_retryable_failure_comes_back_after_the_delay_then_succeeds(
    amqp_url, scenario, publisher
):
    attempts = []

    def handler(delivery: Delivery):
        attempts.append((delivery.attempt, time.monotonic()))
        if len(attempts) == 1:
            raise RetryableError("Graph timed out")

    with Harness(amqp_url, scenario, handler, publisher) as harness:
        harness.send(b"{}")
        deadline = time.monotonic() + 20
        while len(attempts) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert [a for a, _ in attempts] == [1, 2]
    waited = attempts[1][1] - attempts[0][1]
    assert waited >= 1.5, waited  # the first tier is 2 s: no hot loop
    assert depth(amqp_url, topology_for(scenario).transfers.dead_letter_queue) == 0


def test_contention_is_retried_without_using_up_the_attempts(amqp_url, scenario):
    attempts = []

    def handler(delivery: Delivery):
        attempts.append(delivery.attempt)
        if len(attempts) < 3:
            raise Contended("another writer is working on this task", retry_after=0.5)

    with Harness(amqp_url, scenario, handler, max_attempts=2) as harness:
        harness.send(b"{}")
        deadline = time.monotonic() + 20
        while len(attempts) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert attempts == [1, 1, 1]  # never counted, so never dead-lettered at max_attempts=2
    assert depth(amqp_url, topology_for(scenario).transfers.dead_letter_queue) == 0


def test_attempts_are_bounded_then_the_message_is_dead(amqp_url, scenario):
    attempts = []

    def handler(delivery: Delivery):
        attempts.append(delivery.attempt)
        raise RetryableError("still down")

    with Harness(amqp_url, scenario, handler, max_attempts=2) as harness:
        harness.send(b"{}")
        dead = get_one(amqp_url, harness.topology.transfers.dead_letter_queue, timeout=20)
    assert attempts == [1, 2]
    properties, _ = dead
    assert properties.headers[DEAD_REASON_HEADER].startswith("gave up after 2 attempts")
    assert properties.headers[ATTEMPT_HEADER] == 2


def test_stop_finishes_in_flight_work_and_acks_it(amqp_url, scenario):
    started, finished = threading.Event(), []

    def slow(delivery: Delivery):
        started.set()
        time.sleep(1.5)
        finished.append(delivery.message_id)

    harness = Harness(amqp_url, scenario, slow)
    with harness:
        message_id = harness.send(b"{}")
        assert started.wait(10)
        # leaving the block sets stop while the handler is still sleeping
    assert finished == [message_id]
    assert depth(amqp_url, harness.topology.transfers.name) == 0


def test_topology_declaration_is_idempotent_across_processes(amqp_url, scenario):
    topology = topology_for(scenario)
    for _ in range(2):
        publisher = Publisher(RabbitConnector(amqp_url, connection_name="t"), topology)
        publisher.publish(topology.transfers.routing_key, str(uuid.uuid4()).encode())
        publisher.close()
    assert depth(amqp_url, topology.transfers.name) == 2


def test_a_peer_that_never_completes_the_handshake_is_unavailable_not_a_crash():
    # A node booting (or failing to) accepts the socket and never answers the AMQP header.
    # pika raises its connection workflow's own timeout for it, outside AMQPError; untranslated
    # it would end a service's reconnect loop (the consumer retries ServiceUnavailable only).
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    accepted = []
    thread = threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True)
    thread.start()
    port = server.getsockname()[1]
    connector = RabbitConnector(
        f"amqp://guest:guest@127.0.0.1:{port}/%2F", connection_name="t", handshake_timeout=1.0
    )
    started = time.monotonic()
    try:
        with pytest.raises(ServiceUnavailable, match=f"cannot reach RabbitMQ at 127.0.0.1:{port}"):
            connector.connect()
    finally:
        server.close()
        for conn, _ in accepted:
            conn.close()
    assert accepted, "the peer never saw the connection"
    assert time.monotonic() - started < 10


class FailingSettlements(ThreadLocalPublisher):
    """A publisher whose first ``failures`` publishes into a retry or dead-letter queue fail
    as they do under a broker resource alarm (never confirmed)."""

    failures = 3

    def __init__(self, connector, topology):
        super().__init__(connector, topology)
        self.refused = 0

    def error(self):
        from common.errors import PublishNotConfirmed

        return PublishNotConfirmed("RabbitMQ did not confirm (resource alarm)")

    def publish(self, routing_key, body, **kwargs):
        settling = ".retry." in routing_key or routing_key.endswith(".dead")
        if settling and self.refused < self.failures:
            self.refused += 1
            raise self.error()
        return super().publish(routing_key, body, **kwargs)


class BrokenSettlement(FailingSettlements):
    """The copy's publish fails once in a way nobody foresaw (not a PublishError)."""

    failures = 1

    def error(self):
        return RuntimeError("an unforeseen failure")


def test_a_settlement_that_cannot_be_published_is_held_and_retried_never_requeued(
    amqp_url, scenario
):
    # Issue 11 item 6: requeueing at once redelivers at once, so under an alarm a healthy
    # message loops (each loop a handler run and a delivery counted) until the limit drops it.
    runs = []

    def handler(delivery: Delivery):
        runs.append(delivery.redelivered)
        raise RetryableError("Graph timed out")

    with Harness(amqp_url, scenario, handler, FailingSettlements) as harness:
        harness.send(b"{}")
        queue = harness.topology.transfers
        retried = get_one(amqp_url, queue.retry_queue(2), timeout=20)
        assert harness.publisher.refused == FailingSettlements.failures
    assert retried is not None
    assert retried[0].headers[ATTEMPT_HEADER] == 2
    assert runs == [False]  # handled once; the copy's publish was retried, not the delivery
    assert depth(amqp_url, queue.name) == 0


def test_a_queue_an_earlier_version_declared_with_other_arguments_keeps_working(amqp_url, scenario):
    """Issue 11 item 15: redeclaring with other arguments fails with PRECONDITION_FAILED,
    which the consumer took for a lost connection and retried forever."""
    topology = topology_for(scenario)
    queue = topology.transfers
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    connection.channel().queue_declare(
        queue.name,
        durable=True,
        arguments={"x-queue-type": "quorum", "x-delivery-limit": 5, "x-overflow": "drop-head"},
    )
    connection.close()
    seen = []
    with Harness(amqp_url, scenario, seen.append) as harness:
        harness.send(b"{}")
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
    assert len(seen) == 1


def test_a_declaration_the_broker_refuses_stops_the_consumer_with_one_clear_error(
    amqp_url, scenario
):
    """A 406 that no retry can fix (our exchange exists with another type) is a ConfigError
    (exit 2), not a reconnect loop."""
    from dataclasses import replace

    from common.errors import ConfigError

    exchange = f"pwasync-{scenario}"
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    connection.channel().exchange_declare(exchange, exchange_type="direct")
    connection.close()
    topology = replace(topology_for(scenario), exchange=exchange)
    connector = RabbitConnector(amqp_url, connection_name="test")
    consumer = Consumer(
        connector=connector,
        topology=topology,
        queue=topology.transfers,
        handler=lambda delivery: None,
        publisher=ThreadLocalPublisher(connector, topology),
    )
    stop, raised = threading.Event(), []

    def run():
        try:
            consumer.run(stop)
        except ConfigError as exc:
            raised.append(str(exc))

    thread = threading.Thread(target=run, daemon=True)
    try:
        thread.start()
        thread.join(10)
        stop.set()  # a consumer that retries would still be running: end it
        thread.join(10)
        assert raised, "the consumer retried a refusal that no retry can fix"
        assert f"refused to declare exchange '{exchange}'" in raised[0]
    finally:
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        connection.channel().exchange_delete(exchange)
        connection.close()


def test_an_unforeseen_failure_while_settling_does_not_leave_the_delivery_held_silently(
    amqp_url, scenario
):
    """An exception outside the handler (here: the copy's publish) ended the worker without a
    settlement; its future was never read, so nothing was logged and, with prefetch 1, the
    consumer took nothing more until it reconnected."""
    runs = []

    def handler(delivery: Delivery):
        runs.append(delivery.redelivered)
        raise RetryableError("Graph timed out")

    with Harness(amqp_url, scenario, handler, BrokenSettlement) as harness:
        harness.send(b"{}")
        queue = harness.topology.transfers
        retried = get_one(amqp_url, queue.retry_queue(2), timeout=10)
    assert retried is not None and runs == [False]
    assert depth(amqp_url, queue.name) == 0


def test_a_cluster_url_connects_to_the_node_that_answers_and_starts_after_it_next_time(
    amqp_url,
):
    """Issue 15: nodes in turn. Nothing listens on port 1 (a stopped node); the shared broker
    is the other node. A connection skips the stopped node, and the next one starts with the
    node after the one it reached (round robin), wrapping to the first."""
    connector = RabbitConnector(
        f"amqp://guest:guest@127.0.0.1:1/%2F,{amqp_url}", connection_name="t"
    )
    connection, node = connector.open()
    try:
        assert connection.is_open and node.port != 1
    finally:
        connection.close()
    assert [p.port for p in connector.parameters()] == [1, node.port]
    connection, again = connector.open()  # the stopped node first, then the live one
    connection.close()
    assert again.port == node.port
