"""Outlook's per-mailbox limits, shared by every writer replica through Redis.

Outlook allows an app 4 concurrent requests and 10,000 requests per 10 minutes per mailbox,
and answers 429 with Retry-After beyond them. Every writer replica asks here before it sends:

- **slots**: a lease-based semaphore per mailbox, a sorted set of request tokens scored by the
  end of their lease. A request holds one slot from before it is sent until its answer is in
  (a ``$batch`` item holds its own slot for the whole batch). The writer renews the leases of
  its slots in flight every few seconds (``keep_slots``), however long the request takes, so a
  writer that dies holding slots loses them within ``LEASE_SECONDS`` (a killed writer used to
  block its mailboxes for every replica for 45 s, the length of the longest request);
- **pause**: a key set with the Retry-After of a 429; while it exists no replica sends to
  that mailbox (other mailboxes go on);
- **budget**: requests per minute bucket; a request is admitted while the buckets that overlap
  the last 10 minutes hold fewer than the budget. Counting whole buckets overcounts a little,
  so the real sliding window is never exceeded. A grant says what the budget still holds, and
  requests sent on a slot the dispatcher handed on are counted afterwards (``charge``).

Graph counts these per app and mailbox, not per scenario: the keys are per (tenant, client id,
mailbox), so every scenario that signs in as one Entra app shares one set of limits for a
mailbox (two scenarios used to allow 4 in flight and 10,000 per 10 minutes each).

One Lua script decides for many mailboxes at once, with Redis's own clock (replicas' clocks
may differ), so a whole batch costs one round trip. Every key carries the app's hash tag, so
the keys one script touches are in one Redis Cluster slot.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio

from common.health import HEARTBEATS, Heartbeats, run_every_async
from common.redis_store import Coalescing, redis_errors, reply_text

LEASE_SECONDS = 10.0  # a slot whose writer stopped renewing it (died) is free after this
RENEW_SECONDS = 3.0  # slots in flight are renewed this often, however long the request takes
BUDGET_WINDOW_SECONDS = 600
BUDGET_BUCKET_SECONDS = 60
GRAPH_HOST = "graph.microsoft.com"

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local bucket = tonumber(ARGV[5])
local span = math.floor(window / bucket)
local current = math.floor(now / bucket)
local oldest = current - span
local out = {}
local a = 6
for i = 0, (#KEYS / 3) - 1 do
  local slots, pause, spent = KEYS[i * 3 + 1], KEYS[i * 3 + 2], KEYS[i * 3 + 3]
  local done = tonumber(ARGV[a])
  a = a + 1
  for j = 1, done do
    redis.call('ZREM', slots, ARGV[a])
    a = a + 1
  end
  local want = tonumber(ARGV[a])
  a = a + 1
  local tokens = {}
  for j = 1, want do
    tokens[j] = ARGV[a]
    a = a + 1
  end
  local granted, wait, unspent = 0, 0, 0
  local paused = redis.call('PTTL', pause)
  if paused > 0 then
    wait = paused
  else
    redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
    local free = limit - redis.call('ZCARD', slots)
    local used, first = 0, nil
    local buckets = redis.call('HGETALL', spent)
    for k = 1, #buckets, 2 do
      local b = tonumber(buckets[k])
      if b < oldest then
        redis.call('HDEL', spent, buckets[k])
      else
        used = used + tonumber(buckets[k + 1])
        if first == nil or b < first then first = b end
      end
    end
    local left = budget - used
    granted = math.max(0, math.min(want, free, left))
    unspent = math.max(0, left - granted)
    if left <= 0 and first ~= nil then
      wait = (first + span + 1) * bucket - now
    end
    for j = 1, granted do
      redis.call('ZADD', slots, now + lease, tokens[j])
    end
    if granted > 0 then
      redis.call('PEXPIRE', slots, lease * 2)
      redis.call('HINCRBY', spent, current, granted)
      redis.call('PEXPIRE', spent, window + bucket * 2)
    end
  end
  out[#out + 1] = granted
  out[#out + 1] = wait
  out[#out + 1] = unspent
end
return out
"""

_CHARGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
local bucket = tonumber(ARGV[3])
redis.call('HINCRBY', KEYS[1], math.floor(now / bucket), tonumber(ARGV[1]))
redis.call('PEXPIRE', KEYS[1], window + bucket * 2)
return 1
"""

_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
local lost = {}
local a = 2
for i = 1, #KEYS do
  local n = tonumber(ARGV[a])
  a = a + 1
  for j = 1, n do
    if redis.call('ZADD', KEYS[i], 'XX', 'CH', now + lease, ARGV[a]) == 0 then
      lost[#lost + 1] = ARGV[a]
    end
    a = a + 1
  end
  redis.call('PEXPIRE', KEYS[i], lease * 2)
end
return lost
"""

