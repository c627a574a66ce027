"""One poll at a time per scenario, whatever the number of poller replicas, and coalescing.

Every replica consumes ``sync.requested`` from the scenario's one queue. A replica that takes a
request first tries the scenario's **run lease** in Redis (``poller:lock``, an owner token with
a 20-second expiry that the running replica renews every 5 seconds, so a replica that dies
mid-poll holds it up for 20 s at most):

- it gets the lease: it runs the request, then every request that was queued meanwhile
  (merged, see ``merge_requests``), and gives the lease back only when nothing is queued;
- the lease is held by another run: the request is appended to ``poller:pending`` and acked.
  The running replica picks it up when its run ends, so overlapping requests **coalesce** into
  one more run instead of queueing up one run each.

"Try the lease, else queue" and "give the lease back unless something is queued" are each one
Lua script, so no request can slip in between and be stranded. If a replica dies holding the
lease, the lease expires; requests it left queued are picked up by the next run, and every
replica's scheduler loop publishes a resume request when it finds queued requests and no lease
(``orphaned``). Scheduled ticks are published once per tick (``claim_tick``: ``SET NX``), not
once per replica.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import redis

from common.logging import get_logger
from common.messages import SyncRequested
from common.redis_store import Keys, redis_errors
from services.poller.state import PollerKeys

log = get_logger(__name__)

LEASE_MS = 20_000
RENEW_EVERY_SECONDS = 5.0
TICK_MARK_SECONDS = 86_400

_ACQUIRE_OR_QUEUE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
redis.call('RPUSH', KEYS[2], ARGV[3])
return 0
"""
_RELEASE_IF_IDLE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('LLEN', KEYS[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 0
end
redis.call('DEL', KEYS[1])
return 1
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class QueuedRequest:
    request: SyncRequested
    correlation_id: str | None

    def to_json(self) -> str:
        return json.dumps(
            {"request": self.request.model_dump(mode="json"), "correlation_id": self.correlation_id}
        )

    @classmethod
    def from_json(cls, text: str) -> QueuedRequest:
        data = json.loads(text)
        return cls(SyncRequested.model_validate(data["request"]), data.get("correlation_id"))


def merge_requests(queued: list[QueuedRequest]) -> list[tuple[SyncRequested, list[str]]]:
    """At most two runs that cover every queued request (pure): one over everything (full when
    any unscoped request asked for full), and one over the union of the scoped requests'
    projects and tasks. Each comes with the correlation ids it answers."""
    if not queued:
        return []
    unscoped = [q for q in queued if not (q.request.project_ids or q.request.task_ids)]
    scoped = [q for q in queued if q.request.project_ids or q.request.task_ids]
    runs: list[tuple[SyncRequested, list[str]]] = []
    scenario = queued[0].request.scenario
    if unscoped:
        runs.append(
            (
                SyncRequested(
                    scenario=scenario,
                    full=any(q.request.full for q in unscoped),
                    allow_deletions=any(q.request.allow_deletions for q in unscoped),
                    trigger="schedule"
                    if all(q.request.trigger == "schedule" for q in unscoped)
                    else "manual",
                ),
                [q.correlation_id for q in unscoped if q.correlation_id],
            )
        )
    if scoped:
        projects = sorted({p for q in scoped for p in q.request.project_ids}, key=str)
        tasks = sorted({t for q in scoped for t in q.request.task_ids}, key=str)
        runs.append(
            (
                SyncRequested(
                    scenario=scenario,
                    project_ids=projects,
                    task_ids=tasks,
                    allow_deletions=any(q.request.allow_deletions for q in scoped),
                    trigger="publish"
                    if all(q.request.trigger == "publish" for q in scoped)
                    else "manual",
                ),
                [q.correlation_id for q in scoped if q.correlation_id],
            )
        )
    return runs


class RunCoordinator:
    def __init__(self, client: redis.Redis, keys: Keys, redis_url: str) -> None:
        self._redis = client
        self._keys = PollerKeys(keys)
        self._url = redis_url
        self._acquire_or_queue = client.register_script(_ACQUIRE_OR_QUEUE)
        self._release_if_idle = client.register_script(_RELEASE_IF_IDLE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def try_run(self, queued: QueuedRequest) -> str | None:
        """Take the run lease (returns its owner token) or queue the request (returns None)."""
        owner = uuid.uuid4().hex
        with redis_errors(self._url):
            got = self._acquire_or_queue(
                keys=[self._keys.lock, self._keys.pending], args=[owner, LEASE_MS, queued.to_json()]
            )
        return owner if got == 1 else None

    def take_queued(self) -> list[QueuedRequest]:
        with redis_errors(self._url):
            pipe = self._redis.pipeline(transaction=True)
            pipe.lrange(self._keys.pending, 0, -1)
            pipe.delete(self._keys.pending)
            raw, _ = pipe.execute()
        return [QueuedRequest.from_json(item) for item in raw]

    def requeue(self, queued: list[QueuedRequest]) -> None:
        if queued:
            with redis_errors(self._url):
                self._redis.rpush(self._keys.pending, *[q.to_json() for q in queued])

    def finish_if_idle(self, owner: str) -> bool:
        """Give the lease back unless requests are queued (then keep it, and return False)."""
        with redis_errors(self._url):
            result = self._release_if_idle(
                keys=[self._keys.lock, self._keys.pending], args=[owner, LEASE_MS]
            )
        return result != 0

    def release(self, owner: str) -> None:
        with redis_errors(self._url):
            self._release(keys=[self._keys.lock], args=[owner])

    def renew(self, owner: str) -> bool:
        with redis_errors(self._url):
            return bool(self._renew(keys=[self._keys.lock], args=[owner, LEASE_MS]))

    @contextmanager
    def kept_alive(self, owner: str, lost: threading.Event) -> Iterator[None]:
        """Renew the lease in the background while the block runs; ``lost`` is set if the lease
        was lost (the run must then stop: another replica may be running)."""
        done = threading.Event()
        lost.clear()

        def renew() -> None:
            while not done.wait(RENEW_EVERY_SECONDS):
                try:
                    if not self.renew(owner):
                        log.error("the run lease was lost; stopping this run")
                        lost.set()
                        return
                except Exception as exc:  # noqa: BLE001 - Redis away: the lease may expire
                    log.warning("could not renew the run lease", error=str(exc))

        thread = threading.Thread(target=renew, name="run-lease", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(timeout=2)

    def orphaned(self) -> bool:
        """Requests are queued but no run holds the lease (its replica died)."""
        with redis_errors(self._url):
            pipe = self._redis.pipeline(transaction=False)
            pipe.llen(self._keys.pending)
            pipe.exists(self._keys.lock)
            queued, locked = pipe.execute()
        return queued > 0 and not locked

    def claim_tick(self, due: datetime, replica: str) -> bool:
        """True for exactly one replica per scheduled tick. Asking again is safe: a replica that
        already holds the tick (its first answer was lost) is told True again."""
        key = self._keys.tick(due)
        with redis_errors(self._url):
            if self._redis.set(key, replica, nx=True, ex=TICK_MARK_SECONDS):
                return True
            return bool(self._redis.get(key) == replica)
