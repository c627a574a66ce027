"""Queue settings by policy, set through the management API, on a RabbitMQ node of the test's
own (the shared broker runs without the management plugin, and its policies are not ours)."""

import threading
import time
import uuid
from urllib.parse import quote

import httpx
import pika
import pytest

from common.broker_policies import with_queue_policies
from common.consumer import Consumer, Delivery
from common.errors import RetryableError
from common.rabbit import RabbitConnector, ThreadLocalPublisher, declare_topology
from common.topology import DELIVERY_LIMIT, topology_for
from tests.chaos.nodes import RabbitNode

# One xdist group: the module's node starts once, on one worker (pytest -n, docs/tests.md).
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("queue-policies")]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    node = RabbitNode(tmp_path_factory.mktemp("rabbitmq-management"), management=True)
    node.start()
    yield node
    node.close()


def queue_info(node, name):
    """The queue as the management API reports it, once its stats are in (they lag)."""
    url = f"http://127.0.0.1:{node.management_port}/api/queues/%2F/{quote(name, safe='')}"
    deadline = time.monotonic() + 15
    while True:
        response = httpx.get(url, auth=("guest", "guest"), timeout=10)
        if response.status_code == 200 and "policy" in response.json():
            return response.json()
        assert time.monotonic() < deadline, response.text
        time.sleep(0.2)


def policed(node, scenario):
    return with_queue_policies(
        topology_for(scenario),
        management_url=node.management_url,
        amqp_url=node.url,
        ca_bundle=None,
        sleep=lambda _: None,
    )


def test_queues_carry_only_their_type_and_get_their_settings_from_our_policies(node):
    scenario = f"p-{uuid.uuid4().hex[:8]}"
    topology = policed(node, scenario)
    assert topology.settings_by_policy
    connection = pika.BlockingConnection(pika.URLParameters(node.url))
    declare_topology(connection, topology)
    connection.close()

    work = queue_info(node, topology.transfers.name)
    assert work["arguments"] == {"x-queue-type": "quorum"}
    assert work["policy"] == topology.transfers.name
    assert work["effective_policy_definition"]["delivery-limit"] == DELIVERY_LIMIT
    assert work["effective_policy_definition"]["dead-letter-routing-key"] == (
        topology.transfers.dead_letter_queue
    )
    retry = queue_info(node, topology.transfers.retry_queue(10))
    assert retry["arguments"] == {"x-queue-type": "quorum"}
    assert retry["effective_policy_definition"]["message-ttl"] == 10_000
    # 3.x: no delivery limit is the default (and -1 is refused), so the .dead queue needs none.
    dead = queue_info(node, topology.transfers.dead_letter_queue)
    assert dead["arguments"] == {"x-queue-type": "quorum"}
    assert not (dead.get("effective_policy_definition") or {}).get("delivery-limit")


def test_retry_tiers_and_the_delivery_limit_work_by_policy_alone(node):
    scenario = f"p-{uuid.uuid4().hex[:8]}"
    topology = policed(node, scenario)
    connector = RabbitConnector(node.url, connection_name="test")
    publisher = ThreadLocalPublisher(connector, topology)
    attempts = []

    def handler(delivery: Delivery):
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise RetryableError("Graph timed out")

    stop = threading.Event()
    consumer = Consumer(
        connector=connector,
        topology=topology,
        queue=topology.transfers,
        handler=handler,
        publisher=publisher,
    )
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert consumer.connected.wait(10)
        publisher.publish(topology.transfers.routing_key, b"{}")
        deadline = time.monotonic() + 20
        while len(attempts) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(15)
        publisher.close()
    assert len(attempts) == 2 and attempts[1] - attempts[0] >= 1.5  # the 2 s tier's TTL

    # Past the delivery limit the broker dead-letters into .dead (the work queue's policy).
    connection = pika.BlockingConnection(pika.URLParameters(node.url))
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_publish("", topology.transfers.name, b"{}")
    for _ in range(DELIVERY_LIMIT + 1):
        method = None
        for _ in range(100):
            method, _, _ = channel.basic_get(topology.transfers.name, auto_ack=False)
            if method is not None:
                break
            time.sleep(0.05)
        assert method is not None
        channel.basic_reject(method.delivery_tag, requeue=True)
    deadline = time.monotonic() + 10
    dead = 0
    while not dead and time.monotonic() < deadline:
        dead = channel.queue_declare(
            topology.transfers.dead_letter_queue, passive=True
        ).method.message_count
        time.sleep(0.1)
    connection.close()
    assert dead == 1


def test_without_a_management_api_missing_queues_get_their_settings_as_arguments(node):
    scenario = f"p-{uuid.uuid4().hex[:8]}"
    topology = with_queue_policies(
        topology_for(scenario), management_url=None, amqp_url=node.url, ca_bundle=None
    )
    assert not topology.settings_by_policy
    connection = pika.BlockingConnection(pika.URLParameters(node.url))
    declare_topology(connection, topology)
    connection.close()
    work = queue_info(node, topology.transfers.name)
    assert work["arguments"]["x-delivery-limit"] == DELIVERY_LIMIT
    assert work["policy"] is None


def test_the_policies_and_the_status_reach_a_cluster_through_the_node_that_answers(node):
    """Issue 15: several management URLs (a cluster's nodes) are tried in turn, as the AMQP
    URLs are; nothing listens on port 1."""
    from common.settings import Settings
    from services.ops.status import _unacked_counts

    scenario = f"p-{uuid.uuid4().hex[:8]}"
    managers = f"http://guest:guest@127.0.0.1:1,{node.management_url}"
    brokers = f"amqp://guest:guest@127.0.0.1:1/%2F,{node.url}"
    topology = with_queue_policies(
        topology_for(scenario),
        management_url=managers,
        amqp_url=brokers,
        ca_bundle=None,
        sleep=lambda _: None,
    )
    assert topology.settings_by_policy
    connection = RabbitConnector(brokers, connection_name="t").connect()
    declare_topology(connection, topology)
    connection.close()
    settings = Settings.model_validate(
        {"amqp_url": brokers, "rabbitmq_management_url": managers, "scenario": scenario}
    )
    work_queue = topology_for(scenario).queue_names()[0]
    assert _unacked_counts(settings)[work_queue] == 0
