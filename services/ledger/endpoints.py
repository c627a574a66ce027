"""The billing rule, exactly: one endpoint per unique task per 30 calendar days.

An endpoint is allocated at the first successful transfer of a task and lasts 30 days from that
transfer; any further transfer of the task inside the window allocates nothing, whatever the
number of assignees, redeliveries, replicas or syncs; after the window ends, the next successful
transfer allocates a new one. A failed transfer publishes nothing and allocates nothing.

Time is the transfer's own time (carried by ``transfer.succeeded``), never the moment the ledger
processes the message, so a ledger that was down, a redelivery or a reordering count the same.
A transfer allocates exactly when the task's latest window has ended at its time; a transfer
older than the task's current window (a late message, a clock that stepped back) allocates
nothing.

The endpoint limit (``PWASYNC_ENDPOINT_LIMIT``) is enforced where Outlook is written, before any
event of a task without an endpoint is created: the writer **claims** a slot atomically (a Lua
script counts endpoints in use plus open claims against the limit); with no slot the task is
**held** with its latest ``task.changed`` body and reported, and the ledger releases held tasks
(republishing them) as soon as slots free up. A claim is a lease: the allocation of the
successful transfer replaces it, a transfer that wrote nothing gives it back, and a writer that
died holding one loses it when the lease ends.

Every key carries the scenario's hash tag, so each script touches one Redis Cluster slot. Each
decision is one script, so it is atomic however many writers and ledger replicas run.
Key expiries are only garbage collection: decisions compare the stored times themselves.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import redis

from common.errors import ServiceUnavailable
from common.redis_store import Keys, on_key_node, redis_errors, reply_text

WINDOW = timedelta(days=30)
#: How long a claim holds a slot without its transfer: far above the worst case of writing one
#: task (Graph timeouts x retries), far below anything an operator would notice as a leak.
CLAIM_LEASE = timedelta(minutes=15)
#: A held task whose release did not finish (its body not confirmed, the ledger gone) is
#: released again after this: twice the releaser's interval, far above one round's publishes.
RELEASE_AGAIN_AFTER = timedelta(seconds=60)
#: How long an allocation waits for a replica to hold it before its transfer is acked.
REPLICA_WAIT = timedelta(seconds=2)
#: How often the ledger asks Redis how many replicas it has.
REPLICAS_CHECK_SECONDS = 10.0
#: Days of allocation history kept for `pwasync usage`.
HISTORY_DAYS = 30


class Claim(StrEnum):
    HOLDS = "holds"  # the task holds an endpoint: it syncs whatever the limit
    CLAIMED = "claimed"  # a slot is reserved for its first transfer
    HELD = "held"  # no slot: held back and reported until one frees up


@dataclass(frozen=True)
class Endpoint:
    task_id: str
    project_id: str
    allocated_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class HeldTask:
    task_id: str
    project_id: str | None
    since: datetime
    # As the held task.changed named them (it is the task's latest snapshot).
    task_name: str = ""
    project_name: str = ""


# --- scripts (KEYS are all under one hash tag) --------------------------------------------------

# KEYS: endpoint key, endpoints index, claims, held, held payloads, day counter
# ARGV: task, record json, transfer ms, expires ms, now ms, day counter ttl s
_ALLOCATE = """
local current = redis.call('GET', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if current then
  local held = cjson.decode(current)
  if tonumber(held['expires_ms']) > tonumber(ARGV[3]) then
    return 0
  end
end
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
if tonumber(ARGV[4]) <= tonumber(ARGV[5]) then
  return -1
end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('INCR', KEYS[6])
redis.call('EXPIRE', KEYS[6], ARGV[6])
return 1
"""

# KEYS: endpoints index, claims, held, held payloads
# ARGV: task, now ms, limit, lease ms, payload
_CLAIM = """
local now = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local holds = redis.call('ZSCORE', KEYS[1], ARGV[1])
if holds then
  return 'holds'
end
local limit = tonumber(ARGV[3])
local claimed = redis.call('ZSCORE', KEYS[2], ARGV[1])
if claimed or limit == 0 or
   redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2]) < limit then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('HDEL', KEYS[4], ARGV[1])
  return 'claimed'
