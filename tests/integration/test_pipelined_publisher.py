"""The writer's publisher on the real broker: confirmed, concurrent, and honest after failures."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

import pika
import pytest

from common.errors import PublishNotConfirmed, UnroutableMessage
from common.pipelined_publisher import PipelinedPublisher
from common.rabbit import RabbitConnector
from common.topology import topology_for
from tests.ports import free_port
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration


def drain_ids(amqp_url, queue):
    """The message ids in a queue, emptying it."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ids = []
    try:
        channel = connection.channel()
        while True:
            method, properties, _body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return ids
            ids.append(properties.message_id)
    finally:
        connection.close()


def through(amqp_url, port):
    parts = urlsplit(amqp_url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


@pytest.fixture
def make_publisher():
    publishers = []

    def make(url, scenario, **kwargs):
        connector = RabbitConnector(url, connection_name="test-pipelined", handshake_timeout=5)
        publisher = PipelinedPublisher(connector, topology_for(scenario), **kwargs)
        publishers.append(publisher)
        return publisher

    yield make
    for publisher in publishers:
        publisher.close(timeout=2)


def test_many_threads_publish_at_once_and_every_message_arrives_once(
    amqp_url, scenario, make_publisher
):
    topology = topology_for(scenario)
    publisher = make_publisher(amqp_url, scenario)
    key = topology.transfers.routing_key

    def publish(index):
        return publisher.publish(key, b"{}", message_id=f"m-{index}", correlation_id="c")

    with ThreadPoolExecutor(48) as pool:
        confirmed = list(pool.map(publish, range(1200)))
    assert confirmed == [f"m-{i}" for i in range(1200)]
    arrived = drain_ids(amqp_url, topology.transfers.name)
    assert sorted(arrived) == sorted(confirmed)


def test_unroutable_messages_fail_alone_while_the_others_are_confirmed(
    amqp_url, scenario, make_publisher
):
    topology = topology_for(scenario)
    publisher = make_publisher(amqp_url, scenario)

    def publish(index):
        routable = index % 3 != 0
        key = topology.transfers.routing_key if routable else f"{scenario}.nobody.listens"
        try:
            publisher.publish(key, b"{}", message_id=f"m-{index}")
        except UnroutableMessage as exc:
            return ("unroutable", str(exc))
        return ("confirmed", key)

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(publish, range(90)))
    for index, (outcome, detail) in enumerate(outcomes):
        if index % 3:
            assert outcome == "confirmed"
        else:
            assert outcome == "unroutable" and "no queue is bound" in detail
    arrived = drain_ids(amqp_url, topology.transfers.name)
    assert sorted(arrived) == sorted(f"m-{i}" for i in range(90) if i % 3)


def test_a_cut_connection_is_reopened_and_nothing_confirmed_is_lost(
    amqp_url, scenario, make_publisher
):
    parts = urlsplit(amqp_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    topology = topology_for(scenario)
    publisher = make_publisher(through(amqp_url, proxy.port), scenario)
    key = topology.transfers.routing_key
    confirmed, failed = [], []
    lock = threading.Lock()
    stop = threading.Event()

    def keep_publishing(worker):
        index = 0
        while not stop.is_set():
            message_id = f"w{worker}-{index}"
            index += 1
            try:
                publisher.publish(key, b"{}", message_id=message_id)
            except PublishNotConfirmed:
                with lock:
                    failed.append(message_id)
                continue
            with lock:
                confirmed.append(message_id)

    try:
        threads = [threading.Thread(target=keep_publishing, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        # Cut once publishing is under way (creating the scenario's queues takes a while).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with lock:
                if confirmed:
                    break
            time.sleep(0.05)
        time.sleep(0.2)
        assert proxy.cut() > 0
        with lock:
            before_cut = len(confirmed)
        time.sleep(2.0)
        stop.set()
        for thread in threads:
            thread.join(30)
    finally:
        proxy.close()
    assert before_cut > 0
    assert len(confirmed) > before_cut, "no message was confirmed after the cut"
    arrived = set(drain_ids(amqp_url, topology.transfers.name))
    # Every confirmed message is in the queue; one sent but never confirmed may be there too
    # (its caller tried again: at least once, never lost).
    assert set(confirmed) <= arrived


def test_an_unreachable_broker_fails_the_publish_in_bounded_time(scenario, make_publisher):
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"  # nothing listens there
    publisher = make_publisher(url, scenario, attempts=2)
    started = time.monotonic()
    with pytest.raises(PublishNotConfirmed, match="did not confirm .* after 2 attempts"):
        publisher.publish("anything", b"{}")
    assert time.monotonic() - started < 10


def test_close_waits_for_confirms_then_refuses_new_messages(amqp_url, scenario, make_publisher):
    topology = topology_for(scenario)
    publisher = make_publisher(amqp_url, scenario)
    publisher.publish(topology.transfers.routing_key, b"{}", message_id="before")
    publisher.close()
    with pytest.raises(PublishNotConfirmed, match="closed"):
        publisher.publish(topology.transfers.routing_key, b"{}", message_id="after")
    assert drain_ids(amqp_url, topology.transfers.name) == ["before"]
