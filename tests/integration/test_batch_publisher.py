"""The poller's batch publisher against the real broker: a batch arrives whole, in order, with
its ids; what cannot be routed is reported per message, with the others confirmed."""

import pika
import pytest

from common.batch_publisher import BatchPublisher, Outgoing
from common.errors import NotAllConfirmed, UnroutableMessage
from common.rabbit import RabbitConnector
from common.topology import topology_for

pytestmark = pytest.mark.integration


def drain(amqp_url, queue):
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel, received = connection.channel(), []
        while True:
            method, properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return received
            received.append((properties, body))
    finally:
        connection.close()


@pytest.fixture
def batch_publisher(amqp_url, scenario):
    publisher = BatchPublisher(
        RabbitConnector(amqp_url, connection_name="test"), topology_for(scenario)
    )
    yield publisher
    publisher.close()


def test_a_batch_is_confirmed_whole_and_arrives_in_order_with_its_ids(
    amqp_url, scenario, batch_publisher
):
    queue = topology_for(scenario).task_changes
    batch = [
        Outgoing(queue.routing_key, f'{{"n": {n}}}'.encode(), f"m-{n}", correlation_id="c-1")
        for n in range(300)
    ]
    batch_publisher.publish_all(batch)
    received = drain(amqp_url, queue.name)
    assert [body for _, body in received] == [m.body for m in batch]
    assert [p.message_id for p, _ in received] == [m.message_id for m in batch]
    assert {p.correlation_id for p, _ in received} == {"c-1"}
    assert {p.delivery_mode for p, _ in received} == {2}


def test_an_unroutable_message_fails_alone_and_the_others_are_confirmed(
    amqp_url, scenario, batch_publisher
):
    queue = topology_for(scenario).task_changes
    batch = [
        Outgoing(queue.routing_key, b"{}", "first"),
        Outgoing(f"{scenario}.nobody.listens", b"{}", "lost"),
        Outgoing(queue.routing_key, b"{}", "third"),
    ]
    with pytest.raises(NotAllConfirmed) as raised:
        batch_publisher.publish_all(batch)
    assert raised.value.confirmed == {0, 2}
    assert isinstance(raised.value.cause, UnroutableMessage)
    assert [p.message_id for p, _ in drain(amqp_url, queue.name)] == ["first", "third"]
    # The publisher goes on working after a failure.
    batch_publisher.publish_all([Outgoing(queue.routing_key, b"{}", "after")])
    assert [p.message_id for p, _ in drain(amqp_url, queue.name)] == ["after"]