end
redis.call('ZADD', KEYS[3], 'NX', now, ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[5])
return 'held'
"""

# KEYS: endpoints index, claims, held, held payloads
# ARGV: now ms, limit, lease ms, most to release, release again after ms
# A held task is released by reserving its slot (a claim) while it stays held; the ledger
# removes it from the held list only once its body was published (``_FORGET_RELEASED``). A held
# task that holds a claim is one whose release was cut short: it goes out again once that
# reservation is older than a release takes, on its own slot.
_RESERVE_HELD = """
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local lease = tonumber(ARGV[3])
local again = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local free = tonumber(ARGV[4])
if limit > 0 then
  free = limit - redis.call('ZCARD', KEYS[1]) - redis.call('ZCARD', KEYS[2])
end
local released = {}
for _, task in ipairs(redis.call('ZRANGE', KEYS[3], 0, tonumber(ARGV[4]) - 1)) do
  local payload = redis.call('HGET', KEYS[4], task)
  local reserved = redis.call('ZSCORE', KEYS[2], task)
  if not payload then
    redis.call('ZREM', KEYS[3], task)
  elseif reserved then
    if tonumber(reserved) - lease + again <= now then
      redis.call('ZADD', KEYS[2], now + lease, task)
      table.insert(released, task)
      table.insert(released, payload)
    end
  elseif free > 0 then
    free = free - 1
    redis.call('ZADD', KEYS[2], now + lease, task)
    table.insert(released, task)
    table.insert(released, payload)
  else
    break
  end
end
return released
"""

# KEYS: held, held payloads; ARGV: task, payload, task, payload, ...
# Only the payload that was published: a newer one stored meanwhile stays held.
_FORGET_RELEASED = """
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[i + 1] then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
  end
