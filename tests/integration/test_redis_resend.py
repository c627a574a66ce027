"""Issue 11, item 11: a command whose reply was lost is never sent again by the client.

Through a proxy that lets the first script (or transaction) run in Redis and then loses its
reply with the connection, the effect must be there once: queued requests taken by a run are
taken once, the Graph budget and a run's counts are not counted twice. The caller learns that the
outcome is unknown (``ServiceUnavailable``) and decides itself, as for any other Redis failure.
"""

from __future__ import annotations

import contextlib
import uuid
from urllib.parse import urlsplit

import pytest

from common.errors import ServiceUnavailable
from common.messages import SyncRequested
from common.redis_store import Keys, connect_redis, connect_redis_async, may_resend
from common.run_events import RunEventCounter
from services.event_writer.mailbox_limits import MailboxLimiter
from services.poller.coordination import QueuedRequest, RunCoordinator
from services.poller.state import PollerKeys
from tests.reply_dropping_proxy import ReplyDroppingProxy

pytestmark = pytest.mark.integration


@pytest.fixture
def lossy(redis_url):
    """Makes a client of the product's own construction whose first marked reply is lost."""
    proxies = []

    def make(marker: bytes, *, asynchronous: bool = False):
        parts = urlsplit(redis_url)
        proxy = ReplyDroppingProxy(parts.hostname, parts.port or 6379, marker)
        proxies.append(proxy)
        db = parts.path.strip("/") or "0"
        connect = connect_redis_async if asynchronous else connect_redis
        return connect(f"redis://127.0.0.1:{proxy.port}/{db}"), proxy

    yield make
    for proxy in proxies:
        proxy.close()


def test_a_take_of_queued_requests_whose_reply_was_lost_runs_each_request_once(
    lossy, redis_client, redis_url, scenario
):
    client, proxy = lossy(b"EVALSHA")
    direct = RunCoordinator(connect_redis(redis_url), Keys(scenario), redis_url)
    direct.enqueue(QueuedRequest(SyncRequested(scenario=scenario), correlation_id="c-1"))
    owner = direct.try_lease()
    assert owner is not None
    with contextlib.suppress(ServiceUnavailable):
        RunCoordinator(client, Keys(scenario), "redis://lossy").take(owner)
    assert proxy.dropped == 1
    # The lost take moved the request to the processing list once; the holder's next take
    # finds it there once, not twice, and nothing is left pending.
    taken = direct.take(owner)
    assert [q.correlation_id for q in taken] == ["c-1"]
    assert redis_client.llen(PollerKeys(Keys(scenario)).pending) == 0


def test_a_graph_budget_grant_whose_reply_was_lost_is_counted_once(
    lossy, redis_client, graph_keys, loop_runner
):
    client, proxy = lossy(b"EVALSHA", asynchronous=True)
    limiter = MailboxLimiter(client, graph_keys, "redis://lossy", budget=100)
    with contextlib.suppress(ServiceUnavailable):
        loop_runner.run(limiter.acquire({"adele@contoso.com": 1}))
    assert proxy.dropped == 1
    spent = redis_client.hgetall(graph_keys.budget("adele@contoso.com"))
    assert sum(int(n) for n in spent.values()) == 1


def test_a_run_count_whose_reply_was_lost_is_counted_once(
    lossy, redis_client, scenario, loop_runner
):
    client, proxy = lossy(b"EXEC", asynchronous=True)
    keys = Keys(scenario)
    with contextlib.suppress(ServiceUnavailable):
        loop_runner.run(RunEventCounter(client, keys, "redis://lossy").add("c-1", {"created": 3}))
    assert proxy.dropped == 1
    assert redis_client.hget(keys.run_events("c-1"), "created") == "3"


def test_reads_are_still_resent_after_a_lost_reply(lossy, redis_client, scenario):
    """Losing a GET's reply changes nothing in Redis, so the client asks again itself."""
    client, proxy = lossy(b"GET")
    key = f"pwasync:{{{scenario}}}:probe:{uuid.uuid4().hex}"
    redis_client.set(key, "v")
    assert client.get(key) == "v"
    assert proxy.dropped == 1


def test_the_writers_asyncio_client_resends_reads_too(lossy, redis_client, scenario, loop_runner):
    client, proxy = lossy(b"GET", asynchronous=True)
    key = f"pwasync:{{{scenario}}}:probe:{uuid.uuid4().hex}"
    redis_client.set(key, "v")
    assert loop_runner.run(client.get(key)) == "v"
    assert proxy.dropped == 1


def test_only_commands_without_an_effect_are_resent():
    for command in ("GET", "mget", "HGETALL", "ZRANGEBYSCORE", "PING", "SCAN", "PTTL"):
        assert may_resend(command), command
    for command in ("EVALSHA", "EVAL", "INCR", "RPUSH", "LPUSH", "HINCRBY", "SET", "DEL"):
        assert not may_resend(command), command
