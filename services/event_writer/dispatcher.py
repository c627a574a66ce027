"""The batching layer: Graph requests from many handler threads, sent inside Outlook's limits.

Handler threads ``submit`` requests and wait on futures. One dispatcher thread gathers what is
pending, asks the ``MailboxLimiter`` (Redis, shared by every replica) for a slot per request,
and hands the admitted requests to a small pool of sender threads in groups of up to 20: a
group of one goes as a plain request, a larger one as one ``$batch``. It flushes as soon as 20
requests are ready, or when the oldest has waited ``linger_seconds`` (a few ms), so a busy
writer sends full batches and a quiet one adds next to no latency.

Each item of a batch is judged on its own. A throttled item (429, or 503 with Retry-After)
pauses its mailbox for every replica for the Retry-After (or an exponential backoff without
one) and is sent again on its own after it, at most ``max_throttle_waits`` times and never for
a wait longer than ``max_wait_seconds``; then its future fails with a retryable error, so the
message goes to a delayed retry queue instead of holding a handler thread. A mailbox out of
budget fails its requests the same way. Other mailboxes never wait for a throttled one.

Faults: whatever the limiter or the transport raises, the dispatcher and its senders go on.
A failed slot request fails the requests it was for (retryable) and the next one waits a
growing backoff; a slot that cannot be given back, or a pause that cannot be shared, is logged
(slot leases end by themselves, the pause holds here). Both loops report to ``/healthz``: the
dispatcher beats on every wake-up, the senders are stale while one send lasts too long.

A handler that gave up waiting cancels its future; a request not sent yet is then dropped.
Only mailboxes with pending requests are looked at on a wake-up, and a mailbox with nothing
pending, in flight or paused leaves the table.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from common import metrics
from common.errors import RetryableApiError, RetryableError
from common.health import HEARTBEATS, Heartbeats
from common.logging import get_logger
from services.event_writer.graph_protocol import MAX_BATCH, GraphRequest, GraphResult
from services.event_writer.mailbox_limits import Grant

log = get_logger(__name__)

BACKOFF_FIRST_SECONDS = 0.05  # after a failed slot request; doubles up to ...
BACKOFF_MAX_SECONDS = 1.0
SWEEP_SECONDS = 10.0  # paused mailboxes without work leave the table this often


class Transport:  # the part of GraphTransport the dispatcher uses
    def send(self, request: GraphRequest) -> GraphResult: ...  # pragma: no cover

    def send_batch(self, requests: list[GraphRequest]) -> list[GraphResult]: ...  # pragma: no cover


class Limiter:  # the part of MailboxLimiter the dispatcher uses
    concurrency: int

    def acquire(self, wanted: dict[str, int]) -> dict[str, Grant]: ...  # pragma: no cover

    def release(self, tokens: dict[str, list[str]]) -> None: ...  # pragma: no cover

    def pause(self, mailbox: str, seconds: float) -> None: ...  # pragma: no cover


@dataclass(eq=False)
class _Op:
    request: GraphRequest
    future: Future
    submitted: float
    token: str = ""
    throttle_waits: int = 0
    auth_retried: bool = False


@dataclass
class _Mailbox:
    pending: deque[_Op] = field(default_factory=deque)
    held: int = 0  # slots this process holds
    paused_until: float = 0.0  # Retry-After or budget: nothing is sent before
    recheck_at: float = 0.0  # slots busy in other replicas: ask Redis again then

    def idle(self, now: float) -> bool:
        return not self.pending and self.held <= 0 and self.paused_until <= now


class GraphDispatcher:
    def __init__(
        self,
        transport: Transport,
        limiter: Limiter,
        *,
        batch_size: int = MAX_BATCH,
        linger_seconds: float = 0.003,
        senders: int = 16,
        max_throttle_waits: int = 3,
        max_wait_seconds: float = 30.0,
        poll_seconds: float = 0.02,
        max_send_seconds: float = 300.0,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        heartbeats: Heartbeats = HEARTBEATS,
    ) -> None:
        self._transport = transport
        self._limiter = limiter
        self._batch_size = max(1, min(batch_size, MAX_BATCH))
        self._linger = linger_seconds
        self._senders = senders
        self._max_throttle_waits = max_throttle_waits
        self._max_wait = max_wait_seconds
        self._poll = poll_seconds
        self._max_send = max_send_seconds
        self._stop = stop or threading.Event()
        self._clock = clock
        self._cond = threading.Condition()
        self._mailboxes: dict[str, _Mailbox] = {}
        # Mailboxes with pending requests, in the order they are to be served (a dict as an
        # ordered set: a mailbox served goes to the back, so none is starved).
        self._ready: dict[str, None] = {}
        self._swept = clock()
        self._free_senders = senders
        self._sending: dict[int, float] = {}  # id of a send in progress -> when it started
        self._closing = False
        self._pool = ThreadPoolExecutor(senders, thread_name_prefix="graph-send")
        self._thread = threading.Thread(target=self._run, name="graph-dispatch", daemon=True)
        self._heartbeats = heartbeats
        self._heartbeat = heartbeats.register("graph-dispatcher", max_silence=60.0)
        self._senders_check = heartbeats.add("graph-senders", self._senders_fresh)
        self.sent = Counter[str]()  # "requests", "batches", "throttled": for logs and benchmarks

    # --- the handler threads' side -------------------------------------------------------------

    def start(self) -> GraphDispatcher:
        self._thread.start()
        return self

    def submit(self, request: GraphRequest) -> Future[GraphResult]:
        future: Future[GraphResult] = Future()
        with self._cond:
            if self._closing:
                future.set_exception(RetryableApiError("the writer is stopping"))
                return future
            box = self._mailboxes.setdefault(request.mailbox, _Mailbox())
            box.pending.append(_Op(request, future, self._clock()))
            self._ready.setdefault(request.mailbox)
            self._cond.notify_all()
        return future

    def waiting(self) -> int:
        """Requests submitted and not sent yet (the dispatcher's backlog)."""
        with self._cond:
            return sum(len(self._mailboxes[m].pending) for m in self._ready)

    def mailboxes_known(self) -> int:
        """How many mailboxes the table holds (pending, in flight or paused)."""
        with self._cond:
            return len(self._mailboxes)

    def close(self, timeout: float = 5.0) -> None:
        """Send what is pending (within ``timeout``), fail the rest as retryable, stop."""
        deadline = self._clock() + timeout
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            while self._busy() and self._clock() < deadline:
                self._cond.wait(0.05)
            leftovers = [op for box in self._mailboxes.values() for op in box.pending]
            for box in self._mailboxes.values():
                box.pending.clear()
            self._ready.clear()
            self._cond.notify_all()
        for op in leftovers:
            _fail(op, RetryableApiError("the writer stopped before the request was sent"))
        if self._thread.is_alive():
            self._thread.join(1.0)
        self._pool.shutdown(wait=True, cancel_futures=False)
        self._heartbeat.close()
        self._heartbeats.remove(self._senders_check)

    # --- the dispatcher thread -----------------------------------------------------------------

    def _busy(self) -> bool:
        return self._free_senders < self._senders or bool(self._ready)

    def _senders_fresh(self) -> bool:
        """No send has lasted longer than a send can (the transport's own timeouts included)."""
        now = self._clock()
        with self._cond:
            return all(now - started < self._max_send for started in self._sending.values())

    def _run(self) -> None:
        backoff = 0.0
        while True:
            wanted: dict[str, int] = {}
            try:
                with self._cond:
                    if backoff:
                        self._cond.wait_for(lambda: self._closing, timeout=backoff)
                    found = self._wait_for_work()
                    if found is None:
                        return
                    wanted = found
                grants = self._limiter.acquire(wanted)
                backoff = 0.0
                for group in self._take(wanted, grants):
                    self._pool.submit(self._send, group)
            except Exception as exc:  # noqa: BLE001 - the dispatcher must outlive any fault
                backoff = min(max(backoff * 2, BACKOFF_FIRST_SECONDS), BACKOFF_MAX_SECONDS)
                log.warning(
                    "could not get Graph slots; failing the requests they were for",
                    error=str(exc),
                    error_type=exc.__class__.__name__,
                    retry_in_seconds=backoff,
                )
                self._fail_wanted(wanted, _retryable(exc, "could not get a Graph slot"))

    def _wait_for_work(self) -> dict[str, int] | None:
        """Under the lock: the requests to ask slots for, once a flush is due."""
        while True:
            self._heartbeat.beat()
            if self._closing and not self._busy():
                return None
            now = self._clock()
            if now - self._swept >= SWEEP_SECONDS:
                self._sweep(now)
            wanted: dict[str, int] = {}
            ready, oldest, wake = 0, None, now + 0.1
            capacity = self._free_senders * self._batch_size
            for mailbox in list(self._ready):
                box = self._mailboxes[mailbox]
                blocked = max(box.paused_until, box.recheck_at)
                if blocked > now:
                    wake = min(wake, blocked)
                    continue
                room = self._limiter.concurrency - box.held
                if room <= 0 or ready >= capacity:
                    continue
                count = min(len(box.pending), room, capacity - ready)
                wanted[mailbox] = count
                ready += count
                first = box.pending[0].submitted
                oldest = first if oldest is None else min(oldest, first)
            if wanted and (
                ready >= self._batch_size or self._closing or now - oldest >= self._linger
            ):
                return wanted
            if wanted:
                wake = min(wake, oldest + self._linger)
            self._cond.wait(max(0.0, wake - now))

    def _take(self, wanted: dict[str, int], grants: dict[str, Grant]) -> list[list[_Op]]:
        now = self._clock()
        admitted: list[_Op] = []
        failed: list[tuple[_Op, Exception]] = []
        unused: dict[str, list[str]] = {}  # slots granted for requests cancelled meanwhile
        with self._cond:
            for mailbox, count in wanted.items():
                box = self._mailboxes.get(mailbox)
                grant = grants.get(mailbox, Grant((), 0.0))
                for token in grant.tokens:
                    op = _next_live(box.pending) if box is not None else None
                    if op is None:
                        unused.setdefault(mailbox, []).append(token)
                        continue
                    op.token = token
                    admitted.append(op)
                    box.held += 1  # type: ignore[union-attr]
                if box is None:
                    continue
                if len(grant.tokens) < count:
                    if grant.wait_seconds > 0:
                        if grant.wait_seconds > self._max_wait or self._stop.is_set():
                            error = RetryableApiError(
                                f"mailbox {mailbox} is paused or out of its Graph budget",
                                status=429,
                                retry_after=grant.wait_seconds,
                            )
                            failed += [(op, error) for op in box.pending]
                            box.pending.clear()
                        else:
                            box.paused_until = now + grant.wait_seconds
                    else:  # its slots are busy with other replicas' requests
                        box.recheck_at = now + self._poll * random.uniform(0.5, 1.5)
                self._settle(mailbox, box, now)
            self._free_senders -= -(-len(admitted) // self._batch_size)
        for op, error in failed:
            _fail(op, error)
        if unused:
            self._give_back(unused)
        return [
            admitted[i : i + self._batch_size] for i in range(0, len(admitted), self._batch_size)
        ]

    def _fail_wanted(self, wanted: dict[str, int], error: Exception) -> None:
        now = self._clock()
        with self._cond:
            ops = []
            for mailbox, count in wanted.items():
                box = self._mailboxes.get(mailbox)
                if box is None:
                    continue
                for _ in range(min(count, len(box.pending))):
                    ops.append(box.pending.popleft())
                self._settle(mailbox, box, now)
        for op in ops:
            _fail(op, error)

    def _settle(self, mailbox: str, box: _Mailbox, now: float) -> None:
        """Under the lock, after ``box`` changed: a mailbox served goes to the back of the
        ready ones (or leaves them), and an idle one leaves the table."""
        self._ready.pop(mailbox, None)
        if box.pending:
            self._ready[mailbox] = None
        elif box.idle(now) and self._mailboxes.get(mailbox) is box:
            del self._mailboxes[mailbox]

    def _sweep(self, now: float) -> None:
        """Under the lock: mailboxes whose pause ended with nothing to send leave the table."""
        self._swept = now
        for mailbox in [m for m, box in self._mailboxes.items() if box.idle(now)]:
            del self._mailboxes[mailbox]

    # --- the sender threads --------------------------------------------------------------------

    def _send(self, ops: list[_Op]) -> None:
        """Send one group and settle every future; whatever fails, the sender frees its place
        and every request it was given has its answer, its error or is queued again."""
        requeued: list[_Op] = []
        with self._cond:
            self._sending[id(ops)] = self._clock()
        try:
            results, error = self._transmit(ops)
            self._release(ops)
            with self._cond:
                self.sent["requests"] += len(ops)
                self.sent["batches"] += len(ops) > 1
            requeued = self._judge(ops, results, error)
        except Exception as exc:  # noqa: BLE001 - a bug here must not strand the handlers
            log.error("a Graph send failed unexpectedly", error=str(exc))
            for op in ops:
                _fail(op, _retryable(exc, "the Graph request failed"))
            requeued = []
        finally:
            now = self._clock()
            with self._cond:
                self._sending.pop(id(ops), None)
                for op in reversed(requeued):
                    box = self._mailboxes.setdefault(op.request.mailbox, _Mailbox())
                    box.pending.appendleft(op)
                for mailbox in {op.request.mailbox for op in ops}:
                    box = self._mailboxes.get(mailbox)
                    if box is not None:
                        self._settle(mailbox, box, now)
                self._free_senders += 1
                self._cond.notify_all()

    def _transmit(self, ops: list[_Op]) -> tuple[list[GraphResult] | None, Exception | None]:
        try:
            if len(ops) == 1:
                return [self._transport.send(ops[0].request)], None
            return self._transport.send_batch([op.request for op in ops]), None
        except Exception as exc:  # noqa: BLE001 - every failure reaches the waiting handler
            return None, exc

    def _judge(
        self, ops: list[_Op], results: list[GraphResult] | None, error: Exception | None
    ) -> list[_Op]:
        """Settle each request's future by its result; the ones to send again."""
        requeued = []
        for index, op in enumerate(ops):
            if error is not None:
                metrics.HTTP_REQUESTS.labels("graph", op.request.method, "error").inc()
                _fail(op, error)
                continue
            assert results is not None
            result = results[index]
            metrics.HTTP_REQUESTS.labels("graph", op.request.method, str(result.status)).inc()
            if result.throttled:
                metrics.THROTTLED.labels("graph").inc()
                with self._cond:
                    self.sent["throttled"] += 1
                if self._throttled(op, result):
                    requeued.append(op)
            elif result.status == 401 and not op.auth_retried:
                op.auth_retried = True
                requeued.append(op)
            elif not op.future.done():
                op.future.set_result(result)
        return requeued

    def _release(self, ops: list[_Op]) -> None:
        tokens: dict[str, list[str]] = {}
        for op in ops:
            tokens.setdefault(op.request.mailbox, []).append(op.token)
        with self._cond:
            for mailbox, held in tokens.items():
                box = self._mailboxes.get(mailbox)
                if box is not None:
                    box.held -= len(held)
                    box.recheck_at = 0.0
        self._give_back(tokens)

    def _give_back(self, tokens: dict[str, list[str]]) -> None:
        try:
            self._limiter.release(tokens)
        except Exception as exc:  # noqa: BLE001 - the slots' leases end by themselves
            log.warning("could not release Graph slots", error=str(exc))

    def _throttled(self, op: _Op, result: GraphResult) -> bool:
        """Pause the mailbox everywhere; True when the request is to be sent again."""
        mailbox = op.request.mailbox
        op.throttle_waits += 1
        wait = result.retry_after or 0.5 * 2**op.throttle_waits
        log.info("Graph throttled a mailbox", mailbox=mailbox, status=result.status, wait=wait)
        try:
            self._limiter.pause(mailbox, wait)
        except Exception as exc:  # noqa: BLE001 - the pause holds in this replica at least
            log.warning("could not share a mailbox pause", error=str(exc))
        with self._cond:
            box = self._mailboxes.setdefault(mailbox, _Mailbox())
            box.paused_until = max(box.paused_until, self._clock() + wait)
        metrics.THROTTLE_WAIT_SECONDS.labels("graph").inc(wait)
        if (
            op.throttle_waits > self._max_throttle_waits
            or wait > self._max_wait
            or self._stop.is_set()
        ):
            _fail(
                op,
                RetryableApiError(
                    f"Graph throttled {mailbox} ({result.status}); retry after {wait:.1f} s",
                    status=result.status,
                    retry_after=wait,
                ),
            )
            return False
        return True


def _next_live(pending: deque[_Op]) -> _Op | None:
    """The next request whose handler still waits for it, now marked as being sent (it can
    no longer be cancelled); requests cancelled meanwhile are dropped."""
    while pending:
        op = pending.popleft()
        if op.future.running() or op.future.set_running_or_notify_cancel():
            return op
    return None


def _retryable(exc: Exception, what: str) -> Exception:
    """A fault of ours or of Redis, not of the request: retried later, as the error it is
    when it is one of ours already."""
    if isinstance(exc, RetryableError):
        return exc
    error = RetryableApiError(f"{what} ({exc.__class__.__name__}: {exc})")
    error.__cause__ = exc
    return error


def _fail(op: _Op, error: BaseException) -> None:
    if not op.future.done():
        op.future.set_exception(error)
