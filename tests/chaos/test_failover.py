"""Issue 15: no single point of failure. A whole sync on clustered infrastructure of the test's
own (tests/chaos/nodes.py), with the node the services use taken away in the middle of it:

- a Redis master, its replica and three Sentinels (``redis+sentinel://``), the master SIGKILLed
  once a quarter of the events are written: the Sentinels promote the replica and the
  services follow it;
- a three-master Redis Cluster (``redis+cluster://``), a whole sync: every script, MULTI and
  pipeline of a scenario in one slot, the key scans across the nodes;
- three RabbitMQ nodes joined in one cluster (quorum queues: a member on each node), the node
  with the most client connections stopped a quarter of the way: the services reconnect to
  the next node, redeclare, and republish what the dropped connection left unconfirmed.

Each ends with every event exactly once and the ledger exact (tests/chaos/end_state.py). Long
runs (a cluster's start takes 5 to 40 s): under ``chaos`` (``make chaos``). The Redis runs
have a broker of their own too: ``sync.requested`` reaches every scenario's queue on a shared
broker, and another run's request arriving after the services stopped would stay queued.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.chaos.end_state import Expectation
from tests.chaos.nodes import RABBITMQ_BIN, RabbitCluster, RedisClusterNodes, SentinelGroup
from tests.chaos.scenario import SERVICES, Volume
from tests.e2e.harness import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(900)]

FAILOVER = Volume(
    "long", projects=2, tasks_per_project=150, assignees=2, mailboxes=10, latency_ms=300
)


def _needs(program: str) -> None:
    if shutil.which(program) is None:
        pytest.fail(f"this failover test needs {program} on the PATH", False)


@pytest.fixture
def sentinel_group(tmp_path) -> Iterator[SentinelGroup]:
    _needs("redis-server")
    group = SentinelGroup(tmp_path / "sentinel")
    try:
        group.start()
        yield group
    finally:
        group.close()


@pytest.fixture
def redis_cluster(tmp_path) -> Iterator[RedisClusterNodes]:
    _needs("redis-cli")
    cluster = RedisClusterNodes(tmp_path / "redis-cluster")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def rabbit_cluster(tmp_path) -> Iterator[RabbitCluster]:
    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        pytest.fail(f"a RabbitMQ cluster needs RabbitMQ's scripts in {RABBITMQ_BIN}", False)
    cluster = RabbitCluster(tmp_path / "rabbit-cluster", size=3)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def _a_quarter_written(run, expected: set) -> None:
    assert wait_for(lambda: run.events_written() >= len(expected) // 4, timeout=180)
    assert run.events_written() < len(expected), "the sync ended before the fault"


def test_a_redis_master_killed_mid_sync_fails_over_to_its_replica_losing_nothing(
    sentinel_group, rabbit_node, run_factory
):
    run = run_factory(
        "Redis master SIGKILLed, Sentinel failover",
        FAILOVER,
        redis=sentinel_group.url,
        amqp=rabbit_node.url,
    )
    expected = run.generate()
    run.start()
    run.sync()
    _a_quarter_written(run, expected)
    written_at_kill = run.events_written()
    sentinel_group.master.crash()
    assert wait_for(
        lambda: sentinel_group.master_port() == sentinel_group.replica.port, timeout=60
    ), "the Sentinels did not promote the replica"
    run.finish(
        Expectation(frozenset(expected)),
        f"master SIGKILL at {written_at_kill} events written; replica promoted",
    )


def test_a_whole_sync_on_a_redis_cluster_is_exact(redis_cluster, rabbit_node, run_factory):
    run = run_factory(
        "Redis Cluster of three masters", FAILOVER, redis=redis_cluster.url, amqp=rabbit_node.url
    )
    expected = run.generate()
    run.start()
    run.sync()
    run.finish(Expectation(frozenset(expected)), "a whole sync, no fault")


def _consumings(run) -> dict[str, int]:
    """How often each service has started consuming (1 + its reconnections)."""
    return {
        name: sum(1 for line in run.pipeline.log_lines(name) if line["event"] == "consuming")
        for name in SERVICES
    }


@pytest.mark.parametrize("node", ["consumers", "publishers"])
def test_the_connected_rabbitmq_node_stopped_mid_sync_fails_over_losing_nothing(
    rabbit_cluster, run_factory, node
):
    fault = f"RabbitMQ cluster: the {node}' node stopped"
    run = run_factory(fault, FAILOVER, amqp=rabbit_cluster.url)
    expected = run.generate()
    run.start()
    assert wait_for(lambda: all(n >= 1 for n in _consumings(run).values()), timeout=60)
    # Each service's first connection (its consumer's) goes to the first node, its publishers'
    # to the next ones (round robin): stop the consumers' node, or the busiest of the others,
    # where the writers' publishers have their connections, while they publish.
    counts = [node.connections() for node in rabbit_cluster.nodes]
    assert counts[0] >= len(SERVICES), counts
    index = 0 if node == "consumers" else 1 + counts[1:].index(max(counts[1:]))
    run.sync()
    _a_quarter_written(run, expected)
    written_at_stop = run.events_written()
    rabbit_cluster.nodes[index].stop()
    if node == "consumers":  # each consumes again, from another node
        assert wait_for(lambda: all(n >= 2 for n in _consumings(run).values()), timeout=90), (
            _consumings(run)
        )
    run.finish(
        Expectation(frozenset(expected)),
        f"node {index + 1} of 3 stopped at {written_at_stop} events written "
        f"(it had {counts[index]} of {sum(counts)} connections)",
    )
    assert written_at_stop < len(expected) * 0.6, "the node stopped too late to matter"
