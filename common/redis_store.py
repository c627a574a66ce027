"""Redis at the edge: the connection and the key layout of a scenario.

One factory, ``connect_redis``, for every form of ``PWASYNC_REDIS_URL``: one server, the master
of a Sentinel group (the client asks the Sentinels where the master is and follows it after a
failover) or a Redis Cluster.

Every key of a scenario shares the hash tag ``{scenario}``, so every key of a scenario is in one
Redis Cluster slot: Lua scripts, MULTI and pipelines of several keys work there as on one
server, and several scenarios can share one Redis without seeing each other's keys.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.exceptions
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import HiredisRespSerializer
from redis.exceptions import NoScriptError
from redis.retry import Retry
from redis.sentinel import Sentinel

from common.errors import ConfigError, PermanentError, PwasyncError, ServiceUnavailable
from common.redis_urls import RedisTarget, parse_redis_url

if TYPE_CHECKING:
    from common.settings import Settings

REDIS_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,  # MasterNotFoundError too: no Sentinel knows a master
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.SlotNotCoveredError,  # a cluster whose node of the slot is gone
)


def redis_address(url: str) -> str:
    """Where a ``PWASYNC_REDIS_URL`` points, for messages (never the credentials)."""
    try:
        return parse_redis_url(url).address
    except ValueError:
        return "(an unreadable PWASYNC_REDIS_URL)"


#: Commands that change nothing in Redis. Only these are sent again when their reply was lost
#: (a timeout, a connection that died after the request went out): any other command may have
#: run already, and running a script, INCR, RPUSH or a MULTI twice counts or queues twice.
_NO_EFFECT = frozenset(
    {
        "DBSIZE", "ECHO", "EXISTS", "GET", "HEXISTS", "HGET", "HGETALL", "HKEYS", "HLEN", "HMGET",
        "HSCAN", "INFO", "KEYS", "LINDEX", "LLEN", "LRANGE", "MGET", "PING", "PTTL", "SCAN",
        "SCARD", "SCRIPT EXISTS", "SCRIPT LOAD", "SISMEMBER", "SMEMBERS", "SSCAN", "STRLEN",
        "TIME", "TTL", "TYPE", "ZCARD", "ZCOUNT", "ZRANGE", "ZRANGEBYSCORE", "ZRANK",
        "ZREVRANGE", "ZREVRANGEBYSCORE", "ZSCAN", "ZSCORE",
    }
)  # fmt: skip
_RESEND_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def may_resend(command: str) -> bool:
    """May the client send ``command`` again after losing its reply?"""
    return command.upper() in _NO_EFFECT


class _ResendingReads(redis.Redis):
    """Sends every command once; resends only those that change nothing (``may_resend``).

    redis-py retries every command on a timeout or a lost connection, so a script whose reply
    was lost ran twice. The connections here retry nothing (pipelines and MULTI included); a
    write whose outcome is unknown reaches the caller as ``ServiceUnavailable``, and the
    caller's own retry (a message's retry tier, a loop's next round) decides what to do again.
    """

    def execute_command(self, *args, **options):  # noqa: ANN002, ANN003, ANN201 - redis-py's
        return _send(redis.Redis.execute_command, self, args, options)


class _ResendingClusterReads(RedisCluster):
    """``_ResendingReads`` for a Redis Cluster: the cluster client's own retries are off (it
    repeats any command after a lost connection); reads are resent as above. A redirection
    (MOVED, ASK) is followed by redis-py whatever the command: the node refused it unrun."""

    def execute_command(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - redis-py's
        return _send(RedisCluster.execute_command, self, args, kwargs)


_READS = Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=3, supported_errors=_RESEND_ERRORS)


def _send(execute, client, args, options):  # noqa: ANN001, ANN202
    if not may_resend(str(args[0])):
        return execute(client, *args, **options)
    return _READS.call_with_retry(lambda: execute(client, *args, **options), lambda _error: None)


#: What every connection of ours has: replies as text, bounded waits, no retry of its own.
_CONNECTION_OPTIONS = {
    "decode_responses": True,
    "socket_timeout": 10,
    "socket_connect_timeout": 5,
    "health_check_interval": 30,
}
#: One connection per thread in use; redis-py's default of 100 is below what a writer with
#: hundreds of handler threads needs (it fails with MaxConnectionsError).
_MAX_CONNECTIONS = 1024


def connect_redis(url: str, *, sentinel_password: str | None = None) -> redis.Redis:
    """A client for any form of ``PWASYNC_REDIS_URL`` that never repeats a write (see
    ``_ResendingReads``); ``ping`` it to learn whether Redis is there. One server or a
    Sentinel group is connected on the first command; a cluster when the client is made
    (``_cluster``)."""
    try:
        target = parse_redis_url(url)
    except ValueError as exc:
        raise ConfigError(f"PWASYNC_REDIS_URL: {exc}") from None
    if target.kind == "sentinel":
        return _sentinel_master(target, sentinel_password)
    if target.kind == "cluster":
        return _cluster(target)
    return _ResendingReads.from_url(
        url,
        max_connections=_MAX_CONNECTIONS,
        retry=Retry(NoBackoff(), retries=0),
        **_CONNECTION_OPTIONS,
    )


def connect_redis_for(settings: Settings) -> redis.Redis:
    """``connect_redis`` with the settings' URL and the Sentinels' password."""
    sentinel_password = settings.redis_sentinel_password
    return connect_redis(
        settings.redis_url.get_secret_value(),
        sentinel_password=sentinel_password.get_secret_value() if sentinel_password else None,
    )


def _sentinel_master(target: RedisTarget, sentinel_password: str | None) -> redis.Redis:
    """The master of ``target.master``: redis-py's Sentinel pool asks the Sentinels for its
    address on every new connection, and drops the connections to a master that became a
    replica (READONLY), so the client follows a failover once the Sentinels have made one."""
    sentinel = Sentinel(
        list(target.hosts),
        sentinel_kwargs={
            "password": sentinel_password,
            "socket_timeout": 5,
            "socket_connect_timeout": 5,
        },
    )
    return sentinel.master_for(
        target.master,
        redis_class=_ResendingReads,
        db=target.db,
        username=target.username,
        password=target.password,
        max_connections=_MAX_CONNECTIONS,
        retry=Retry(NoBackoff(), retries=0),
        **_CONNECTION_OPTIONS,
    )


def _cluster(target: RedisTarget) -> RedisCluster:
    """A cluster client; redis-py asks the nodes given for the slot map now, so a cluster
    none of whose nodes answer is ``ServiceUnavailable`` here already."""
    try:
        return _ResendingClusterReads(
            startup_nodes=[ClusterNode(host, port) for host, port in target.hosts],
            username=target.username,
            password=target.password,
            retry=Retry(NoBackoff(), retries=0),
            max_connections=_MAX_CONNECTIONS,
            **_CONNECTION_OPTIONS,
        )
    except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException) as exc:
        raise ServiceUnavailable(
            f"cannot reach Redis at {target.address} ({exc.__class__.__name__})"
        ) from None


# --- the writer's asyncio client ------------------------------------------------------------


class _AsyncResendingReads(redis.asyncio.Redis):
    """``_ResendingReads`` for the asyncio client (the writer's event loop)."""

    async def execute_command(self, *args, **options):  # noqa: ANN002, ANN003, ANN201
        return await _send_async(redis.asyncio.Redis.execute_command, self, args, options)


class _AsyncResendingClusterReads(redis.asyncio.cluster.RedisCluster):
    """``_ResendingClusterReads`` for the asyncio client."""

    async def execute_command(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        return await _send_async(
            redis.asyncio.cluster.RedisCluster.execute_command, self, args, kwargs
        )


_ASYNC_READS = redis.asyncio.retry.Retry(
    ExponentialBackoff(cap=2.0, base=0.1), retries=3, supported_errors=_RESEND_ERRORS
)


async def _send_async(execute, client, args, options):  # noqa: ANN001, ANN202
    if not may_resend(str(args[0])):
        return await execute(client, *args, **options)

    async def failed(_error: BaseException) -> None:
        return None

    return await _ASYNC_READS.call_with_retry(lambda: execute(client, *args, **options), failed)


#: Connections the writer's asyncio client opens at most (the handlings of one turn of its
#: event loop share a pipeline, ``Coalescing``, so few are in use at once).
_ASYNC_MAX_CONNECTIONS = 64


class _HiredisPacking:
    """Packs commands with hiredis in C through redis-py's own ``HiredisRespSerializer``, as its
    blocking client does when hiredis is installed (its asyncio client packs in Python: ~4 % of
    a writer's CPU per event). The bytes and the DataError for what cannot be sent are
    redis-py's (tests/unit/test_redis_packing.py)."""

    _serializer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        return self._serializer.pack(*args)


_PACKED_CONNECTIONS = {
    base: type(f"Packed{base.__name__}", (_HiredisPacking, base), {})
    for base in (
        redis.asyncio.Connection,
        redis.asyncio.SSLConnection,
        redis.asyncio.UnixDomainSocketConnection,
        redis.asyncio.sentinel.SentinelManagedConnection,
        redis.asyncio.sentinel.SentinelManagedSSLConnection,
    )
}


def _pack_with_hiredis(pool: redis.asyncio.ConnectionPool) -> None:
    """The pool's connections pack with hiredis (the cluster client's nodes keep their own)."""
    pool.connection_class = _PACKED_CONNECTIONS.get(pool.connection_class, pool.connection_class)


def connect_redis_async(
    url: str, *, sentinel_password: str | None = None
) -> redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster:
    """``connect_redis`` for an event loop: every form of ``PWASYNC_REDIS_URL``, no write
    ever repeated, connected on the first command. On one server a command waits (up to
    10 s) for one of the connections instead of opening one more."""
    try:
        target = parse_redis_url(url)
    except ValueError as exc:
        raise ConfigError(f"PWASYNC_REDIS_URL: {exc}") from None
    no_retry = redis.asyncio.retry.Retry(NoBackoff(), retries=0)
    if target.kind == "sentinel":
        sentinel = redis.asyncio.sentinel.Sentinel(
            list(target.hosts),
            sentinel_kwargs={
                "password": sentinel_password,
                "socket_timeout": 5,
                "socket_connect_timeout": 5,
            },
        )
        client = sentinel.master_for(
            target.master,
            redis_class=_AsyncResendingReads,
            db=target.db,
            username=target.username,
            password=target.password,
            max_connections=_ASYNC_MAX_CONNECTIONS * 4,
            retry=no_retry,
            **_CONNECTION_OPTIONS,
        )
        _pack_with_hiredis(client.connection_pool)
        return client
    if target.kind == "cluster":
        return _AsyncResendingClusterReads(
            startup_nodes=[
                redis.asyncio.cluster.ClusterNode(host, port) for host, port in target.hosts
            ],
            username=target.username,
            password=target.password,
            retry=no_retry,
            max_connections=_ASYNC_MAX_CONNECTIONS,
            **_CONNECTION_OPTIONS,
        )
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url,
        max_connections=_ASYNC_MAX_CONNECTIONS,
        timeout=10,
        retry=no_retry,
        **_CONNECTION_OPTIONS,
    )
    _pack_with_hiredis(pool)
    return _AsyncResendingReads(connection_pool=pool)


def connect_redis_async_for(settings: Settings) -> redis.asyncio.Redis:
    """``connect_redis_async`` with the settings' URL and the Sentinels' password."""
    sentinel_password = settings.redis_sentinel_password
    return connect_redis_async(
        settings.redis_url.get_secret_value(),
        sentinel_password=sentinel_password.get_secret_value() if sentinel_password else None,
    )


class Coalescing:
    """Commands that many coroutines send in one turn of the event loop go to Redis as one
    pipeline (not a transaction): one write and one round trip for all of them, and each
    caller gets its own reply, or its own error reply, as if it had sent alone. A failure of
    the connection fails every command of the pipeline (none is sent again). On a Redis
    Cluster the pipeline goes to each key's slot (the keys of one script are in one slot).

    A script that Redis no longer knows (NOSCRIPT: a restart, a failover) ran nothing, so it
    is loaded and sent once more."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._pending: list[tuple[tuple[Any, ...], Any, asyncio.Future]] = []
        self._flushing: asyncio.Task | None = None

    async def command(self, *args: Any) -> Any:
        return await self._queue(args, None)

    async def script(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Run a registered script (``client.register_script``) by its sha."""
        return await self._queue(("EVALSHA", script.sha, len(keys), *keys, *args), script)

    async def _queue(self, args: tuple[Any, ...], script: Any) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((args, script, future))
        if self._flushing is None:
            self._flushing = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # every command queued in this turn goes along
        self._flushing = None
        batch, self._pending = self._pending, []
        try:
            replies = await self._send([args for args, _, _ in batch])
            missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
            if missing:
                for script in {id(batch[i][1]): batch[i][1] for i in missing}.values():
                    await self._client.script_load(script.script)
                again = await self._send([batch[i][0] for i in missing])
                for index, reply in zip(missing, again, strict=True):
                    replies[index] = reply
        except BaseException as exc:  # noqa: BLE001 - every caller gets the failure
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, _, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _send(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for args in commands:
            pipe.execute_command(*args)
        return await pipe.execute(raise_on_error=False)


def key_node(client: redis.Redis, key: str) -> redis.Redis:
    """The client of the server holding ``key``: for a Redis Cluster, the master of the key's
    slot (every key of a scenario is in one slot), otherwise ``client`` itself.

    What must go to that one server goes through it: a pipeline of scripts (a cluster pipeline
    does not load scripts), ``INFO replication`` and ``WAIT`` (which counts the replicas that
    have the writes of its own connection, so it follows them in the same pipeline). Use it
    through ``on_key_node``, which keeps the slot map current."""
    if isinstance(client, RedisCluster):
        return client.get_redis_connection(client.get_node_from_key(key))
    return client


#: What a node that no longer serves a slot answers: it is gone, or a replica now, or the slot
#: moved. The cluster client then reads the slot map again (its own commands do that too).
_SLOT_MAP_STALE = (*_RESEND_ERRORS, redis.exceptions.MovedError, redis.exceptions.AskError,
                   redis.exceptions.ReadOnlyError)  # fmt: skip


@contextmanager
def on_key_node(client: redis.Redis, key: str) -> Iterator[redis.Redis]:
    """``key_node``, and after a failure that says the slot map is out of date (the master
    died and a replica took over, the slot moved), the map read again before the error goes
    on: the caller's retry reaches the new master. The error itself is the caller's (a
    retryable one, through ``redis_errors``)."""
    try:
        yield key_node(client, key)
    except _SLOT_MAP_STALE:
        if isinstance(client, RedisCluster):
            with suppress(Exception):  # no node answers yet: the next failure tries again
                client.nodes_manager.initialize()
        raise


#: Error replies that say "not now" rather than "never": out of memory (noeviction), a replica
#: after a failover, a script running too long, loading its data, no master, a cluster slot in
#: migration, a slot that moved (``key_node``). redis-py strips a known code into
#: ``status_code``; inside a Lua script the code follows the script's own prefix, hence the
#: search as well.
RETRYABLE_REPLIES = frozenset(
    {"OOM", "READONLY", "BUSY", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "MOVED", "ASK"}
)
_RETRYABLE_IN_TEXT = re.compile(r"(?:^|[\s:-])(" + "|".join(sorted(RETRYABLE_REPLIES)) + r")\b")


@contextmanager
def redis_errors(url: str) -> Iterator[None]:
    """Translate redis-py's failures into the error hierarchy: connection failures and the
    transient error replies into ``ServiceUnavailable``, any other error reply (a bug of ours:
    WRONGTYPE, a script error) into ``PermanentError``."""
    try:
        yield
    except REDIS_ERRORS as exc:
        raise ServiceUnavailable(
            f"cannot reach Redis at {redis_address(url)} ({exc.__class__.__name__})"
        ) from None
    except redis.exceptions.ResponseError as exc:
        raise response_error(url, exc) from None


def reply_text(value: bytes | str) -> str:
    """A reply as text, whichever way its client was made: ours decode replies
    (``decode_responses``), a client handed in by a caller may not."""
    return value.decode() if isinstance(value, bytes) else value


def response_error(url: str, exc: redis.exceptions.ResponseError) -> PwasyncError:
    """The error an error reply stands for (its first line: a script's reply can be long)."""
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    code = getattr(exc, "status_code", None) or text.split(" ", 1)[0]
    found = _RETRYABLE_IN_TEXT.search(text)
    if code not in RETRYABLE_REPLIES and found is not None:
        code = found.group(1)
    where = f"Redis at {redis_address(url)}"
    if isinstance(exc, redis.exceptions.MovedError | redis.exceptions.AskError):
        code = "MOVED"  # redis-py keeps only the slot and the node of the reply
    if code in RETRYABLE_REPLIES:
        return ServiceUnavailable(f"{where} refused the command for now ({code}: {text})")
    return PermanentError(f"{where} answered an error ({code}: {text})")


class Keys:
    """Every Redis key of one scenario."""

    def __init__(self, scenario: str) -> None:
        self.scenario = scenario
        self.prefix = f"pwasync:{{{scenario}}}"

    @property
    def watermark(self) -> str:
        """Poller: ProjectModifiedDate of the newest project already read (PWA wall clock)."""
        return f"{self.prefix}:poller:watermark"

    def task_events(self, task_id: object) -> str:
        """Writer: hash of assignee resource id -> the event written for them (JSON)."""
        return f"{self.prefix}:events:{task_id}"

    def endpoint(self, task_id: object) -> str:
        """Ledger: the task's latest endpoint window (JSON); expires when the window ends."""
        return f"{self.prefix}:endpoint:{task_id}"

    @property
    def ledger_endpoints(self) -> str:
        """Ledger: sorted set of task ids scored by the end of their window (ms)."""
        return f"{self.prefix}:ledger:endpoints"

    @property
    def ledger_claims(self) -> str:
        """Ledger: sorted set of task ids holding a slot for their first transfer, scored by the
        end of the claim's lease (ms)."""
        return f"{self.prefix}:ledger:claims"

    @property
    def ledger_held(self) -> str:
        """Ledger: sorted set of task ids held back by the endpoint limit, scored by since (ms)."""
        return f"{self.prefix}:ledger:held"

    @property
    def receiver_site(self) -> str:
        """Receiver: the PWA's site collection id, as ``pwasync events register`` read it."""
        return f"{self.prefix}:receiver:site-id"

    @property
    def ledger_held_payloads(self) -> str:
        """Ledger: hash of held task id -> its latest task.changed body."""
        return f"{self.prefix}:ledger:held-payloads"

    def ledger_day(self, day: str) -> str:
        """Ledger: number of endpoints allocated on a UTC day (YYYY-MM-DD)."""
        return f"{self.prefix}:ledger:allocated:{day}"

    # --- the writer (issue 6; README "Exactly-once effect", "Order", "Inside Graph's limits") ---

    def writer_task(self, task_id: object) -> str:
        """Writer: hash of the newest snapshot accepted for a task (``order``, ``change``) and
        ``dirty`` while a handling may have written to Graph without recording it."""
        return f"{self.prefix}:writer:task:{task_id}"

    def writer_lease(self, task_id: object) -> str:
        """Writer: the token of the writer working on a task now (expires with its lease)."""
        return f"{self.prefix}:writer:lease:{task_id}"

    def writer_failures(self, task_id: object) -> str:
        """Writer: hash of assignee resource id -> why they have no event (JSON)."""
        return f"{self.prefix}:writer:failures:{task_id}"

    @property
    def writer_failed_tasks(self) -> str:
        """Writer: set of the task ids that have assignee failures (for ``pwasync status``)."""
        return f"{self.prefix}:writer:failed-tasks"

    @property
    def writer_mailboxes(self) -> str:
        """Writer: hash of mailbox -> ``clean`` (held none of our events when first seen) or
        ``verify`` (held some: look events up before creating them)."""
        return f"{self.prefix}:writer:mailboxes"

    def writer_probe(self, mailbox: str) -> str:
        """Writer: held by the one writer asking Graph for a mailbox's state (a short lease)."""
        return f"{self.prefix}:writer:probe:{mailbox}"

    def run_events(self, correlation_id: str) -> str:
        """Writers: what the sync run with this correlation id did in Outlook (hash)."""
        return f"{self.prefix}:runs:events:{correlation_id}"

    @property
    def all_pattern(self) -> str:
        return f"{self.prefix}:*"
