"""The batching layer: the Graph requests of every handling, sent inside Outlook's limits.

Handlings ``submit`` requests and await futures. One dispatch loop (a task of the writer's
event loop) gathers what is pending, asks the ``MailboxLimiter`` (Redis, shared by every
replica) for a slot per request in one round trip for all mailboxes, and starts a send per
group of up to ``batch_size`` admitted requests, mailboxes taken in turn: a group of several
mailboxes goes as one ``$batch``, one mailbox's requests as plain requests (a batch holds all
its items' slots until its slowest is answered). It flushes as soon as a group is full, or
when the oldest request has waited ``linger_seconds`` (a few ms), so a busy writer sends full
groups and a quiet one adds next to no latency. What bounds the requests in flight is
Outlook's limit per mailbox (the slots), and ``max_sends`` HTTP requests at once (the HTTP
client's connections). A plain request's slot goes on to its mailbox's next request without
asking Redis again, within bounds (``_hand_on``).

Each item of a batch is judged on its own. A throttled item (429, or 503 with Retry-After)
pauses its mailbox for every replica for the Retry-After (or an exponential backoff without
one) and is sent again on its own after it, at most ``max_throttle_waits`` times and never for
a wait longer than ``max_wait_seconds``; then its future fails with a retryable error, so the
message goes to a delayed retry queue instead of holding its handling. A mailbox out of
budget fails its requests the same way. Other mailboxes never wait for a throttled one.

Faults: whatever the limiter or the transport raises, the dispatch loop and the sends go on.
A failed slot request fails the requests it was for (retryable) and the next one waits a
growing backoff; a slot that cannot be given back, or a pause that cannot be shared, is logged
(slot leases end by themselves, the pause holds here). Both report to ``/healthz``: the loop
beats on every wake-up, the sends are stale while one lasts too long.

On SIGTERM (``stop``) the requests not sent yet fail with ``Stopping`` (never sent: nothing
is uncertain; the consumer leaves their messages for the broker to redeliver) and those in
flight are answered as usual. A handling that gave up waiting cancels its future; a request
not sent yet is then dropped.
Only mailboxes with pending requests are looked at on a wake-up, and a mailbox with nothing
pending, in flight or paused leaves the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from common import metrics
from common.errors import RetryableApiError, RetryableError, Stopping
from common.health import HEARTBEATS, Heartbeats
from common.logging import get_logger
from services.event_writer.graph_protocol import MAX_BATCH, GraphRequest, GraphResult
from services.event_writer.mailbox_limits import Grant
from services.event_writer.steps import Ticket

log = get_logger(__name__)

BACKOFF_FIRST_SECONDS = 0.05  # after a failed slot request; doubles up to ...
BACKOFF_MAX_SECONDS = 1.0
SWEEP_SECONDS = 10.0  # paused mailboxes without work leave the table this often
# A plain request's slot goes straight to its mailbox's next request at most this many times
# per slot request, and only while the budget holds more than the reserve: each replica spends
# at most HAND_ON_MAX unchecked requests, and a mailbox has 4 slots, so the budget holds.
HAND_ON_MAX = 32
HAND_ON_RESERVE = 1000


class Transport(Protocol):  # the part of GraphTransport the dispatcher uses
    async def send(self, request: GraphRequest) -> GraphResult: ...

    async def send_batch(self, requests: list[GraphRequest]) -> list[GraphResult]: ...


class Limiter(Protocol):  # the part of MailboxLimiter the dispatcher uses
    concurrency: int

    async def acquire(
        self, wanted: dict[str, int], released: dict[str, list[str]] | None = None
    ) -> dict[str, Grant]: ...

    async def release(self, tokens: dict[str, list[str]]) -> None: ...

    async def charge(self, mailbox: str, requests: int) -> None: ...

    def lease_alive(self, mailbox: str, token: str) -> bool: ...

    async def pause(self, mailbox: str, seconds: float) -> None: ...


@dataclass(eq=False)
class _Op:
    request: GraphRequest
    ticket: Ticket
    submitted: float
    token: str = ""
    throttle_waits: int = 0
    auth_retried: bool = False

    @property
    def future(self) -> asyncio.Future[GraphResult]:
        return self.ticket.future


@dataclass
class _Mailbox:
    pending: deque[_Op] = field(default_factory=deque)
    held: int = 0  # slots this process holds
    paused_until: float = 0.0  # Retry-After or budget: nothing is sent before
    recheck_at: float = 0.0  # slots busy in other replicas: ask Redis again then
    hand_ons: int = 0  # answered slots that may still go straight to the next request

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
        max_sends: int = 256,
        max_throttle_waits: int = 3,
        max_wait_seconds: float = 30.0,
        poll_seconds: float = 0.02,
        max_send_seconds: float = 300.0,
        stop: asyncio.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        heartbeats: Heartbeats = HEARTBEATS,
    ) -> None:
        self._transport = transport
        self._limiter = limiter
        self._batch_size = max(1, min(batch_size, MAX_BATCH))
        self._linger = linger_seconds
        self._max_sends = max_sends
        self._max_throttle_waits = max_throttle_waits
        self._max_wait = max_wait_seconds
        self._poll = poll_seconds
        self._max_send = max_send_seconds
        self._stop = stop or asyncio.Event()
        self._clock = clock
        self._wake = asyncio.Event()
        self._mailboxes: dict[str, _Mailbox] = {}
        # Mailboxes with pending requests, in the order they are to be served (a dict as an
        # ordered set: a mailbox served goes to the back, so none is starved).
        self._ready: dict[str, None] = {}
        self._swept = clock()
        self._sending: dict[int, float] = {}  # id of a send in progress -> when it started
        # Slots of answered requests, given back to Redis by the loop's next round trip (in
        # the slot request of the same mailbox when it has more to send).
        self._answered: dict[str, list[str]] = {}
        self._sends: set[asyncio.Task] = set()
        self._closing = False
        self._loop_task: asyncio.Task | None = None
        self._watch_task: asyncio.Task | None = None
        self._heartbeats = heartbeats
        self._heartbeat = heartbeats.register("graph-dispatcher", max_silence=60.0)
        self._senders_check = heartbeats.add("graph-senders", self._senders_fresh)
        self.sent = Counter[str]()  # "requests", "batches", "throttled": for logs and benchmarks

    # --- the handlings' side -------------------------------------------------------------------

    def start(self) -> GraphDispatcher:
        """Start the dispatch loop on the running event loop."""
        loop = asyncio.get_running_loop()
        self._loop_task = loop.create_task(self._run(), name="dispatch")
        self._watch_task = loop.create_task(self._wake_on_stop())
        return self

    async def _wake_on_stop(self) -> None:
        await self._stop.wait()
        self._wake.set()

    def submit(self, request: GraphRequest) -> Ticket:
        ticket = Ticket(asyncio.get_running_loop().create_future())
        if self._closing or self._stop.is_set():
            ticket.future.set_exception(Stopping("the writer is stopping; not sent"))
            return ticket
        box = self._mailboxes.get(request.mailbox)
        if box is None:
            box = self._mailboxes[request.mailbox] = _Mailbox()
        box.pending.append(_Op(request, ticket, self._clock()))
        self._ready.setdefault(request.mailbox)
        self._wake.set()
        return ticket

    def waiting(self) -> int:
        """Requests submitted and not sent yet (the dispatcher's backlog)."""
        return sum(len(self._mailboxes[m].pending) for m in self._ready)

    def mailboxes_known(self) -> int:
        """How many mailboxes the table holds (pending, in flight or paused)."""
        return len(self._mailboxes)

    async def close(self, timeout: float = 5.0) -> None:
        """Send what is pending (within ``timeout``), fail the rest as retryable, stop."""
        deadline = self._clock() + timeout
        self._closing = True
        self._wake.set()
        while self._busy() and self._clock() < deadline:
            await asyncio.sleep(0.02)
        leftovers = [op for box in self._mailboxes.values() for op in box.pending]
        for box in self._mailboxes.values():
            box.pending.clear()
        self._ready.clear()
        for op in leftovers:
            _fail(op, Stopping("the writer stopped before the request was sent"))
        tasks = [t for t in [*self._sends, self._loop_task, self._watch_task] if t is not None]
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks)
        self._heartbeat.close()
        self._heartbeats.remove(self._senders_check)

    # --- the dispatch loop ---------------------------------------------------------------------

    def _busy(self) -> bool:
        return bool(self._sends) or bool(self._ready) or bool(self._answered)

    def _senders_fresh(self) -> bool:
        """No send has lasted longer than a send can (the transport's own timeouts included).
        Called from the health server's thread: reads a snapshot only."""
        now = self._clock()
        return all(now - started < self._max_send for started in list(self._sending.values()))

    async def _run(self) -> None:
        backoff = 0.0
        while True:
            wanted: dict[str, int] = {}
            try:
                if backoff:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), backoff)
                found = await self._wait_for_work()
                if found is None:
                    return
                wanted = found
                answered, self._answered = self._answered, {}
                along = {m: t for m, t in answered.items() if m in wanted}
                alone = {m: t for m, t in answered.items() if m not in wanted}
                if alone:
                    self._give_back_soon(alone)
                if not wanted:
                    continue
                grants = await self._limiter.acquire(wanted, along)
                backoff = 0.0
                for group in self._take(wanted, grants):
                    self._start_send(group)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the dispatcher must outlive any fault
                backoff = min(max(backoff * 2, BACKOFF_FIRST_SECONDS), BACKOFF_MAX_SECONDS)
                log.warning(
                    "could not get Graph slots; failing the requests they were for",
                    error=str(exc),
                    error_type=exc.__class__.__name__,
                    retry_in_seconds=backoff,
                )
                self._fail_wanted(wanted, _retryable(exc, "could not get a Graph slot"))

    async def _wait_for_work(self) -> dict[str, int] | None:
        """The requests to ask slots for, once a flush is due; None once closed and idle."""
        while True:
            self._heartbeat.beat()
            if self._stop.is_set():
                self._drop_pending()
            if self._closing and not self._busy():
                return None
            now = self._clock()
            if now - self._swept >= SWEEP_SECONDS:
                self._sweep(now)
            wanted: dict[str, int] = {}
            ready, oldest, wake = 0, None, now + 1.0
            capacity = (self._max_sends - len(self._sends)) * self._batch_size
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
            if self._answered:
                return {}  # nothing to send yet: the slots go back now, on their own
            if wanted:
                wake = min(wake, oldest + self._linger)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, wake - now))

    def _take(self, wanted: dict[str, int], grants: dict[str, Grant]) -> list[list[_Op]]:
        now = self._clock()
        admitted: list[_Op] = []
        unused: dict[str, list[str]] = {}  # slots granted for requests cancelled meanwhile
        for mailbox, count in wanted.items():
            box = self._mailboxes.get(mailbox)
            grant = grants.get(mailbox, Grant((), 0.0))
            for token in grant.tokens:
                op = _next_live(box.pending) if box is not None else None
                if op is None:
                    unused.setdefault(mailbox, []).append(token)
                    continue
                op.token = token
                op.ticket.sent = True
                admitted.append(op)
                box.held += 1  # type: ignore[union-attr]
            if box is None:
                continue
            if grant.tokens:
                box.hand_ons = max(0, min(HAND_ON_MAX, grant.budget_left - HAND_ON_RESERVE))
            if len(grant.tokens) < count:
                if grant.wait_seconds > 0:
                    if grant.wait_seconds > self._max_wait or self._stop.is_set():
                        error = RetryableApiError(
                            f"mailbox {mailbox} is paused or out of its Graph budget",
                            status=429,
                            retry_after=grant.wait_seconds,
                        )
                        for op in box.pending:
                            _fail(op, error)
                        box.pending.clear()
                    else:
                        box.paused_until = now + grant.wait_seconds
                else:  # its slots are busy with other replicas' requests
                    box.recheck_at = now + self._poll * random.uniform(0.5, 1.5)
            self._settle(mailbox, box, now)
        if unused:
            self._give_back_soon(unused)
        return _groups(admitted, self._batch_size)

    def _drop_pending(self) -> None:
        """Stopping: requests not sent yet never will be (their handlings end, and their
        messages are redelivered); the ones in flight are answered as usual."""
        error = Stopping("the writer is stopping; not sent")
        for mailbox in list(self._ready):
            box = self._mailboxes[mailbox]
            while box.pending:
                _fail(box.pending.popleft(), error)
            self._settle(mailbox, box, self._clock())

    def _fail_wanted(self, wanted: dict[str, int], error: Exception) -> None:
        now = self._clock()
        for mailbox, count in wanted.items():
            box = self._mailboxes.get(mailbox)
            if box is None:
                continue
            for _ in range(min(count, len(box.pending))):
                _fail(box.pending.popleft(), error)
            self._settle(mailbox, box, now)

    def _settle(self, mailbox: str, box: _Mailbox, now: float) -> None:
        """After ``box`` changed: a mailbox served goes to the back of the ready ones (or
        leaves them), and an idle one leaves the table."""
        self._ready.pop(mailbox, None)
        if box.pending:
            self._ready[mailbox] = None
        elif box.idle(now) and self._mailboxes.get(mailbox) is box:
            del self._mailboxes[mailbox]

    def _sweep(self, now: float) -> None:
        """Mailboxes whose pause ended with nothing to send leave the table."""
        self._swept = now
        for mailbox in [m for m, box in self._mailboxes.items() if box.idle(now)]:
            del self._mailboxes[mailbox]

    # --- the sends -----------------------------------------------------------------------------

    def _start_send(self, ops: list[_Op]) -> None:
        self._spawn(self._send(ops))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a task the dispatcher waits for on close (a send, a slot given
        back, a hand-on's charge)."""
        task = asyncio.get_running_loop().create_task(work)
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send(self, ops: list[_Op]) -> None:
        """Send one group and settle every future; whatever fails, every request it was
        given has its answer, its error or is queued again."""
        requeued: list[_Op] = []
        self._sending[id(ops)] = self._clock()
        try:
            results, error = await self._transmit(ops)
            if not self._hand_on(ops, results, error):
                self._release(ops)
            self.sent["requests"] += len(ops)
            self.sent["batches"] += len(ops) > 1
            requeued = await self._judge(ops, results, error)
        except asyncio.CancelledError:
            for op in ops:
                _fail(op, RetryableApiError("the writer stopped while the request was out"))
            raise
        except Exception as exc:  # noqa: BLE001 - a bug here must not strand the handlings
            log.error("a Graph send failed unexpectedly", error=str(exc))
            for op in ops:
                _fail(op, _retryable(exc, "the Graph request failed"))
            requeued = []
        finally:
            now = self._clock()
            self._sending.pop(id(ops), None)
            for op in reversed(requeued):
                box = self._mailboxes.setdefault(op.request.mailbox, _Mailbox())
                box.pending.appendleft(op)
            for mailbox in {op.request.mailbox for op in ops}:
                box = self._mailboxes.get(mailbox)
                if box is not None:
                    self._settle(mailbox, box, now)
            self._wake.set()

    async def _transmit(self, ops: list[_Op]) -> tuple[list[GraphResult] | None, Exception | None]:
        try:
            if len(ops) == 1:
                return [await self._transport.send(ops[0].request)], None
            return await self._transport.send_batch([op.request for op in ops]), None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure reaches the waiting handling
            return None, exc

    async def _judge(
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
                self.sent["throttled"] += 1
                if await self._throttled(op, result):
                    requeued.append(op)
            elif result.status == 401 and not op.auth_retried:
                op.auth_retried = True
                requeued.append(op)
            elif not op.future.done():
                op.future.set_result(result)
        return requeued

    def _hand_on(
        self, ops: list[_Op], results: list[GraphResult] | None, error: Exception | None
    ) -> bool:
        """A plain request answered without a throttle passes its slot straight to its
        mailbox's next request, which is sent at once: no slot request to Redis in between
        (one mailbox's requests follow each other ~2-3 ms sooner). It is counted against the
        budget afterwards; HAND_ON_MAX and HAND_ON_RESERVE bound what goes unchecked, and
        only a slot whose lease is known to hold is handed on."""
        if len(ops) != 1 or error is not None or results is None or self._stop.is_set():
            return False
        if results[0].throttled or results[0].status == 401:
            return False
        mailbox = ops[0].request.mailbox
        box = self._mailboxes.get(mailbox)
        now = self._clock()
        if box is None or box.hand_ons <= 0 or box.paused_until > now:
            return False
        if not self._limiter.lease_alive(mailbox, ops[0].token):
            return False  # renewals failing: the slot may be gone from Redis
        following = _next_live(box.pending)
        if following is None:
            return False
        box.hand_ons -= 1
        following.token = ops[0].token
        following.ticket.sent = True
        self._settle(mailbox, box, now)
        self._start_send([following])
        self._charge_soon(mailbox)
        return True

    def _charge_soon(self, mailbox: str) -> None:
        async def charge() -> None:
            try:
                await self._limiter.charge(mailbox, 1)
            except Exception as exc:  # noqa: BLE001 - one uncounted request: the reserve holds it
                log.warning("could not count a Graph request in its budget", error=str(exc))

        self._spawn(charge())

    def _release(self, ops: list[_Op]) -> None:
        """The slots of answered requests go back: here at once, to Redis with the loop's
        next round trip (which runs before any slot request, so no request here waits for a
        slot Redis still counts)."""
        for op in ops:
            self._answered.setdefault(op.request.mailbox, []).append(op.token)
            box = self._mailboxes.get(op.request.mailbox)
            if box is not None:
                box.held -= 1
                box.recheck_at = 0.0
        self._wake.set()

    async def _give_back(self, tokens: dict[str, list[str]]) -> None:
        try:
            await self._limiter.release(tokens)
        except Exception as exc:  # noqa: BLE001 - the slots' leases end by themselves
            log.warning("could not release Graph slots", error=str(exc))

    def _give_back_soon(self, tokens: dict[str, list[str]]) -> None:
        self._spawn(self._give_back(tokens))

    async def _throttled(self, op: _Op, result: GraphResult) -> bool:
        """Pause the mailbox everywhere; True when the request is to be sent again."""
        mailbox = op.request.mailbox
        op.throttle_waits += 1
        wait = result.retry_after or 0.5 * 2**op.throttle_waits
        log.info("Graph throttled a mailbox", mailbox=mailbox, status=result.status, wait=wait)
        try:
            await self._limiter.pause(mailbox, wait)
        except Exception as exc:  # noqa: BLE001 - the pause holds in this replica at least
            log.warning("could not share a mailbox pause", error=str(exc))
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


def _groups(admitted: list[_Op], size: int) -> list[list[_Op]]:
    """The sends for the admitted requests, mailboxes taken in turn so that a ``$batch``
    carries several mailboxes' requests. A group of one mailbox's requests only goes as
    plain requests: a batch is answered once its slowest item is done, so its other items'
    slots would wait for that one; plain, each slot is free again on its own answer."""
    queues: dict[str, deque[_Op]] = {}
    for op in admitted:
        queues.setdefault(op.request.mailbox, deque()).append(op)
    taken: list[_Op] = []
    while queues:
        for mailbox in list(queues):
            queue = queues[mailbox]
            taken.append(queue.popleft())
            if not queue:
                del queues[mailbox]
    groups: list[list[_Op]] = []
    for start in range(0, len(taken), size):
        group = taken[start : start + size]
        if len({op.request.mailbox for op in group}) == 1:
            groups.extend([op] for op in group)
        else:
            groups.append(group)
    return groups


def _next_live(pending: deque[_Op]) -> _Op | None:
    """The next request whose handling still waits for it; requests cancelled meanwhile (the
    handling gave up) are dropped."""
    while pending:
        op = pending.popleft()
        if not op.future.done():
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
