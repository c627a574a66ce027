"""One poll at a time per scenario, whatever the number of poller replicas, and coalescing.

Every replica consumes ``sync.requested`` from the scenario's one queue and only **queues** the
request in Redis (``poller:pending``), then acks it: a sync never runs inside a delivery, so no
run can outlast RabbitMQ's ``consumer_timeout``. Each replica's run loop then tries the
scenario's **run lease** (``poller:lock``, an owner token with a 20-second expiry that the
running replica renews every 5 seconds, so a replica that dies mid-poll holds it up for 20 s at
most). The lease holder:

- moves everything pending onto ``poller:processing`` and runs it, merged (``merge_requests``);
  requests arriving meanwhile wait in ``pending`` and **coalesce** into one more run;
- clears ``processing`` when that run is done, and gives the lease back only when nothing is
  pending.

Only the lease holder moves into or clears ``processing`` (each script checks the token first),
so it is the scenario's one list of requests taken but not finished. A replica that dies (even
SIGKILL) leaves its requests there; the next replica that takes the lease finds them in the same
key and runs them before anything new. A holder that stalled past its lease cannot clear what
the next holder took over: its scripts find another token and do nothing.
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

# Idempotent by token, so a retried command whose reply was lost gets the same answer.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
return 0
"""
# Move every pending request onto the processing list; return the list (false: not the holder).
_TAKE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
while redis.call('LMOVE', KEYS[2], KEYS[3], 'LEFT', 'RIGHT') do end
return redis.call('LRANGE', KEYS[3], 0, -1)
"""
# The run of the processing list is done: clear it, and give the lease back unless more is
# pending. -1: not the holder (nothing touched), 0: more pending (lease kept), 1: released.
_FINISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('DEL', KEYS[3])
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
        self._acquire = client.register_script(_ACQUIRE)
        self._take = client.register_script(_TAKE)
        self._finish = client.register_script(_FINISH)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def enqueue(self, queued: QueuedRequest) -> None:
        """Keep a request for the next run (a repeat only merges into the same run)."""
        with redis_errors(self._url):
            self._redis.rpush(self._keys.pending, queued.to_json())

    def has_work(self) -> bool:
        """Requests are pending, or were taken by a run that did not finish them."""
        with redis_errors(self._url):
            pipe = self._redis.pipeline(transaction=False)
            pipe.llen(self._keys.pending)
            pipe.llen(self._keys.processing)
            pending, processing = pipe.execute()
        return pending + processing > 0

    def try_lease(self) -> str | None:
        """Take the run lease: its owner token, or None while another run holds it."""
        owner = uuid.uuid4().hex
        with redis_errors(self._url):
            got = self._acquire(keys=[self._keys.lock], args=[owner, LEASE_MS])
        return owner if got == 1 else None

    def take(self, owner: str) -> list[QueuedRequest] | None:
        """Move the pending requests onto the processing list and return all of it (with what
        a dead holder left there first); None when ``owner`` no longer holds the lease."""
        with redis_errors(self._url):
            raw = self._take(
                keys=[self._keys.lock, self._keys.pending, self._keys.processing], args=[owner]
            )
        if raw is None:
            return None
        return [QueuedRequest.from_json(item) for item in raw]

    def finish(self, owner: str) -> bool:
        """The processing list ran: clear it and give the lease back unless requests are
        pending. False: more to run, the lease is kept; True: released (or not ours any more)."""
        with redis_errors(self._url):
            result = self._finish(
                keys=[self._keys.lock, self._keys.pending, self._keys.processing],
                args=[owner, LEASE_MS],
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

    def claim_tick(self, due: datetime, replica: str) -> bool:
        """True for exactly one replica per scheduled tick. Asking again is safe: a replica that
        already holds the tick (its first answer was lost) is told True again."""
        key = self._keys.tick(due)
        with redis_errors(self._url):
            if self._redis.set(key, replica, nx=True, ex=TICK_MARK_SECONDS):
                return True
            return bool(self._redis.get(key) == replica)
