"""The writer's bookkeeping per task, in Redis: lease, order, event map, failures.

A handling is two scripts (two round trips), whatever the number of assignees:

``begin`` (atomic): takes the task's **lease** (a writer works on a task only while it holds
it, so two replicas never work on one task at once; the loser waits a little, then retries the
message later); refuses a **stale** snapshot (older than the newest accepted, see
``ordering``); records the message's key as the newest accepted, its lease token as the task's
**fence** (the last handling that began), and marks the task **dirty** (this handling may
write to Graph before it records what it wrote); and returns whether the task
was dirty already (an earlier handling died or did not learn whether its POST worked), the
**event map** (assignee resource id -> the event written for them) and the mailbox states.

``finish`` (atomic): records and forgets map entries, replaces the task's assignee failures,
clears ``dirty`` unless an outcome is unknown, turns a removal into a tombstone (the map goes,
the order record stays for ``TOMBSTONE``), and gives the lease back.

A lease lasts ``LEASE`` and is renewed every ``LEASE / 3`` while the handling runs, so a writer
that dies loses it within seconds. ``finish`` is fenced by the token: a writer that stalled past
its lease while nobody else began the task still records it all (nothing newer exists), but
leaves the task dirty. Once another handling has begun, the stalled one may only **add** the
events it created to assignees nobody has recorded (they are in Graph); it forgets, overwrites,
replaces failures and tombstones nothing, and marks the task dirty and **fenced**, so that
even the current holder (which began before and so did not look for what the stalled one left)
cannot clear it: only a handling that begins after it can. An event it created for an assignee
the other recorded differently stays in Graph unrecorded, and is logged.

Mailbox states (``writer:mailboxes``): the first time a mailbox is about to get an event in
this Redis's lifetime, the writer asks Graph whether it holds any event of this scenario:
``clean`` if not, ``verify`` if so (Redis lost its data: events exist that the map does not
know). Creates in a ``verify`` mailbox, and creates of a dirty task, look the event up first.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import redis
import redis.asyncio

from common import metrics
from common.errors import PermanentError
from common.logging import get_logger
from common.redis_store import Coalescing, Keys, redis_errors
from services.event_writer.planner import RecordedEvent

log = get_logger(__name__)

LEASE = timedelta(seconds=10)
TOMBSTONE = timedelta(days=30)
MailboxState = Literal["clean", "verify"]

_BEGIN = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return {'busy', redis.call('PTTL', KEYS[1])}
end
local newest = redis.call('HGET', KEYS[2], 'order')
if newest and ARGV[3] < newest then
  return {'stale', newest}
end
local dirty = redis.call('HGET', KEYS[2], 'dirty') or '0'
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[2], 'order', ARGV[3], 'change', ARGV[4], 'dirty', '1', 'fence', ARGV[1])
redis.call('HDEL', KEYS[2], 'fenced')
redis.call('PERSIST', KEYS[2])
local states = {}
if #ARGV > 4 then
  states = redis.call('HMGET', KEYS[4], unpack(ARGV, 5))
end
return {'ok', dirty, redis.call('HGETALL', KEYS[3]), states}
"""

