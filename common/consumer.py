"""The threaded consumer (poller, ledger): manual acks, prefetch = concurrency, work off the
I/O thread. The writer's consumer (``common/async_consumer.py``) runs on an event loop and
shares the ack policy, the copies' making (``settlement_copy``) and the acks' coalescing
(``settlement_frames``) defined here.

One thread owns the pika connection and does nothing but network I/O (so heartbeats flow while
handlers run for a long time); handlers run in a thread pool. A worker never touches the channel:
it settles a delivery (publishing a retry or dead-letter copy with its own confirmed publisher)
and then asks the I/O thread to ack through ``add_callback_threadsafe``. Settlements are
coalesced: one wake-up of the I/O thread sends every settlement queued since, and acks of
deliveries older than every one still in a handler go as one ``multiple`` ack (a wake-up and a
flush per settlement cost a busy consumer about a sixth of its CPU).

Stopping follows the order that loses nothing: stop taking deliveries (basic_cancel), let the
in-flight handlers finish and their acks go out while the connection stays up, then close. A
delivery whose ack could not be sent (the connection died) is redelivered by the broker; the
handlers are idempotent, so that is safe.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Set
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pika
import pika.exceptions
import structlog
from pika.adapters.blocking_connection import BlockingChannel

from common import metrics
from common.ack_policy import DEFAULT_MAX_ATTEMPTS, Ack, DeadLetter, Decision, Retry, decide
from common.errors import ServiceUnavailable
from common.logging import get_logger
from common.rabbit import CONNECTION_ERRORS, MessagePublisher, RabbitConnector, declare_topology
from common.topology import Topology, WorkQueue

log = get_logger(__name__)

ATTEMPT_HEADER = "x-pwasync-attempt"
LAST_ERROR_HEADER = "x-pwasync-last-error"
DEAD_REASON_HEADER = "x-pwasync-dead-reason"
DEAD_AT_HEADER = "x-pwasync-dead-at"
DEAD_ID_HEADER = "x-pwasync-dead-id"
SOURCE_QUEUE_HEADER = "x-pwasync-source-queue"
ROUTING_KEY_HEADER = "x-pwasync-routing-key"

OUTCOMES = {Ack: "acked", Retry: "retried", DeadLetter: "dead_lettered"}
_MAX_HEADER_TEXT = 1000  # reasons are cut so a huge exception text cannot bloat the broker


@dataclass(frozen=True)
class Delivery:
    """What a handler sees of a message: no pika types."""

    body: bytes
    routing_key: str
    message_id: str | None
    correlation_id: str | None
    headers: dict[str, Any] = field(default_factory=dict)
    redelivered: bool = False

    @property
    def attempt(self) -> int:
        try:
            return max(1, int(self.headers.get(ATTEMPT_HEADER, 1)))
        except (TypeError, ValueError):
            return 1


Handler = Callable[[Delivery], None]


class Consumer:
    """Consumes one work queue with ``concurrency`` handler threads until ``stop`` is set."""

    def __init__(
        self,
        *,
        connector: RabbitConnector,
        topology: Topology,
        queue: WorkQueue,
        handler: Handler,
        publisher: MessagePublisher,
        concurrency: int = 1,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        drain_seconds: float = 8.0,
        on_decision: Callable[[Delivery, Decision], None] | None = None,
        depth_sample_seconds: float = 15.0,
    ) -> None:
        self._connector = connector
        self._topology = topology
        self._queue = queue
        self._handler = handler
        self._publisher = publisher
        self._concurrency = concurrency
        self._max_attempts = max_attempts
        self._drain_seconds = drain_seconds
        self._on_decision = on_decision
        self._depth_sample_seconds = depth_sample_seconds
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix="handler")
        self._inflight = 0
        self._state_lock = threading.Lock()  # guards the in-flight count and what follows
        # Settled deliveries waiting for the I/O thread to ack or reject them, and whether it
        # has been asked to (one wake-up of the I/O thread carries every settlement since).
        self._settled: set[int] = set()
        self._settle_scheduled = False
        self._session: _Session | None = None
        self.connected = threading.Event()
        self._heartbeat = time.monotonic()
        self._stop = threading.Event()  # run()'s, once running

    @property
    def queue_name(self) -> str:
        return self._queue.name

    def alive(self, max_silence: float = 60.0) -> bool:
        """The I/O loop ran recently (while consuming, or while waiting to reconnect)."""
        return time.monotonic() - self._heartbeat < max_silence

    # --- the I/O thread ----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set; reconnect with capped, jittered backoff meanwhile."""
        backoff = 1.0
        self._stop = stop
        try:
            while not stop.is_set():
                try:
                    self._consume(stop)
                    backoff = 1.0
                except (*CONNECTION_ERRORS, ServiceUnavailable) as exc:
                    self.connected.clear()
                    if stop.is_set():
                        break
                    self._heartbeat = time.monotonic()
                    delay = backoff * random.uniform(0.5, 1.0)
                    log.warning(
                        "broker connection lost; reconnecting",
                        queue=self._queue.name,
                        error=str(exc) or exc.__class__.__name__,
                        retry_in_seconds=round(delay, 2),
                    )
                    stop.wait(delay)
                    self._heartbeat = time.monotonic()
                    backoff = min(backoff * 2, 30.0)
        finally:
            self.connected.clear()
            self._wait_for_inflight(deadline=time.monotonic() + self._drain_seconds)
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _consume(self, stop: threading.Event) -> None:
        connection = self._connector.connect()
        try:
            declare_topology(connection, self._topology)
            channel = connection.channel()
            channel.basic_qos(prefetch_count=self._concurrency)
            session = _Session(connection, channel)
            with self._state_lock:
                # Settlements of an earlier connection's deliveries cannot be sent any more:
                # the broker redelivers those.
                self._session, self._settled, self._settle_scheduled = session, set(), False
            tag = channel.basic_consume(
                self._queue.name, partial(self._on_message, session), auto_ack=False
            )
            self.connected.set()
            log.info("consuming", queue=self._queue.name, prefetch=self._concurrency)
            next_sample = time.monotonic()
            while not stop.is_set():
                connection.process_data_events(time_limit=0.25)
                self._heartbeat = time.monotonic()
                if self._heartbeat >= next_sample:
                    self._sample_depths(channel)
                    next_sample = time.monotonic() + self._depth_sample_seconds
            # Orderly stop: no new deliveries, finish and ack what is in flight, then close.
            channel.basic_cancel(tag)
            deadline = time.monotonic() + self._drain_seconds
            while self._inflight_count() and time.monotonic() < deadline:
                connection.process_data_events(time_limit=0.05)
            connection.process_data_events(time_limit=0)  # flush the last acks
            if self._inflight_count():
                log.warning(
                    "stopping with unfinished deliveries; the broker will redeliver them",
                    queue=self._queue.name,
                    unfinished=self._inflight_count(),
                )
        finally:
            self.connected.clear()
            if connection.is_open:
                with contextlib.suppress(*CONNECTION_ERRORS):
                    connection.close()

    def _sample_depths(self, channel: BlockingChannel) -> None:
        """Ready messages of the work queue and its dead letters, and what this process holds:
        the metrics behind the "no progress" and "dead letters" alerts (deploy/prometheus).
        A passive declare on the consuming channel: the queues exist (declared above)."""
        for name in (self._queue.name, self._queue.dead_letter_queue):
            try:
                result = channel.queue_declare(name, passive=True)
            except pika.exceptions.ChannelClosedByBroker as exc:  # deleted under us
                raise ServiceUnavailable(f"queue {name}: {exc.reply_text}") from None
            metrics.QUEUE_MESSAGES.labels(name).set(result.method.message_count)
        metrics.MESSAGES_IN_FLIGHT.labels(self._queue.name).set(self._inflight_count())

    def _on_message(
        self,
        session: _Session,
        channel: BlockingChannel,
        method: pika.spec.Basic.Deliver,
        properties: pika.BasicProperties,
        body: bytes,
    ) -> None:
        delivery = Delivery(
            body=body,
            routing_key=method.routing_key,
            message_id=properties.message_id,
            correlation_id=properties.correlation_id,
            headers=dict(properties.headers or {}),
            redelivered=bool(method.redelivered),
        )
        session.unsettled[method.delivery_tag] = None
        with self._state_lock:
            self._inflight += 1
        self._executor.submit(self._work, session, method.delivery_tag, delivery, properties)

    def _inflight_count(self) -> int:
        with self._state_lock:
            return self._inflight

    def _wait_for_inflight(self, *, deadline: float) -> None:
        while self._inflight_count() and time.monotonic() < deadline:
            time.sleep(0.05)

    # --- handler threads ---------------------------------------------------------------------

    def _work(
        self,
        session: _Session,
        delivery_tag: int,
        delivery: Delivery,
        properties: pika.BasicProperties,
    ) -> None:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            correlation_id=delivery.correlation_id,
            message_id=delivery.message_id,
            queue=self._queue.name,
            attempt=delivery.attempt,
        )
        try:
            if self._handle_and_settle(delivery, properties):
                self._queue_settlement(session, delivery_tag)
        finally:
            with self._state_lock:
                self._inflight -= 1
            structlog.contextvars.clear_contextvars()

    def _handle_and_settle(self, delivery: Delivery, properties: pika.BasicProperties) -> bool:
        """Run the handler and carry out the decision. True: ack; False: leave the delivery
        unsettled (stopping before its copy was stored: the broker redelivers it)."""
        started = time.monotonic()
        error: BaseException | None = None
        try:
            self._handler(delivery)
        except Exception as exc:  # noqa: BLE001 - every failure goes through the ack policy
            error = exc
        decision = decide(
            error, attempt=delivery.attempt, queue=self._queue, max_attempts=self._max_attempts
        )
        if self._on_decision is not None:
            try:
                self._on_decision(delivery, decision)
            except Exception:  # noqa: BLE001 - an observer must not keep the delivery unsettled
                log.exception("the decision observer failed; settling anyway")
        stored = self._settle_until_stored(decision, delivery, properties)
        outcome = OUTCOMES[type(decision)] if stored else "left_for_redelivery"
        metrics.MESSAGES.labels(self._queue.name, outcome).inc()
        metrics.HANDLING_SECONDS.labels(self._queue.name).observe(time.monotonic() - started)
        return stored

    def _settle_until_stored(
        self, decision: Decision, delivery: Delivery, properties: pika.BasicProperties
    ) -> bool:
        """Carry out the decision, trying the copy's publish again (1 s doubling to 30 s) until
        the broker confirms it; False if the consumer stops first.

        The delivery is held meanwhile, not requeued: a requeue comes straight back (under a
        resource alarm a healthy message would loop, each turn a handler run and a delivery
        counted, until the delivery limit drops it). Held deliveries fill the prefetch, so the
        consumer takes no new work while its copies cannot be published."""
        delay = 1.0
        while True:
            try:
                self._settle(decision, delivery, properties)
                return True
            except Exception as exc:  # noqa: BLE001 - a PublishError, or one nobody foresaw
                # Whatever the failure, the delivery stays held and the copy is tried again:
                # an exception escaping here would end the worker without a settlement, and
                # the delivery would hold its place in the prefetch, unseen, until a reconnect.
                if self._stop.is_set():
                    log.warning(
                        "stopping before the delivery's copy was stored; "
                        "the broker will redeliver it",
                        error=str(exc),
                    )
                    return False
                wait = delay * random.uniform(0.5, 1.0)
                log.error(
                    "could not store the delivery's retry or dead-letter copy; "
                    "holding the delivery and trying again",
                    error=str(exc) or exc.__class__.__name__,
                    error_type=exc.__class__.__name__,
                    retry_in_seconds=round(wait, 2),
                )
                if self._stop.wait(wait):
                    log.warning("stopping; the broker will redeliver the held delivery")
                    return False
                delay = min(delay * 2, 30.0)

    def _settle(
        self, decision: Decision, delivery: Delivery, properties: pika.BasicProperties
    ) -> None:
        copy = settlement_copy(decision, delivery, self._queue)
        if copy is None:
            return
        target, headers = copy
        self._publisher.publish(
            target,
            delivery.body,
            exchange="",
            message_id=delivery.message_id,
            correlation_id=delivery.correlation_id,
            headers=headers,
        )

    def _queue_settlement(self, session: _Session, delivery_tag: int) -> None:
        """Hand the ack to the I/O thread, waking it only when no wake-up is pending already."""
        with self._state_lock:
            if session is not self._session:
                log.warning("connection gone before the ack; the broker will redeliver")
                return
            self._settled.add(delivery_tag)
            if self._settle_scheduled:
                return
            self._settle_scheduled = True
        try:
            session.connection.add_callback_threadsafe(partial(self._send_settlements, session))
        except CONNECTION_ERRORS:
            log.warning("connection gone before the ack; the broker will redeliver")

    def _send_settlements(self, session: _Session) -> None:
        """Runs on the I/O thread: everything settled since the last call, in as few frames as
        the delivery order allows."""
        with self._state_lock:
            if session is not self._session:
                return
            settled, self._settled, self._settle_scheduled = self._settled, set(), False
        if not session.channel.is_open:
            log.warning("channel closed before the ack; the broker will redeliver")
            return
        for frame in settlement_frames(session.unsettled, settled):
            session.channel.basic_ack(frame.delivery_tag, multiple=frame.multiple)
        for delivery_tag in settled:
            session.unsettled.pop(delivery_tag, None)