# KEYS: the slots of each mailbox; ARGV: per key, the number of its tokens, then the tokens.
_RELEASE = """
local a = 1
for i = 1, #KEYS do
  local n = tonumber(ARGV[a])
  for j = 1, n do
    redis.call('ZREM', KEYS[i], ARGV[a + j])
  end
  a = a + n + 1
end
return 1
"""

_PAUSE = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
"""


class GraphLimitKeys:
    """The Redis keys of Graph's limits for one Entra app (tenant, client id) at one Graph
    service, per mailbox. The service is part of the app's identity so that separate Graphs
    (a national cloud; each test's own sandbox) never share limits; every scenario of an app
    at graph.microsoft.com does."""

    def __init__(self, tenant_id: str, client_id: str, graph_host: str = GRAPH_HOST) -> None:
        app = "/".join(part.strip().lower() for part in (graph_host, tenant_id, client_id))
        # The hash tag is the app: a decision over many mailboxes is one script in one slot.
        self.prefix = "pwasync:graph:{" + app.replace("{", "").replace("}", "") + "}"

    @classmethod
    def of_app(cls, settings: Any) -> GraphLimitKeys:
        """The keys of the Entra app the settings sign in with (whatever their scenario)."""
        host = urlsplit(str(settings.graph_url)).netloc or GRAPH_HOST
        return cls(settings.tenant_id or "", settings.graph_client_id or "", host)

    def slots(self, mailbox: str) -> str:
        """Sorted set of the Graph requests in flight to a mailbox, by lease end (ms)."""
        return f"{self.prefix}:slots:{mailbox}"

    def pause(self, mailbox: str) -> str:
        """Exists while Graph asked every writer to leave a mailbox alone (429)."""
        return f"{self.prefix}:pause:{mailbox}"

    def budget(self, mailbox: str) -> str:
        """Hash of minute -> Graph requests sent to a mailbox in that minute."""
        return f"{self.prefix}:budget:{mailbox}"

    @property
    def all_pattern(self) -> str:
        return f"{self.prefix}:*"


@dataclass(frozen=True)
class Grant:
    tokens: tuple[str, ...]  # one per admitted request
    wait_seconds: float  # > 0: paused, or out of budget, for this long
    budget_left: int = 0  # requests the 10-minute budget still held after this grant


class MailboxLimiter:
    """The writer's side, on the asyncio client (one event loop owns it)."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        keys: GraphLimitKeys,
        redis_url: str,
        *,
        concurrency: int = 4,
        budget: int = 10_000,
        batched: Coalescing | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = client
        self._clock = clock
        self._keys = keys
        self._url = redis_url
        self.concurrency = concurrency
        self.budget = budget
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._pause = client.register_script(_PAUSE)
        self._release = client.register_script(_RELEASE)
        self._charge = client.register_script(_CHARGE)
        # Slot requests and releases go with whatever else the writer sends Redis in the same
        # turn of the event loop (the task store's scripts, when the store shares it).
        self._batched = batched or Coalescing(client)
        self._prefix = uuid.uuid4().hex[:12]
        self._counter = itertools.count(1)
        # mailbox -> token in flight -> when its lease was last set (this clock; -inf: lost)
        self._held: dict[str, dict[str, float]] = {}

    async def acquire(
        self, wanted: Mapping[str, int], released: Mapping[str, list[str]] | None = None
    ) -> dict[str, Grant]:
        """Admit up to ``wanted[mailbox]`` requests per mailbox; one round trip for all.
        ``released``: slots of answered requests of those mailboxes, given back first in the
        same script (a busy mailbox's slot goes from one request to the next in one trip)."""
        released = released or {}
        mailboxes = [m for m, n in wanted.items() if n > 0]
        if not mailboxes:
            return {}
        self._forget(released)
        keys: list[str] = []
        args: list[str | int | float] = [
            int(LEASE_SECONDS * 1000),
            self.concurrency,
            self.budget,
            BUDGET_WINDOW_SECONDS * 1000,
            BUDGET_BUCKET_SECONDS * 1000,
        ]
        offered: dict[str, list[str]] = {}
        for mailbox in mailboxes:
            keys += [
                self._keys.slots(mailbox),
                self._keys.pause(mailbox),
                self._keys.budget(mailbox),
            ]
            tokens = [
                f"{self._prefix}:{next(self._counter)}"
                for _ in range(min(wanted[mailbox], self.concurrency))
            ]
            offered[mailbox] = tokens
            done = released.get(mailbox, [])
            args += [len(done), *done, len(tokens), *tokens]
        asked = self._clock()  # Redis set the leases after this
        with redis_errors(self._url):
            answer = await self._batched.script(self._acquire, keys, args)
        grants = {}
        for index, mailbox in enumerate(mailboxes):
            granted, wait_ms, unspent = (int(n) for n in answer[index * 3 : index * 3 + 3])
            grants[mailbox] = Grant(tuple(offered[mailbox][:granted]), wait_ms / 1000, unspent)
            if granted:
                held = self._held.setdefault(mailbox, {})
                held.update(dict.fromkeys(grants[mailbox].tokens, asked))
        return grants

    def lease_alive(self, mailbox: str, token: str) -> bool:
        """The slot's lease holds for one more renewal period at least: a request may still
        start under it (the dispatcher's hand-on). False once renewals have failed that long
        (Redis unreachable), or Redis no longer had the slot when it was renewed."""
        since = self._held.get(mailbox, {}).get(token)
        return since is not None and self._clock() < since + LEASE_SECONDS - RENEW_SECONDS

    async def release(self, tokens: Mapping[str, list[str]]) -> None:
        """Give back answered requests' slots, every mailbox's in one script."""
        self._forget(tokens)
        held = {mailbox: given for mailbox, given in tokens.items() if given}
        if not held:
            return
        keys = [self._keys.slots(mailbox) for mailbox in held]
        with redis_errors(self._url):
            await self._batched.script(self._release, keys, _counted(held.values()))

    async def charge(self, mailbox: str, requests: int) -> None:
        """Count ``requests`` sent on slots handed on without a slot request (the dispatcher's
        hand-on) against the mailbox's budget, in Redis's current minute."""
        with redis_errors(self._url):
            await self._batched.script(
                self._charge,
                [self._keys.budget(mailbox)],
                [requests, BUDGET_WINDOW_SECONDS * 1000, BUDGET_BUCKET_SECONDS * 1000],
            )

    def _forget(self, tokens: Mapping[str, list[str]]) -> None:
        """Slots given back are not renewed any more."""
        for mailbox, released in tokens.items():
            held = self._held.get(mailbox)
            if held is not None:
                for token in released:
                    held.pop(token, None)
                if not held:
                    del self._held[mailbox]

    async def renew_slots(self) -> None:
        """Extend the lease of every slot this writer holds (one round trip)."""
        held = {mailbox: sorted(tokens) for mailbox, tokens in self._held.items() if tokens}
        if not held:
            return
        keys = [self._keys.slots(mailbox) for mailbox in held]
        args = [int(LEASE_SECONDS * 1000), *_counted(held.values())]
        asked = self._clock()
        with redis_errors(self._url):
            lost = {reply_text(token) for token in await self._renew(keys=keys, args=args)}
        for mailbox, tokens in held.items():
            leases = self._held.get(mailbox, {})
            for token in tokens:
                if token in leases:  # not given back meanwhile
                    leases[token] = float("-inf") if token in lost else asked

    async def keep_slots(self, stop: asyncio.Event, heartbeats: Heartbeats = HEARTBEATS) -> None:
        """Renew the slots in flight every RENEW_SECONDS until ``stop`` (run it as a task).
        A failed round (any error) is logged and the next one comes at the same pace: a
        longer wait would let the leases of requests still in flight run out."""
        await run_every_async(
            "graph-slot-renewer",
            RENEW_SECONDS,
            self.renew_slots,
            stop,
            heartbeats=heartbeats,
            max_backoff=RENEW_SECONDS,
        )

    async def pause(self, mailbox: str, seconds: float) -> None:
        """Every replica leaves ``mailbox`` alone for ``seconds`` (never shortens a pause)."""
        with redis_errors(self._url):
            await self._batched.script(
                self._pause, [self._keys.pause(mailbox)], [max(1, int(seconds * 1000))]
            )


def _counted(groups: Iterable[Sequence[str]]) -> list[str | int]:
    """A script's ARGV for its keys in turn: per key, the number of its tokens, then them
    (what ``_RENEW`` and ``_RELEASE`` read)."""
    args: list[str | int] = []
    for tokens in groups:
        args += [len(tokens), *tokens]
    return args


def paused_mailboxes(client: redis.Redis, keys: GraphLimitKeys, redis_url: str) -> dict[str, float]:
    """Mailboxes every replica is leaving alone now (a 429's Retry-After): seconds left."""
    prefix = keys.pause("")
    with redis_errors(redis_url):
        found = list(client.scan_iter(match=f"{prefix}*", count=1000))
        pipe = client.pipeline(transaction=False)
        for key in found:
            pipe.pttl(key)
        ttls = pipe.execute()
    return {key[len(prefix) :]: ttl / 1000 for key, ttl in zip(found, ttls, strict=True) if ttl > 0}