_FINISH = """
local current = redis.call('HGET', KEYS[2], 'fence') == ARGV[1]
local held = redis.call('GET', KEYS[1]) == ARGV[1]
local a = 5
local n = tonumber(ARGV[a]); a = a + 1
if current then
  for i = 1, n do
    redis.call('HDEL', KEYS[3], ARGV[a]); a = a + 1
  end
else
  a = a + n
end
local strays = {}
n = tonumber(ARGV[a]); a = a + 1
for i = 1, n do
  if current then
    redis.call('HSET', KEYS[3], ARGV[a], ARGV[a + 1])
  elseif redis.call('HSETNX', KEYS[3], ARGV[a], ARGV[a + 1]) == 0 then
    local theirs = cjson.decode(redis.call('HGET', KEYS[3], ARGV[a]))
    if theirs['event_id'] ~= cjson.decode(ARGV[a + 1])['event_id'] then
      table.insert(strays, ARGV[a + 1])
    end
  end
  a = a + 2
end
if not current then
  redis.call('HSET', KEYS[2], 'dirty', '1', 'fenced', '1')
  return {0, strays}
end
redis.call('DEL', KEYS[4])
n = tonumber(ARGV[a]); a = a + 1
for i = 1, n do
  redis.call('HSET', KEYS[4], ARGV[a], ARGV[a + 1]); a = a + 2
end
if n > 0 then
  redis.call('SADD', KEYS[5], ARGV[4])
else
  redis.call('SREM', KEYS[5], ARGV[4])
end
if ARGV[2] == '0' and held and redis.call('HEXISTS', KEYS[2], 'fenced') == 0 then
  redis.call('HSET', KEYS[2], 'dirty', '0')
end
if tonumber(ARGV[3]) > 0 then
  redis.call('DEL', KEYS[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
if held then
  redis.call('DEL', KEYS[1])
end
return {held and 1 or 0, strays}
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class Busy:
    retry_after: float


@dataclass(frozen=True)
class Stale:
    newest: str


@dataclass(frozen=True)
class Begun:
    token: str
    was_dirty: bool
    recorded: dict[str, RecordedEvent]
    mailbox_states: dict[str, MailboxState] = field(default_factory=dict)


Begin = Busy | Stale | Begun


@dataclass(frozen=True)
class AssigneeFailure:
    """Why an assignee has no event for a task (permanent until something changes)."""

    resource_id: str
    assignee: str
    mailbox: str | None
    code: str
    reason: str
    at: str  # ISO 8601 UTC

    def to_json(self) -> str:
        return json.dumps(
            {
                "resource_id": str(self.resource_id),
                "assignee": self.assignee,
                "mailbox": self.mailbox,
                "code": self.code,
                "reason": self.reason,
                "at": self.at,
            }
        )


@dataclass
class Finish:
    """What a handling leaves behind."""

    record: list[RecordedEvent] = field(default_factory=list)
    forget: list[str] = field(default_factory=list)
    failures: list[AssigneeFailure] = field(default_factory=list)
    uncertain: bool = False  # a POST may have created an event nobody recorded
    removal: bool = False


class TaskStore:
    """The writer's side, on the asyncio client. The scripts of a handling's begin and
    finish go out with those of every other handling of the same turn of the event loop, in
    one pipeline (``Coalescing``): a busy writer makes a round trip per turn, not per task."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        keys: Keys,
        redis_url: str,
        batched: Coalescing | None = None,
    ) -> None:
        self._redis = client
        self._keys = keys
        self._url = redis_url
        self._begin = client.register_script(_BEGIN)
        self._finish = client.register_script(_FINISH)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._batched = batched or Coalescing(client)
        self._held: dict[str, str] = {}  # lease key -> token, renewed while held

    # --- a handling ----------------------------------------------------------------------------

    async def begin(self, task_id: str, order: str, change: str, mailboxes: list[str]) -> Begin:
        token = secrets.token_hex(16)  # as random as uuid4's hex, in a third of the time
        lease_key = self._keys.writer_lease(task_id)
        with redis_errors(self._url):
            answer = await self._batched.script(
                self._begin,
                [
                    lease_key,
                    self._keys.writer_task(task_id),
                    self._keys.task_events(task_id),
                    self._keys.writer_mailboxes,
                ],
                [token, _ms(LEASE), order, change, *mailboxes],
            )
        kind = answer[0]
        if kind == "busy":
            return Busy(max(int(answer[1]), 0) / 1000)
        if kind == "stale":
            return Stale(answer[1])
        self._held[lease_key] = token
        raw = answer[2]
        recorded = _parse_map(task_id, dict(zip(raw[::2], raw[1::2], strict=True)))
        states = {
            mailbox: state
            for mailbox, state in zip(mailboxes, answer[3], strict=True)
            if state in ("clean", "verify")
        }
        return Begun(token, answer[1] == "1", recorded, states)

    async def finish(self, task_id: str, token: str, outcome: Finish) -> bool:
        """Record the outcome and give the lease back; False when the lease had been lost."""
        lease_key = self._keys.writer_lease(task_id)
        try:
            with redis_errors(self._url):
                answer = await self._batched.script(
                    self._finish,
                    [
                        lease_key,
                        self._keys.writer_task(task_id),
                        self._keys.task_events(task_id),
                        self._keys.writer_failures(task_id),
                        self._keys.writer_failed_tasks,
                    ],
                    _finish_args(task_id, token, outcome),
                )
        finally:
            self._held.pop(lease_key, None)
        for failure in outcome.failures:
            metrics.ASSIGNEE_FAILURES.labels(failure.code).inc()
        held, strays = answer
        if not held:
            log.warning("the task's lease ran out before its outcome was recorded")
        for stray in strays:
            # Another writer recorded its own event for this assignee meanwhile; this one
            # stays in Graph unrecorded, and the task dirty.
            entry = json.loads(stray)
            log.error(
                "an event written after the lease ran out was not recorded",
                task_id=str(task_id),
                mailbox=entry["mailbox"],
                event_id=entry["event_id"],
            )
        return bool(held)

    async def abandon(self, task_id: str, token: str) -> None:
        """Give the lease back without recording anything; the task stays dirty."""
        lease_key = self._keys.writer_lease(task_id)
        self._held.pop(lease_key, None)
        with redis_errors(self._url):
            await self._batched.script(self._release, [lease_key], [token])

    # --- mailboxes -----------------------------------------------------------------------------

    async def mark_mailbox(self, mailbox: str, state: MailboxState) -> None:
        """``verify`` always wins: a mailbox known to hold unrecorded events stays so."""
        with redis_errors(self._url):
            if state == "verify":
                await self._redis.hset(self._keys.writer_mailboxes, mailbox, state)
            else:
                await self._redis.hsetnx(self._keys.writer_mailboxes, mailbox, state)

    async def mailbox_state(self, mailbox: str) -> MailboxState | None:
        with redis_errors(self._url):
            state = await self._redis.hget(self._keys.writer_mailboxes, mailbox)
        return state if state in ("clean", "verify") else None

    async def claim_probe(self, mailbox: str, token: str) -> bool:
        """Only one writer at a time asks Graph about a mailbox, and nobody creates in it
        meanwhile; so a probe never sees another writer's brand-new event."""
        with redis_errors(self._url):
            return bool(
                await self._redis.set(
                    self._keys.writer_probe(mailbox), token, nx=True, px=_ms(LEASE)
                )
            )

    async def release_probe(self, mailbox: str, token: str) -> None:
        with redis_errors(self._url):
            await self._release(keys=[self._keys.writer_probe(mailbox)], args=[token])

    # --- leases --------------------------------------------------------------------------------

    async def renew_leases(self) -> None:
        """Extend every lease this writer holds (one pipeline, to the slot's master on a Redis
        Cluster); a failure is the caller's loop's to log and retry."""
        held = list(self._held.items())
        if not held:
            return
        with redis_errors(self._url):
            await asyncio.gather(
                *(
                    self._batched.script(self._renew, [key], [token, _ms(LEASE)])
                    for key, token in held
                )
            )


