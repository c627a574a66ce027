"""Dead letters on the real broker: listed with reasons, shown, replayed, purged."""

import json
import subprocess
import time
from contextlib import contextmanager

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
    kill(amqp_url, scenario, 2)


def kill(amqp_url, scenario, count):
    from common.errors import BadMessage

    def reject(delivery):
        raise BadMessage(f"bad body {delivery.body!r}")

    with Harness(amqp_url, scenario, reject) as harness:
        for n in range(1, count + 1):
            harness.send(json.dumps({"n": n}).encode(), correlation_id=f"c{n}")
        queue = harness.topology.transfers
        connector = RabbitConnector(amqp_url, connection_name="t")
        assert wait_for(
            lambda: inspect_queue(connector, queue.dead_letter_queue).ready == count, timeout=10
        )


@contextmanager
def rabbitmq4_default_delivery_limit(scenario):
    """RabbitMQ 4 gives every quorum queue a delivery limit of 20 (and drops what passes it
    where no dead-letter target is set); 3.x has none. A policy on this test's own queues
    emulates it, below any policy the product sets (as 4's default is)."""
    name = f"emulate-rabbitmq4-{scenario}"
    ctl = ["rabbitmqctl", "-q"]
    pattern = f"^pwasync\\.{scenario}\\."
    definition = json.dumps({"delivery-limit": 20})
    subprocess.run(
        [*ctl, "set_policy", "--apply-to", "queues", "--priority", "-1", name, pattern, definition],
        check=True,
        capture_output=True,
        timeout=60,
    )
    try:
        yield
    finally:
        subprocess.run([*ctl, "clear_policy", name], check=True, capture_output=True, timeout=60)


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
    declare_topology(connection, topology)
    channel = connection.channel()
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


def test_dead_letters_listed_25_times_under_rabbitmq4s_delivery_limit_are_all_still_there(
    amqp_url, scenario
):
    """Issue 11 item 14 (a 'done when' fault): browsing took messages and gave them back by
    closing the channel, each return a delivery; past 4's limit of 20 they were gone."""
    kill(amqp_url, scenario, 3)
    topology = topology_for(scenario)
    box = DeadLetterBox(RabbitConnector(amqp_url, connection_name="t"), topology)
    with rabbitmq4_default_delivery_limit(scenario):
        before = sorted(letter.id for letter in box.list())
        for _ in range(24):
            box.list()
        after = sorted(letter.id for letter in box.list())
        dead_queue = topology.transfers.dead_letter_queue
        assert (len(before), len(after)) == (3, 3)
        assert after == before
        assert inspect_queue(RabbitConnector(amqp_url, connection_name="t"), dead_queue).ready == 3
        # Browsing did not count as a delivery at all: the copies were never returned.
        properties, _ = get_one(amqp_url, dead_queue)
        assert not (properties.headers or {}).get("x-delivery-count")


def test_a_copy_left_by_a_browser_that_died_after_the_confirm_is_dropped_once(amqp_url, scenario):
    """Browsing stores a fresh copy, then acks the original: a crash between the two leaves
    both; the next listing shows one and keeps exactly one."""
    kill(amqp_url, scenario, 1)
    topology = topology_for(scenario)
    dead_queue = topology.transfers.dead_letter_queue
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.confirm_delivery()
    method, properties, body = channel.basic_get(dead_queue, auto_ack=False)
    channel.basic_publish("", dead_queue, body, properties=properties)  # the copy, confirmed
    connection.close()  # "crashes" before the ack: the original comes back
    connector = RabbitConnector(amqp_url, connection_name="t")
    assert wait_for(lambda: inspect_queue(connector, dead_queue).ready == 2, timeout=10)

    box = DeadLetterBox(connector, topology)
    assert [letter.correlation_id for letter in box.list()] == ["c1"]
    assert inspect_queue(connector, dead_queue).ready == 1
    assert [letter.correlation_id for letter in box.list()] == ["c1"]
