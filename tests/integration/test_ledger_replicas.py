"""Issue 11, item 13: an allocation survives a failover to a replica.

The ledger acks a transfer once its allocation is in Redis; with a replica that has not
received it yet, a failover to that replica lost it (the transfer was gone). Now, when the
primary has replicas, the allocation waits (WAIT) for one of them to hold it, and a transfer
none confirmed is retried instead of acked. A primary and a replica of the test's own.
"""

from __future__ import annotations

import os
import shutil
import signal
import uuid
from datetime import UTC, datetime

import pytest
import redis

from common.errors import ServiceUnavailable
from common.redis_store import Keys, connect_redis
from services.ledger.endpoints import EndpointLedger
from tests.chaos.nodes import RedisServer
from tests.e2e.harness import wait_for

pytestmark = pytest.mark.integration

PROJECT = str(uuid.UUID(int=7))


@pytest.fixture
def primary_and_replica(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.fail("a replica needs redis-server on the PATH", False)
    primary, replica = RedisServer(tmp_path / "primary"), RedisServer(tmp_path / "replica")
    primary.start()
    replica.start()
    to_replica = redis.Redis.from_url(replica.url, decode_responses=True)
    to_replica.replicaof("127.0.0.1", primary.port)
    assert wait_for(
        lambda: to_replica.info("replication").get("master_link_status") == "up", timeout=20
    )
    yield primary, replica, to_replica
    to_replica.close()
    os.kill(replica.process.pid, signal.SIGCONT)
    for server in (replica, primary):
        server.close()


def test_an_allocation_is_acked_only_once_a_replica_holds_it(primary_and_replica):
    primary, replica, to_replica = primary_and_replica
    keys = Keys(f"t-{uuid.uuid4().hex[:10]}")
    ledger = EndpointLedger(connect_redis(primary.url), keys, primary.url)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    now = datetime.now(UTC)
    assert ledger.allocate(first, PROJECT, now)

    os.kill(replica.process.pid, signal.SIGSTOP)  # the replica falls behind
    try:
        with pytest.raises(ServiceUnavailable, match="replica"):
            ledger.allocate(second, PROJECT, now)  # not acked: the transfer is retried
    finally:
        os.kill(replica.process.pid, signal.SIGCONT)
    ledger.allocate(second, PROJECT, now)  # the retry: allocates nothing twice, and waits

    primary.crash()  # the failover: the replica becomes the primary
    to_replica.replicaof("NO", "ONE")
    promoted = EndpointLedger(connect_redis(replica.url), keys, replica.url)
    assert {e.task_id for e in promoted.in_use()} == {first, second}
    assert promoted.history()[now.date().isoformat()] == 2