@dataclass
class _Session:
    """One connection's consuming channel and its deliveries not settled yet (I/O thread)."""

    connection: pika.BlockingConnection
    channel: BlockingChannel
    unsettled: dict[int, None] = field(default_factory=dict)  # delivery order


@dataclass(frozen=True)
class SettlementFrame:
    delivery_tag: int
    multiple: bool = False


def dead_letter_headers(reason: str, source_queue: str) -> dict[str, str]:
    """What marks a message we dead-letter ourselves: why, when, an id of its own, and the
    queue it came from (``pwasync dlq`` shows them; ``replay`` sends it back there)."""
    return {
        DEAD_REASON_HEADER: reason[:_MAX_HEADER_TEXT],
        DEAD_AT_HEADER: datetime.now(UTC).isoformat(),
        DEAD_ID_HEADER: uuid.uuid4().hex[:12],
        SOURCE_QUEUE_HEADER: source_queue,
    }


def settlement_frames(unsettled: Iterable[int], acked: Set[int]) -> list[SettlementFrame]:
    """The ack frames that settle ``acked``, given the channel's deliveries not settled
    before, in delivery order. (Nothing is ever requeued: see ``_settle_until_stored``.)

    Acks of deliveries older than every delivery still in a handler go as one ``multiple``
    ack (it settles exactly them: every older delivery is acked in this call); later acks go
    one each, so no ack ever waits for a slow delivery.
    """
    oldest_open = next((tag for tag in unsettled if tag not in acked), None)
    acks = sorted(acked)
    older = [tag for tag in acks if oldest_open is None or tag < oldest_open]
    frames = []
    if older:
        frames.append(SettlementFrame(older[-1], multiple=len(older) > 1))
    frames += [SettlementFrame(tag) for tag in acks[len(older) :]]
    return frames


def settlement_copy(
    decision: Decision, delivery: Delivery, queue: WorkQueue
) -> tuple[str, dict[str, Any]] | None:
    """Where a delivery's copy goes and with which headers (None: an ack needs no copy).
    Shared by both consumers, so a retry or a dead letter looks the same whoever made it."""
    if isinstance(decision, Ack):
        return None
    headers = dict(delivery.headers)
    headers[ROUTING_KEY_HEADER] = headers.get(ROUTING_KEY_HEADER, delivery.routing_key)
    if isinstance(decision, Retry):
        headers[ATTEMPT_HEADER] = delivery.attempt + (1 if decision.counts else 0)
        headers[LAST_ERROR_HEADER] = decision.reason[:_MAX_HEADER_TEXT]
        log.warning(
            "handling failed; retrying later",
            reason=decision.reason,
            retry_in_seconds=decision.delay_seconds,
        )
        return queue.retry_queue(decision.delay_seconds), headers
    if isinstance(decision, DeadLetter):
        headers.update(dead_letter_headers(decision.reason, queue.name))
        log.error("message dead-lettered", reason=decision.reason)
        return queue.dead_letter_queue, headers
    raise TypeError(decision)  # pragma: no cover - Decision is a closed union
