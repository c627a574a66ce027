"""Redis at the edge: the connection and the key layout of a scenario.

Every key of a scenario shares the hash tag ``{scenario}``, so the keys one operation touches
are in one Redis Cluster slot (Lua scripts and MULTI need that), and several scenarios can share
one Redis without seeing each other's keys.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.exceptions
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

from common.errors import PermanentError, PwasyncError, ServiceUnavailable

REDIS_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
)


def redis_address(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname}:{parts.port or 6379}"


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

    _reads = Retry(
        ExponentialBackoff(cap=2.0, base=0.1), retries=3, supported_errors=_RESEND_ERRORS
    )

    def execute_command(self, *args, **options):  # noqa: ANN002, ANN003, ANN201 - redis-py's
        if not may_resend(str(args[0])):
            return redis.Redis.execute_command(self, *args, **options)
        return self._reads.call_with_retry(
            lambda: redis.Redis.execute_command(self, *args, **options), lambda _error: None
        )


class _AsyncResendingReads(redis.asyncio.Redis):
    """``_ResendingReads`` for the asyncio client (the writer's event loop)."""

    _reads = redis.asyncio.retry.Retry(
        ExponentialBackoff(cap=2.0, base=0.1), retries=3, supported_errors=_RESEND_ERRORS
    )

    async def execute_command(self, *args, **options):  # noqa: ANN002, ANN003, ANN201
        if not may_resend(str(args[0])):
            return await redis.asyncio.Redis.execute_command(self, *args, **options)

        async def failed(_error: BaseException) -> None:
            return None

        return await self._reads.call_with_retry(
            lambda: redis.asyncio.Redis.execute_command(self, *args, **options), failed
        )


def connect_redis_async(url: str) -> redis.asyncio.Redis:
    """``connect_redis`` for an event loop: the same settings, no write ever repeated. A
    command waits (up to 10 s) for one of 64 connections: hundreds of handlings at once share
    them instead of opening one each."""
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url,
        max_connections=64,
        timeout=10,
        decode_responses=True,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
        retry=redis.asyncio.retry.Retry(NoBackoff(), retries=0),
    )
    return _AsyncResendingReads(connection_pool=pool)


class Coalescing:
    """Commands that many coroutines send in one turn of the event loop go to Redis as one
    pipeline (not a transaction): one write and one round trip for all of them, and each
    caller gets its own reply, or its own error reply, as if it had sent alone. A failure of
    the connection fails every command of the pipeline (none is sent again).

    A script that Redis no longer knows (NOSCRIPT: a restart, a failover) ran nothing, so it
    is loaded and sent once more."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
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


def connect_redis(url: str) -> redis.Redis:
    """A client that never repeats a write (see ``_ResendingReads``); ``ping`` it to learn
    whether Redis is there."""
    return _ResendingReads.from_url(
        url,
        # One connection per thread in use; redis-py's default of 100 is below what a writer
        # with hundreds of handler threads needs (it fails with MaxConnectionsError).
        max_connections=1024,
        decode_responses=True,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
        retry=Retry(NoBackoff(), retries=0),
    )


#: Error replies that say "not now" rather than "never": out of memory (noeviction), a replica
#: after a failover, a script running too long, loading its data, no master, a cluster slot in
#: migration. redis-py strips a known code into ``status_code``; inside a Lua script the code
#: follows the script's own prefix, hence the search as well.
RETRYABLE_REPLIES = frozenset(
    {"OOM", "READONLY", "BUSY", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN"}
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


def response_error(url: str, exc: redis.exceptions.ResponseError) -> PwasyncError:
    """The error an error reply stands for (its first line: a script's reply can be long)."""
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    code = getattr(exc, "status_code", None) or text.split(" ", 1)[0]
    found = _RETRYABLE_IN_TEXT.search(text)
    if code not in RETRYABLE_REPLIES and found is not None:
        code = found.group(1)
    where = f"Redis at {redis_address(url)}"
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
