"""The writer's consumer: one asyncio event loop, handlers as coroutines (aio-pika, aiormq).

Each delivery is a task of the loop; up to ``concurrency`` (the prefetch) run at once, and a
handler that waits for Graph or Redis costs a suspended coroutine, not a thread. The ack
policy is the threaded consumer's (``common.consumer``): the decision comes from
``ack_policy.decide``, the copy of a retried or dead-lettered delivery from
``settlement_copy``, and the copy is published (confirmed) before the delivery is acked. A copy
that cannot be stored is tried again (1 s doubling to 30 s) while the delivery is held, never
requeued; stopping meanwhile leaves it unacked for the broker to redeliver
(``left_for_redelivery``).

Acks are coalesced as the threaded consumer's are (``settlement_frames``): the acks of one turn
of the event loop go out together, those of deliveries older than every one still in a
handling as one ``multiple`` ack. A busy consumer acks at most every ``ACK_PACE_SECONDS``: in
10 ms most handlings older than the oldest still running have ended, so one ``multiple`` ack
settles them, where acks of each turn went out one frame each (four in five, measured).

Stopping follows the order that loses nothing: stop taking deliveries (basic.cancel), let the
handlings in flight finish and their acks go out while the connection stays up (at most
``drain_seconds``), then close. A handling that ends with ``Stopping`` (the writer's requests
not sent yet when SIGTERM came) and a delivery whose handling had not begun are left unacked,
without a copy: the broker redelivers them and no attempt is counted. A delivery whose ack
could not be sent (the connection died) is redelivered by the broker; the handlers are
idempotent, so that is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Awaitable, Callable

import aio_pika.abc
import aiormq
import aiormq.abc
import structlog

from common import metrics
from common.ack_policy import DEFAULT_MAX_ATTEMPTS, Decision, decide
from common.async_publisher import ASYNC_CONNECTION_ERRORS, AsyncPublisher, open_connection
from common.consumer import OUTCOMES, Delivery, settlement_copy, settlement_frames
from common.errors import ServiceUnavailable, Stopping
from common.logging import get_logger
from common.rabbit import RabbitConnector
from common.topology import Topology, WorkQueue

log = get_logger(__name__)

AsyncHandler = Callable[[Delivery], Awaitable[None]]

ACK_PACE_SECONDS = 0.01


class _Acks:
    """One channel's deliveries not acked yet (delivery order), and the acks to send at the
    end of this turn of the event loop."""

    def __init__(
        self, channel: aiormq.abc.AbstractChannel, pace_seconds: float = ACK_PACE_SECONDS
    ) -> None:
        self.channel = channel
        self.unsettled: dict[int, None] = {}
        self._acked: set[int] = set()
        self._flushing: asyncio.Task | None = None
        self._pace = pace_seconds
        self._last_flush = float("-inf")  # the loop's clock

    def ack(self, delivery_tag: int) -> None:
        self._acked.add(delivery_tag)
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def sent(self) -> None:
        """Wait for the acks queued so far to be written (before the connection closes)."""
        if self._flushing is not None:
            await asyncio.shield(self._flushing)

    async def _flush(self) -> None:
        # The acks of every handling that ends in this turn, or within the pace of the last.
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, self._last_flush + self._pace - loop.time()))
        self._last_flush = loop.time()
        self._flushing = None
        acked, self._acked = self._acked, set()
        try:
            for frame in settlement_frames(self.unsettled, acked):
                await self.channel.basic_ack(frame.delivery_tag, multiple=frame.multiple)
        except ASYNC_CONNECTION_ERRORS:
            log.warning("connection gone before the ack; the broker will redeliver")
        for delivery_tag in acked:
            self.unsettled.pop(delivery_tag, None)


class AsyncConsumer:
    """Consumes one work queue with up to ``concurrency`` handlings at once until ``stop``."""

    def __init__(
        self,
        *,
        connector: RabbitConnector,
        topology: Topology,
        queue: WorkQueue,
        handler: AsyncHandler,
        publisher: AsyncPublisher,
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
        self._inflight: set[asyncio.Task] = set()
        self._acks: _Acks | None = None  # the current channel's
        self._idle = asyncio.Event()
        self._idle.set()
        self._stop = asyncio.Event()  # run()'s, once running
        self.connected = threading.Event()  # read by the health server's thread
        self._heartbeat = time.monotonic()

    @property
    def queue_name(self) -> str:
        return self._queue.name

    def alive(self, max_silence: float = 60.0) -> bool:
        """The consuming loop ran recently (while consuming, or while waiting to reconnect)."""
        return time.monotonic() - self._heartbeat < max_silence

    # --- the consuming loop --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; reconnect with capped, jittered backoff meanwhile."""
        self._stop = stop
        backoff = 1.0
        try:
            while not stop.is_set():
                try:
                    await self._consume(stop)
                    backoff = 1.0
                except (*ASYNC_CONNECTION_ERRORS, ServiceUnavailable) as exc:
                    self.connected.clear()
                    if stop.is_set():
                        break
                    delay = backoff * random.uniform(0.5, 1.0)
                    log.warning(
                        "broker connection lost; reconnecting",
                        queue=self._queue.name,
                        error=str(exc) or exc.__class__.__name__,
                        retry_in_seconds=round(delay, 2),
                    )
                    await self._wait(stop, delay)
                    backoff = min(backoff * 2, 30.0)
        finally:
            self.connected.clear()
            await self._drain(time.monotonic() + self._drain_seconds)
            for task in self._inflight:
                task.cancel()

    async def _consume(self, stop: asyncio.Event) -> None:
        connection = await open_connection(self._connector, self._topology)
        lost = asyncio.Event()
        connection.close_callbacks.add(lambda *_args: lost.set())
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=self._concurrency)
            # Acks of an earlier connection's deliveries cannot be sent any more: the broker
            # redelivers those.
            underlay = await channel.get_underlay_channel()
            self._acks = _Acks(underlay)
            # Straight on aiormq's channel: it runs each delivery as a task of its own, which
            # is all a handling needs; aio-pika's consumer wraps every delivery in a message
            # object and a second task (about a tenth of the writer's RabbitMQ CPU).
            consuming = await underlay.basic_consume(
                self._queue.name, self._on_message, no_ack=False
            )
            tag = consuming.consumer_tag
            self.connected.set()
            log.info("consuming", queue=self._queue.name, prefetch=self._concurrency)
            next_sample = time.monotonic()
            while not stop.is_set() and not lost.is_set():
                self._heartbeat = time.monotonic()
                if self._heartbeat >= next_sample:
                    await self._sample_depths(channel)
                    next_sample = time.monotonic() + self._depth_sample_seconds
                await self._wait_any(stop, lost, 1.0)
            if lost.is_set():
                raise ServiceUnavailable(f"lost RabbitMQ at {self._connector.address}")
            # Orderly stop: no new deliveries, finish and ack what is in flight, then close.
            await underlay.basic_cancel(tag)
            await self._drain(time.monotonic() + self._drain_seconds)
            await self._acks.sent()
            if self._inflight:
                log.warning(
                    "stopping with unfinished deliveries; the broker will redeliver them",
                    queue=self._queue.name,
                    unfinished=len(self._inflight),
                )
        finally:
            self.connected.clear()
            with contextlib.suppress(Exception):
                await connection.close()

    async def _sample_depths(self, channel: aio_pika.abc.AbstractChannel) -> None:
        """Ready messages of the work queue and its dead letters, and what this process holds:
        the metrics behind the "no progress" and "dead letters" alerts (deploy/prometheus)."""
        for name in (self._queue.name, self._queue.dead_letter_queue):
            try:
                declared = await channel.declare_queue(name, passive=True)
            except aio_pika.exceptions.ChannelClosed as exc:  # deleted under us
                raise ServiceUnavailable(f"queue {name}: {exc}") from None
            count = declared.declaration_result.message_count
            metrics.QUEUE_MESSAGES.labels(name).set(count or 0)
        metrics.MESSAGES_IN_FLIGHT.labels(self._queue.name).set(len(self._inflight))

    async def _drain(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if self._inflight and remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), remaining)

    # --- one delivery --------------------------------------------------------------------------

    async def _on_message(self, message: aiormq.abc.DeliveredMessage) -> None:
        """A task of its own (aiormq starts one per delivery)."""
        task = asyncio.current_task()
        assert task is not None
        acks, deliver = self._acks, message.delivery
        assert acks is not None and isinstance(deliver, aiormq.spec.Basic.Deliver)
        delivery_tag = deliver.delivery_tag
        acks.unsettled[delivery_tag] = None
        self._inflight.add(task)
        self._idle.clear()
        properties = message.header.properties
        delivery = Delivery(
            body=message.body,
            routing_key=deliver.routing_key or "",
            message_id=properties.message_id,
            correlation_id=properties.correlation_id,
            headers=dict(properties.headers or {}),
            redelivered=bool(deliver.redelivered),
        )
        structlog.contextvars.bind_contextvars(
            correlation_id=delivery.correlation_id,
            message_id=delivery.message_id,
            queue=self._queue.name,
            attempt=delivery.attempt,
        )
        try:
            if await self._handle_and_settle(delivery):
                if acks is self._acks:
                    acks.ack(delivery_tag)
                else:
                    log.warning("connection gone before the ack; the broker will redeliver")
        finally:
            self._inflight.discard(task)
            if not self._inflight:
                self._idle.set()

    async def _handle_and_settle(self, delivery: Delivery) -> bool:
        """Run the handler and carry out the decision. True: ack; False: leave the delivery
        unsettled (stopping before its copy was stored: the broker redelivers it)."""
        started = time.monotonic()
        error: BaseException | None = None
        if self._stop.is_set():
            return self._left(delivery, started, "stopping before its handling began")
        try:
            await self._handler(delivery)
        except Exception as exc:  # noqa: BLE001 - every failure goes through the ack policy
            error = exc
        if isinstance(error, Stopping) and self._stop.is_set():
            return self._left(delivery, started, str(error))
        decision = decide(
            error, attempt=delivery.attempt, queue=self._queue, max_attempts=self._max_attempts
        )
        if self._on_decision is not None:
            try:
                self._on_decision(delivery, decision)
            except Exception:  # noqa: BLE001 - an observer must not keep the delivery unsettled
                log.exception("the decision observer failed; settling anyway")
        stored = await self._settle_until_stored(decision, delivery)
        outcome = OUTCOMES[type(decision)] if stored else "left_for_redelivery"
        metrics.MESSAGES.labels(self._queue.name, outcome).inc()
        metrics.HANDLING_SECONDS.labels(self._queue.name).observe(time.monotonic() - started)
        return stored

    def _left(self, delivery: Delivery, started: float, why: str) -> bool:
        """Stopping: the delivery is neither acked nor copied; the broker redelivers it (to
        another replica, or this one after its restart), and no attempt is counted."""
        log.info("stopping; the delivery is left for the broker to redeliver", reason=why)
        metrics.MESSAGES.labels(self._queue.name, "left_for_redelivery").inc()
        metrics.HANDLING_SECONDS.labels(self._queue.name).observe(time.monotonic() - started)
        return False

    async def _settle_until_stored(self, decision: Decision, delivery: Delivery) -> bool:
        """Carry out the decision, trying the copy's publish again (1 s doubling to 30 s) until
        the broker confirms it; False if the consumer stops first. The delivery is held
        meanwhile, not requeued (see ``common.consumer``)."""
        copy = settlement_copy(decision, delivery, self._queue)
        if copy is None:
            return True
        target, headers = copy
        delay = 1.0
        while True:
            try:
                await self._publisher.publish(
                    target,
                    delivery.body,
                    exchange="",
                    message_id=delivery.message_id,
                    correlation_id=delivery.correlation_id,
                    headers=headers,
                )
                return True
            except Exception as exc:  # noqa: BLE001 - a PublishError, or one nobody foresaw
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
                if await self._wait(self._stop, wait):
                    log.warning("stopping; the broker will redeliver the held delivery")
                    return False
                delay = min(delay * 2, 30.0)

    @staticmethod
    async def _wait(event: asyncio.Event, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if ``event`` was set meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)
        return event.is_set()

    @staticmethod
    async def _wait_any(first: asyncio.Event, second: asyncio.Event, seconds: float) -> None:
        waits = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
