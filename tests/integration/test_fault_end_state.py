"""The fault suite's check of queues left busy (tests/chaos/end_state.py) on the real broker:
another scenario's sync request in this scenario's queue is not this run's leftover, which
matters once another xdist worker's ``sync-now`` can reach a queue whose poller has stopped."""

import json

import pika
import pytest

from common.rabbit import RabbitConnector, declare_topology, inspect_queue
from common.topology import topology_for
from tests.chaos.end_state import leftovers

pytestmark = pytest.mark.integration


def _into_queue(amqp_url: str, queue: str, bodies: list[bytes]) -> None:
    """Straight into the queue (default exchange): ``sync.requested`` would reach every
    scenario's poller on the broker."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for body in bodies:
            channel.basic_publish("", queue, body)
    finally:
        connection.close()


def test_only_this_scenarios_requests_and_unreadable_bodies_are_left_over(amqp_url, scenario):
    topology = topology_for(scenario)
    connector = RabbitConnector(amqp_url, connection_name="test")
    connection = connector.connect()
    declare_topology(connection, topology)
    connection.close()
    queue = topology.sync_requests.name
    assert leftovers(scenario, amqp_url) == {}

    _into_queue(amqp_url, queue, [json.dumps({"scenario": f"{scenario}-other"}).encode()])
    assert leftovers(scenario, amqp_url) == {}  # another run's request: not ours

    _into_queue(amqp_url, queue, [json.dumps({"scenario": scenario}).encode(), b"{not json"])
    assert leftovers(scenario, amqp_url) == {queue: 2}
    _into_queue(amqp_url, topology.transfers.name, [b"{}"])
    assert leftovers(scenario, amqp_url) == {queue: 2, topology.transfers.name: 1}
    assert inspect_queue(connector, queue).ready == 3  # looking took nothing away