end
return 1
"""


class ReplicaCount:
    """How many replicas the Redis primary has now (``INFO replication``), asked at most every
    ``REPLICAS_CHECK_SECONDS``. With none, there is nothing to wait for (WAIT would block until
    its timeout); a replica that joins is waited for within seconds. In a Redis Cluster, the
    primary is the one of ``key``'s slot (``on_key_node``): every key of the scenario is there."""

    def __init__(
        self,
        client: redis.Redis,
        redis_url: str,
        key: str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = client
        self._key = key
        self._url = redis_url
        self._clock = clock
        self._count = 0
        self._asked_at: float | None = None

    def connected(self) -> int:
        now = self._clock()
        if self._asked_at is None or now - self._asked_at >= REPLICAS_CHECK_SECONDS:
            with redis_errors(self._url), on_key_node(self._redis, self._key) as primary:
                info = primary.info("replication")
            self._count = int(info.get("connected_slaves", 0))
            self._asked_at = now
        return self._count


class EndpointLedger:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        redis_url: str,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        window: timedelta = WINDOW,
        replica_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = client
        self._keys = keys
        self._url = redis_url
        self._clock = clock
        self._window = window
        self._replicas = ReplicaCount(client, redis_url, keys.ledger_endpoints, clock=replica_clock)
        self._allocate = client.register_script(_ALLOCATE)
        self._claim = client.register_script(_CLAIM)
        self._reserve_held = client.register_script(_RESERVE_HELD)
        self._forget_released_script = client.register_script(_FORGET_RELEASED)

    # --- the ledger service ------------------------------------------------------------------

    def allocate(self, task_id: str, project_id: str, transferred_at: datetime) -> bool:
        """Record a successful transfer. True when it allocated a new endpoint."""
        return self.allocate_many([(task_id, project_id, transferred_at)])[0]

    def allocate_many(self, transfers: list[tuple[str, str, datetime]]) -> list[bool]:
        """Record successful transfers (task, project, time), in one round trip and one WAIT
        for them all; per transfer, True when it allocated a new endpoint."""
        replicas = self._replicas.connected()
        # The scripts and WAIT on one connection (WAIT waits for that connection's writes), to
        # the primary of the scenario's slot in a Redis Cluster.
        with (
            redis_errors(self._url),
            on_key_node(self._redis, self._keys.ledger_endpoints) as primary,
        ):
            pipe = primary.pipeline(transaction=False)
            for task_id, project_id, transferred_at in transfers:
                self._queue_allocation(pipe, task_id, project_id, transferred_at)
            if replicas:
                pipe.wait(1, _ms_duration(REPLICA_WAIT))
            answers = pipe.execute()
        if replicas and int(answers[-1]) < 1:
            # Acked now, the transfers would be gone with allocations that only the primary
            # has: a failover to a replica would lose them. Retried, the script allocates
            # nothing twice, and WAIT asks again.
            seconds = REPLICA_WAIT.total_seconds()
            raise ServiceUnavailable(
                f"no Redis replica confirmed the allocation within {seconds:g} s"
            )
        return [int(answer) == 1 for answer in answers[: len(transfers)]]

    def _queue_allocation(
        self, pipe: Any, task_id: str, project_id: str, transferred_at: datetime
    ) -> None:
        expires_at = transferred_at + self._window
        record = json.dumps(
            {
                "task_id": str(task_id),
                "project_id": str(project_id),
                "allocated_ms": _ms(transferred_at),
                "expires_ms": _ms(expires_at),
            }
        )
        day_key = self._keys.ledger_day(transferred_at.astimezone(UTC).date().isoformat())
        self._allocate(
            keys=[
                self._keys.endpoint(task_id),
                self._keys.ledger_endpoints,
                self._keys.ledger_claims,
                self._keys.ledger_held,
                self._keys.ledger_held_payloads,
                day_key,
            ],
            args=[
                str(task_id),
                record,
                _ms(transferred_at),
                _ms(expires_at),
                _ms(self._clock()),
                int(timedelta(days=HISTORY_DAYS + 2).total_seconds()),
            ],
            client=pipe,
        )

    def release_held(
        self, limit: int, publish: Callable[[str], None], *, most: int = 100
    ) -> list[str]:
        """Send held tasks back to the writers while slots are free (oldest first); returns the
        task.changed bodies published.

        Publish first, forget after: ``publish`` must return only once the broker confirmed
        the body. A body not confirmed (or a ledger that dies) leaves its task held, its slot
        reserved, and it goes out again after ``RELEASE_AGAIN_AFTER``; a body published twice
        is dropped by the writer's ordering key.
        """
        with redis_errors(self._url):
            flat = self._reserve_held(
                keys=self._claim_keys(),
                args=[
                    _ms(self._clock()),
                    limit,
                    _ms_duration(CLAIM_LEASE),
                    most,
                    _ms_duration(RELEASE_AGAIN_AFTER),
                ],
            )
        reserved = [(reply_text(flat[i]), reply_text(flat[i + 1])) for i in range(0, len(flat), 2)]
        published: list[tuple[str, str]] = []
        try:
            for task, body in reserved:
                publish(body)
                published.append((task, body))
        finally:
            if published:
                self._forget_released(published)
        return [body for _, body in published]

    def _forget_released(self, published: list[tuple[str, str]]) -> None:
        with redis_errors(self._url):
            self._forget_released_script(
                keys=[self._keys.ledger_held, self._keys.ledger_held_payloads],
                args=[value for pair in published for value in pair],
            )

    # --- the writer's gate -------------------------------------------------------------------

    def claim(self, task_id: str, limit: int, payload: str) -> Claim:
        """Before the first transfer of a task: may it take an endpoint under ``limit``?"""
        with redis_errors(self._url):
            result = self._claim(
                keys=self._claim_keys(),
                args=[str(task_id), _ms(self._clock()), limit, _ms_duration(CLAIM_LEASE), payload],
            )
        return Claim(result if isinstance(result, str) else result.decode("utf-8"))

    def give_back(self, task_id: str) -> None:
        """The claimed transfer wrote nothing (no mailbox could take it): free the slot."""
        with redis_errors(self._url):
            self._redis.zrem(self._keys.ledger_claims, str(task_id))

    def forget_held(self, task_id: str) -> None:
        """A held task left the selection: it waits for nothing any more."""
        with redis_errors(self._url):
            pipe = self._redis.pipeline(transaction=True)
            pipe.zrem(self._keys.ledger_held, str(task_id))
            pipe.hdel(self._keys.ledger_held_payloads, str(task_id))
            pipe.execute()

    # --- reports -----------------------------------------------------------------------------

    def in_use(self) -> list[Endpoint]:
        """Every endpoint held now, oldest first."""
        now = _ms(self._clock())
        with redis_errors(self._url):
            tasks = self._redis.zrangebyscore(self._keys.ledger_endpoints, f"({now}", "+inf")
            values = self._redis.mget([self._keys.endpoint(t) for t in tasks]) if tasks else []
        # None: expired between the two reads
        endpoints = [_endpoint(value) for value in values if value is not None]
        return sorted(endpoints, key=lambda e: (e.allocated_at, str(e.task_id)))

    def count_in_use(self) -> int:
        with redis_errors(self._url):
            return int(
                self._redis.zcount(self._keys.ledger_endpoints, f"({_ms(self._clock())}", "+inf")
            )

    def count_held(self) -> int:
        with redis_errors(self._url):
            return int(self._redis.zcard(self._keys.ledger_held))

    def held(self) -> list[HeldTask]:
        with redis_errors(self._url):
            entries = self._redis.zrange(self._keys.ledger_held, 0, -1, withscores=True)
            payloads = (
                self._redis.hmget(self._keys.ledger_held_payloads, [t for t, _ in entries])
                if entries
                else []
            )
        return [
            _held(task, since, payload)
            for (task, since), payload in zip(entries, payloads, strict=True)
        ]

    def endpoint_of(self, task_id: str) -> Endpoint | None:
        """The task's endpoint while it lasts (``pwasync explain``)."""
        with redis_errors(self._url):
            value = self._redis.get(self._keys.endpoint(task_id))
        endpoint = _endpoint(value) if value else None
        return endpoint if endpoint and endpoint.expires_at > self._clock() else None

    def held_of(self, task_id: str) -> HeldTask | None:
        """The task when the endpoint limit holds it back, else None."""
        with redis_errors(self._url):
            since = self._redis.zscore(self._keys.ledger_held, str(task_id))
            payload = self._redis.hget(self._keys.ledger_held_payloads, str(task_id))
        return _held(str(task_id), since, payload) if since is not None else None

    def history(self, days: int = HISTORY_DAYS) -> dict[str, int]:
        """Allocations per UTC day for the last ``days`` days, oldest first (zeros included)."""
        today = self._clock().astimezone(UTC).date()
        dates = [(today - timedelta(days=n)).isoformat() for n in range(days - 1, -1, -1)]
        with redis_errors(self._url):
            counts = self._redis.mget([self._keys.ledger_day(d) for d in dates])
        return {d: int(c or 0) for d, c in zip(dates, counts, strict=True)}

    def _claim_keys(self) -> list[str]:
        return [
            self._keys.ledger_endpoints,
            self._keys.ledger_claims,
            self._keys.ledger_held,
            self._keys.ledger_held_payloads,
        ]


def _endpoint(value: str) -> Endpoint:
    data = json.loads(value)
    return Endpoint(
        task_id=data["task_id"],
        project_id=data["project_id"],
        allocated_at=_from_ms(data["allocated_ms"]),
        expires_at=_from_ms(data["expires_ms"]),
    )


def _held(task: str, since: float, payload: str | None) -> HeldTask:
    data = json.loads(payload) if payload else {}
    project = data.get("project_id")
    return HeldTask(
        task,
        project or None,
        _from_ms(int(since)),
        task_name=str(data.get("task_name") or ""),
        project_name=str(data.get("project_name") or ""),
    )


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _ms_duration(duration: timedelta) -> int:
    return int(duration.total_seconds() * 1000)


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