class TaskReports:
    """What the writer recorded, read without a lease (dry runs, ``pwasync status``)."""

    def __init__(self, client: redis.Redis, keys: Keys, redis_url: str) -> None:
        self._redis = client
        self._keys = keys
        self._url = redis_url

    def recorded(self, task_id: str) -> dict[str, RecordedEvent]:
        with redis_errors(self._url):
            raw = self._redis.hgetall(self._keys.task_events(task_id))
        return _parse_map(task_id, raw)

    def handling(self, task_id: str) -> dict[str, str]:
        """The task's order record, read without a lease (``pwasync explain``): ``order`` (the
        newest snapshot accepted, ``ordering.order_key``), its ``change`` and ``dirty``."""
        with redis_errors(self._url):
            record = self._redis.hgetall(self._keys.writer_task(task_id))
        return {k: record[k] for k in ("order", "change", "dirty") if k in record}

    def failures_of(self, task_id: str) -> list[dict[str, Any]]:
        """One task's assignee failures (``AssigneeFailure.to_json``), read without a lease."""
        with redis_errors(self._url):
            values = self._redis.hvals(self._keys.writer_failures(task_id))
        return [json.loads(v) for v in values]

    def failures(self) -> dict[str, list[dict[str, Any]]]:
        """Every task with assignee failures -> the failures."""
        with redis_errors(self._url):
            tasks = sorted(self._redis.smembers(self._keys.writer_failed_tasks))
            report = {}
            for task in tasks:
                values = self._redis.hvals(self._keys.writer_failures(task))
                report[task] = [json.loads(v) for v in values]
        return report


def _finish_args(task_id: str, token: str, outcome: Finish) -> list[Any]:
    args: list[Any] = [
        token,
        "1" if outcome.uncertain else "0",
        _ms(TOMBSTONE) if outcome.removal else 0,
        str(task_id),
        len(outcome.forget),
        *[str(r) for r in outcome.forget],
        len(outcome.record),
    ]
    for event in outcome.record:
        args += [str(event.resource_id), _map_value(event)]
    args.append(len(outcome.failures))
    for failure in outcome.failures:
        args += [str(failure.resource_id), failure.to_json()]
    return args


def _ms(duration: timedelta) -> int:
    return int(duration.total_seconds() * 1000)


def _map_value(event: RecordedEvent) -> str:
    return json.dumps(
        {"mailbox": event.mailbox, "event_id": event.event_id, "fingerprint": event.fingerprint}
    )


def _parse_map(task_id: str, raw: dict[str, str]) -> dict[str, RecordedEvent]:
    recorded = {}
    for key, value in raw.items():
        try:
            data = json.loads(value)
            resource_id = key
            recorded[resource_id] = RecordedEvent(
                resource_id=resource_id,
                mailbox=data["mailbox"],
                event_id=data["event_id"],
                fingerprint=data.get("fingerprint", ""),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise PermanentError(f"corrupt event map entry for task {task_id}: {exc}") from None
    return recorded
