"""Dead letters on the real broker: listed with reasons, shown, replayed, purged."""

import json
import subprocess
import time

import pika
import pytest

from common.consumer import ATTEMPT_HEADER, DEAD_ID_HEADER
from common.rabbit import RabbitConnector, declare_topology, inspect_queue
from common.topology import topology_for
from services.launcher import clean_environment, pwasync_command
from services.ops.dead_letters import DeadLetterBox
from tests.e2e.harness import wait_for
from tests.integration.test_rabbit import Harness, get_one

pytestmark = pytest.mark.integration


def kill_two(amqp_url, scenario):
    """Dead-letter two messages through the consumer's own policy."""
    from common.errors import BadMessage

    def reject(delivery):
        raise BadMessage(f"bad body {delivery.body!r}")

    with Harness(amqp_url, scenario, reject) as harness:
        harness.send(b'{"n": 1}', correlation_id="c1")
        harness.send(b'{"n": 2}', correlation_id="c2")
        queue = harness.topology.transfers
        connector = RabbitConnector(amqp_url, connection_name="t")
        assert wait_for(
            lambda: inspect_queue(connector, queue.dead_letter_queue).ready == 2, timeout=10
        )


def cli(amqp_url, scenario, *args):
    env = clean_environment({"PWASYNC_AMQP_URL": amqp_url, "PWASYNC_SCENARIO": scenario})
    return subprocess.run(
        pwasync_command("dlq", *args), env=env, capture_output=True, text=True, timeout=60
    )


def test_list_show_replay_and_purge(amqp_url, scenario):
    kill_two(amqp_url, scenario)
    box = DeadLetterBox(RabbitConnector(amqp_url, connection_name="t"), topology_for(scenario))

    letters = box.list()
    assert sorted(letter.correlation_id for letter in letters) == ["c1", "c2"]
    assert all(letter.reason.startswith("BadMessage: bad body") for letter in letters)
    assert [x.id for x in box.list()] == [x.id for x in letters]  # browsing takes nothing away

    listed = json.loads(cli(amqp_url, scenario, "list", "--json").stdout)
    assert {entry["id"] for entry in listed} == {letter.id for letter in letters}
    first = letters[0]
    shown = cli(amqp_url, scenario, "show", first.id)
    assert shown.returncode == 0 and first.reason in shown.stdout
    assert cli(amqp_url, scenario, "show", "nope").returncode == 1

    replayed = cli(amqp_url, scenario, "replay", first.id)
    assert replayed.returncode == 0 and "1 dead letter(s) replayed" in replayed.stdout
    queue = topology_for(scenario).transfers
    properties, body = get_one(amqp_url, queue.name)
    assert body == first.body
    assert properties.headers[ATTEMPT_HEADER] == 1
    assert DEAD_ID_HEADER not in properties.headers
    assert len(box.list()) == 1

    refused = cli(amqp_url, scenario, "purge")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert cli(amqp_url, scenario, "purge", "--yes").stdout.strip() == "1 dead letter(s) purged"
    assert box.list() == []


def test_messages_the_broker_dead_lettered_are_listed_with_the_brokers_reason(amqp_url, scenario):
    """A message rejected past the quorum delivery limit carries only x-death."""
    topology = topology_for(scenario)
    queue = topology.transfers
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    declare_topology(channel, topology)
    channel.confirm_delivery()
    channel.basic_publish("", queue.name, b"{}", properties=pika.BasicProperties(message_id="m1"))
    rejections = 0
    for _ in range(100):
        method, _, _ = channel.basic_get(queue.name, auto_ack=False)
        if method is None:
            if rejections:
                break
            time.sleep(0.05)
            continue
        channel.basic_reject(method.delivery_tag, requeue=True)
        rejections += 1
    connection.close()
    assert rejections > 1
    connector = RabbitConnector(amqp_url, connection_name="t")
    assert wait_for(
        lambda: inspect_queue(connector, queue.dead_letter_queue).ready == 1, timeout=10
    )

    box = DeadLetterBox(RabbitConnector(amqp_url, connection_name="t"), topology)
    [letter] = box.list()
    assert letter.reason == "dead-lettered by the broker: delivery_limit"
    assert letter.source_queue == queue.name
    assert box.replay(letter.id)[0].message_id == "m1"
    assert get_one(amqp_url, queue.name) is not None
