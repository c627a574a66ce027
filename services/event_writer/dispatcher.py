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
from common.errors import PwasyncError, RetryableApiError
from common.logging import get_logger
from services.event_writer.graph_protocol import MAX_BATCH, GraphRequest, GraphResult
from services.event_writer.mailbox_limits import Grant

log = get_logger(__name__)


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
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transport = transport
        self._limiter = limiter
        self._batch_size = max(1, min(batch_size, MAX_BATCH))
        self._linger = linger_seconds
        self._senders = senders
        self._max_throttle_waits = max_throttle_waits
        self._max_wait = max_wait_seconds
        self._poll = poll_seconds
        self._stop = stop or threading.Event()
        self._clock = clock
        self._cond = threading.Condition()
        self._mailboxes: dict[str, _Mailbox] = {}
        self._free_senders = senders
        self._closing = False
        self._pool = ThreadPoolExecutor(senders, thread_name_prefix="graph-send")
        self._thread = threading.Thread(target=self._run, name="graph-dispatch", daemon=True)
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
            self._cond.notify_all()
        return future

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
            self._cond.notify_all()
        for op in leftovers:
            _fail(op, RetryableApiError("the writer stopped before the request was sent"))
        if self._thread.is_alive():
            self._thread.join(1.0)
        self._pool.shutdown(wait=True, cancel_futures=False)

    # --- the dispatcher thread -----------------------------------------------------------------

    def _busy(self) -> bool:
        return self._free_senders < self._senders or any(
            box.pending for box in self._mailboxes.values()
        )

    def _run(self) -> None:
        while True:
            with self._cond:
                wanted = self._wait_for_work()
                if wanted is None:
                    return
            try:
                grants = self._limiter.acquire(wanted)
            except PwasyncError as exc:  # Redis is down: every wanted request fails, retryable
                self._fail_wanted(wanted, exc)
                continue
            groups = self._take(wanted, grants)
            for group in groups:
                self._pool.submit(self._send, group)

    def _wait_for_work(self) -> dict[str, int] | None:
        """Under the lock: the requests to ask slots for, once a flush is due."""
        while True:
            if self._closing and not self._busy():
                return None
            now = self._clock()
            wanted: dict[str, int] = {}
            ready, oldest, wake = 0, None, now + 0.1
            capacity = self._free_senders * self._batch_size
            for mailbox, box in self._mailboxes.items():
                if not box.pending:
                    continue
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
        with self._cond:
            for mailbox, count in wanted.items():
                box = self._mailboxes[mailbox]
                grant = grants.get(mailbox, Grant((), 0.0))
                for token in grant.tokens:
                    if not box.pending:  # cannot happen: only this thread takes from pending
                        break
                    op = box.pending.popleft()
                    op.token = token
                    admitted.append(op)
                    box.held += 1
                if len(grant.tokens) >= count:
                    continue
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
            self._free_senders -= -(-len(admitted) // self._batch_size)
        for op, error in failed:
            _fail(op, error)
        return [
            admitted[i : i + self._batch_size] for i in range(0, len(admitted), self._batch_size)
        ]

    def _fail_wanted(self, wanted: dict[str, int], error: Exception) -> None:
        with self._cond:
            ops = []
            for mailbox, count in wanted.items():
                box = self._mailboxes[mailbox]
                for _ in range(min(count, len(box.pending))):
                    ops.append(box.pending.popleft())
        for op in ops:
            _fail(op, error)

    # --- the sender threads --------------------------------------------------------------------

    def _send(self, ops: list[_Op]) -> None:
        results: list[GraphResult] | None = None
        error: Exception | None = None
        try:
            if len(ops) == 1:
                results = [self._transport.send(ops[0].request)]
            else:
                results = self._transport.send_batch([op.request for op in ops])
        except Exception as exc:  # noqa: BLE001 - every failure reaches the waiting handler
            error = exc
        self._release(ops)
        with self._cond:
            self.sent["requests"] += len(ops)
            self.sent["batches"] += len(ops) > 1
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
            else:
                op.future.set_result(result)
        with self._cond:
            for op in reversed(requeued):
                self._mailboxes[op.request.mailbox].pending.appendleft(op)
            self._free_senders += 1
            self._cond.notify_all()

    def _release(self, ops: list[_Op]) -> None:
        tokens: dict[str, list[str]] = {}
        for op in ops:
            tokens.setdefault(op.request.mailbox, []).append(op.token)
        try:
            self._limiter.release(tokens)
        except PwasyncError as exc:  # the slots' leases end by themselves
            log.warning("could not release Graph slots", error=str(exc))
        with self._cond:
            for mailbox, held in tokens.items():
                box = self._mailboxes[mailbox]
                box.held -= len(held)
                box.recheck_at = 0.0

    def _throttled(self, op: _Op, result: GraphResult) -> bool:
        """Pause the mailbox everywhere; True when the request is to be sent again."""
        mailbox = op.request.mailbox
        op.throttle_waits += 1
        wait = result.retry_after or 0.5 * 2**op.throttle_waits
        log.info("Graph throttled a mailbox", mailbox=mailbox, status=result.status, wait=wait)
        try:
            self._limiter.pause(mailbox, wait)
        except PwasyncError as exc:
            log.warning("could not share a mailbox pause", error=str(exc))
        with self._cond:
            box = self._mailboxes[mailbox]
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


def _fail(op: _Op, error: BaseException) -> None:
    if not op.future.done():
        op.future.set_exception(error)
