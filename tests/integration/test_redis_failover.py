"""Issue 15: the one Redis factory on a Redis Cluster and on a Sentinel group of the test's own
(the long runs of a whole sync on them are tests/chaos/test_failover.py).

- Cluster (three masters, a replica each): the ledger's allocation waits for the replica of
  the master of the scenario's slot (its script and WAIT go to that master over one
  connection), a writer's lease renewals (scripts in a pipeline) reach it, and deleting a
  scenario finds its keys whichever node the scan asks.
- Sentinel: a client made from the URL follows the master the Sentinels promote after the old
  one is SIGKILLed, and what the ledger allocated before (acked after WAIT) is still there.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis

from common.errors import ServiceUnavailable
from common.redis_store import Keys, connect_redis, connect_redis_async, key_node
from services.event_writer.task_store import Finish, TaskStore
from services.launcher import delete_scenario
from services.ledger.endpoints import REPLICAS_CHECK_SECONDS, EndpointLedger
from tests.chaos.nodes import RedisClusterNodes, SentinelGroup
from tests.e2e.harness import wait_for

# One xdist group: the module's clusters start once, on one worker (pytest -n, docs/tests.md).
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("redis-failover")]

PROJECT = str(uuid.UUID(int=15))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[RedisClusterNodes]:
    if shutil.which("redis-cli") is None:
        pytest.fail("a Redis Cluster needs redis-server and redis-cli on the PATH", False)
    nodes = RedisClusterNodes(tmp_path_factory.mktemp("redis-cluster"), 3, replicas=1)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.close()


@pytest.fixture(scope="module")
def sentinel_group(tmp_path_factory) -> Iterator[SentinelGroup]:
    if shutil.which("redis-server") is None:
        pytest.fail("a Sentinel group needs redis-server on the PATH", False)
    group = SentinelGroup(tmp_path_factory.mktemp("redis-sentinel"))
    try:
        group.start()
        yield group
    finally:
        group.close()


def _replica_of_master_of(cluster, client, key: str) -> redis.Redis:
    """A client of the replica of the master that holds ``key``, reading (READONLY)."""
    primary = client.get_node_from_key(key)
    for server in cluster.servers:
        reader = redis.Redis(port=server.port, decode_responses=True)
        info = reader.info("replication")
        if info["role"] == "slave" and int(info["master_port"]) == primary.port:
            reader.execute_command("READONLY")
            return reader
        reader.close()
    raise AssertionError(f"no replica of {primary.name}")


def _a_check_period_each_call():
    """A replica clock a check period further on each call: the ledger asks for the replica
    count before every allocation."""
    steps = iter(range(0, 10**9, int(REPLICAS_CHECK_SECONDS) + 1))
    return lambda: float(next(steps))


def test_the_ledger_on_a_cluster_waits_for_the_replica_of_its_slots_master(cluster):
    client = connect_redis(cluster.url)
    keys = Keys(f"t-{uuid.uuid4().hex[:10]}")
    ledger = EndpointLedger(client, keys, cluster.url)
    task = str(uuid.uuid4())
    assert ledger.allocate(task, PROJECT, datetime.now(UTC))
    # INFO of the slot's master, not of a node that happens to answer: it has one replica.
    assert ledger._replicas.connected() == 1
    # Acked after WAIT: the replica of that master has the allocation already.
    replica = _replica_of_master_of(cluster, client, keys.ledger_endpoints)
    assert replica.zscore(keys.ledger_endpoints, task) is not None
    assert replica.exists(keys.endpoint(task))
    assert not ledger.allocate(task, PROJECT, datetime.now(UTC))  # once per window
    assert ledger.count_in_use() == 1


def test_the_writers_scripts_on_a_cluster_reach_the_slots_master(cluster):
    """The writer's asyncio client: begin, finish and lease renewals go as pipelines of
    scripts (``Coalescing``), and a script the cluster does not know yet is loaded and run."""
    client = connect_redis(cluster.url)
    keys = Keys(f"t-{uuid.uuid4().hex[:10]}")
    task = str(uuid.uuid4())
    lease = keys.writer_lease(task)

    async def handling():
        writer = connect_redis_async(cluster.url)
        try:
            store = TaskStore(writer, keys, cluster.url)
            begun = await store.begin(task, "0001", "upsert", ["anna@contoso.com"])
            client.pexpire(lease, 500)
            await store.renew_leases()
            renewed = client.pttl(lease)
            held = await store.finish(task, begun.token, Finish())
            return renewed, held
        finally:
            await writer.aclose()

    renewed, held = asyncio.run(handling())
    assert renewed > 5_000
    assert held and not client.exists(lease)
    assert client.hget(keys.writer_task(task), "dirty") == "0"


def test_deleting_a_scenario_on_a_cluster_finds_its_keys_on_any_node(cluster, amqp_url):
    client = connect_redis(cluster.url)
    scenario = f"t-{uuid.uuid4().hex[:10]}"
    keys = Keys(scenario)
    client.set(keys.watermark, "x")
    client.hset(keys.task_events(uuid.uuid4()), "r", "{}")
    client.set("unrelated:key", "kept")  # another slot, most likely on another node
    delete_scenario(amqp_url, cluster.url, scenario)
    assert list(client.scan_iter(match=keys.all_pattern)) == []
    assert client.get("unrelated:key") == "kept"
    assert key_node(client, keys.watermark) is not client  # the slot's master


def test_a_sentinel_client_follows_the_master_the_sentinels_promote(sentinel_group):
    client = connect_redis(sentinel_group.url)
    keys = Keys(f"t-{uuid.uuid4().hex[:10]}")
    # After the failover the new master has no replica: nothing to wait for (asked each time).
    ledger = EndpointLedger(
        client, keys, sentinel_group.url, replica_clock=_a_check_period_each_call()
    )
    before = str(uuid.uuid4())
    assert ledger.allocate(before, PROJECT, datetime.now(UTC))  # acked after WAIT
    assert ledger._replicas.connected() == 1
    sentinel_group.master.crash()
    assert wait_for(lambda: sentinel_group.master_port() == sentinel_group.replica.port, timeout=30)

    def allocated_after_failover() -> bool:
        try:
            return ledger.allocate(str(uuid.uuid4()), PROJECT, datetime.now(UTC))
        except ServiceUnavailable:  # the old master's connections fail once each
            return False

    assert wait_for(allocated_after_failover, timeout=30)
    assert ledger.count_in_use() == 2  # the one WAIT confirmed survived the failover
    assert client.info("replication")["role"] == "master"
    assert client.connection_pool.get_master_address()[1] == sentinel_group.replica.port


def test_the_ledger_follows_its_slot_to_the_replica_that_took_over_from_a_dead_master(cluster):
    """Last in the module: it kills a master of the shared cluster. The ledger reaches the
    slot's master directly (``on_key_node``), so its own failures must refresh the slot map:
    only allocations are made here, no command of the cluster client that would."""
    client = connect_redis(cluster.url)
    keys = Keys(f"t-{uuid.uuid4().hex[:10]}")
    # The promoted replica has no replica of its own: the count is asked again every time
    # (else the allocations wait for one that is not there until the count's next check).
    ledger = EndpointLedger(client, keys, cluster.url, replica_clock=_a_check_period_each_call())
    assert ledger.allocate(str(uuid.uuid4()), PROJECT, datetime.now(UTC))
    master = client.get_node_from_key(keys.ledger_endpoints)
    next(s for s in cluster.servers if s.port == master.port).crash()
    task = str(uuid.uuid4())  # one transfer, retried as its message would be

    def allocated() -> bool:
        try:
            ledger.allocate(task, PROJECT, datetime.now(UTC))
            return True
        except ServiceUnavailable:  # until the replica is promoted and the map read again
            return False

    assert wait_for(allocated, timeout=30)
    assert client.get_node_from_key(keys.ledger_endpoints).port != master.port
    assert ledger.count_in_use() == 2


def test_the_writers_asyncio_client_reaches_the_master_the_sentinels_name(sentinel_group):
    keys = Keys(f"t-{uuid.uuid4().hex[:10]}")
    task = str(uuid.uuid4())

    async def handling():
        writer = connect_redis_async(sentinel_group.url)
        try:
            store = TaskStore(writer, keys, sentinel_group.url)
            begun = await store.begin(task, "0001", "upsert", [])
            return await store.finish(task, begun.token, Finish())
        finally:
            await writer.aclose()

    assert asyncio.run(handling())
    client = connect_redis(sentinel_group.url)
    assert client.hget(keys.writer_task(task), "dirty") == "0"
