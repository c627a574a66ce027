"""Each consumer reports its queue's and its dead-letter queue's depth, and what it holds."""

import threading
import time

import pika
import pytest

from common import metrics
from common.consumer import Consumer
from common.rabbit import RabbitConnector, ThreadLocalPublisher
from common.topology import topology_for

pytestmark = pytest.mark.integration


def _gauge(gauge, queue: str) -> float:
    return gauge.labels(queue)._value.get()


def _wait_for(condition, seconds=10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_a_consumer_samples_the_depth_of_its_queue_and_dead_letters(amqp_url, scenario):
    topology = topology_for(scenario)
    queue = topology.transfers
    connector = RabbitConnector(amqp_url, connection_name="test")
    publisher = ThreadLocalPublisher(connector, topology)
    release = threading.Event()
    stop = threading.Event()
    consumer = Consumer(
        connector=connector,
        topology=topology,
        queue=queue,
        handler=lambda _delivery: release.wait(10),
        publisher=publisher,
        concurrency=2,
        depth_sample_seconds=0.2,
    )
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert consumer.connected.wait(10)
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        channel = connection.channel()
        channel.confirm_delivery()  # in the queue before the gauge is awaited
        for _ in range(3):  # dead letters, as the broker or a consumer leaves them
            channel.basic_publish("", queue.dead_letter_queue, b"{}")
        connection.close()
        for _ in range(5):  # two held by the handlers (concurrency 2), three waiting
            publisher.publish(queue.routing_key, b"{}")
        assert _wait_for(lambda: _gauge(metrics.QUEUE_MESSAGES, queue.dead_letter_queue) == 3)
        assert _wait_for(lambda: _gauge(metrics.MESSAGES_IN_FLIGHT, queue.name) == 2)
        assert _wait_for(lambda: _gauge(metrics.QUEUE_MESSAGES, queue.name) == 3)
        release.set()
        assert _wait_for(lambda: _gauge(metrics.QUEUE_MESSAGES, queue.name) == 0)
        assert _wait_for(lambda: _gauge(metrics.MESSAGES_IN_FLIGHT, queue.name) == 0)
    finally:
        release.set()
        stop.set()
        thread.join(15)
        publisher.close()
