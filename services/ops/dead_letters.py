"""Dead letters: list them with their reasons, show one, replay after a fix, purge.

Every work queue has a ``.dead`` queue. A message lands there either from the ack policy (with
``x-pwasync-dead-reason``, ``-dead-at``, ``-dead-id`` and ``-source-queue`` headers) or from the
broker itself when a consumer died holding it too often (quorum delivery limit; the reason is
then read from ``x-death``).

Looking must neither remove nor age a dead letter. Giving a message back (a reject, a closed
channel) counts as a delivery on a quorum queue, and RabbitMQ 4 drops a message past its
delivery limit (20 by default) where no dead-letter target is set, as on a ``.dead`` queue. So
browsing takes each message, stores a fresh copy at the queue's tail (confirmed, with what it
read from ``x-death`` written into our own headers and its id stamped), and only then acks the
original: one pass over the messages that were there when it began. A crash between the confirm
and the ack leaves two copies with the same id; the next pass acks the second. Replaying
publishes into the source queue with the attempts reset, waits for the confirm, then acks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel

from common.consumer import (
    ATTEMPT_HEADER,
    DEAD_AT_HEADER,
    DEAD_ID_HEADER,
    DEAD_REASON_HEADER,
    LAST_ERROR_HEADER,
    SOURCE_QUEUE_HEADER,
)
from common.errors import PermanentError
from common.rabbit import RabbitConnector, declare_topology, message_properties
from common.topology import Topology

REPLAYED_AT_HEADER = "x-pwasync-replayed-at"
#: Most dead letters read per queue for a listing; a DLQ that holds more has a bigger problem.
BROWSE_LIMIT = 1000


@dataclass(frozen=True)
class DeadLetter:
    id: str
    dead_queue: str
    source_queue: str
    reason: str
    dead_at: str | None
    attempts: int
    message_id: str | None
    correlation_id: str | None
    headers: dict[str, Any]
    body: bytes
    properties: pika.BasicProperties = field(repr=False, compare=False)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "queue": self.source_queue,
            "reason": self.reason,
            "dead_at": self.dead_at,
            "attempts": self.attempts,
            "message_id": self.message_id,
            "correlation_id": self.correlation_id,
            "size": len(self.body),
        }


class DeadLetterBox:
    def __init__(self, connector: RabbitConnector, topology: Topology) -> None:
        self._connector = connector
        self._topology = topology

    def dead_queues(self) -> list[str]:
        return [queue.dead_letter_queue for queue in self._topology.work_queues.values()]

    def list(self) -> list[DeadLetter]:
        letters = []
        with self._channel() as channel:
            for queue in self.dead_queues():
                for letter, tag in _take_each(channel, queue):
                    _put_back(channel, letter)
                    channel.basic_ack(tag)
                    letters.append(letter)
        return letters

    def find(self, letter_id: str) -> DeadLetter:
        for letter in self.list():
            if letter.id == letter_id:
                return letter
        raise PermanentError(f"no dead letter with id {letter_id!r} (see `pwasync dlq list`)")

    def replay(self, letter_id: str | None) -> list[DeadLetter]:
        """Replay one dead letter (by id) or all of them (``None``); returns those replayed."""
        replayed = []
        with self._channel() as channel:
            for queue in self.dead_queues():
                for letter, tag in _take_each(channel, queue):
                    if letter_id is not None and letter.id != letter_id:
                        _put_back(channel, letter)
                        channel.basic_ack(tag)
                        continue
                    channel.basic_publish(
                        "",
                        letter.source_queue,
                        letter.body,
                        properties=message_properties(
                            message_id=letter.message_id or letter.id,
                            correlation_id=letter.correlation_id,
                            headers=_replay_headers(letter.headers),
                        ),
                        mandatory=True,
                    )
                    channel.basic_ack(tag)
                    replayed.append(letter)
        if letter_id is not None and not replayed:
            raise PermanentError(f"no dead letter with id {letter_id!r} (see `pwasync dlq list`)")
        return replayed

    def purge(self) -> int:
        purged = 0
        with self._channel() as channel:
            for queue in self.dead_queues():
                purged += channel.queue_purge(queue).method.message_count
        return purged

    @contextmanager
    def _channel(self) -> Iterator[BlockingChannel]:
        connection = self._connector.connect()
        try:
            declare_topology(connection, self._topology)
            channel = connection.channel()
            channel.confirm_delivery()  # a copy is stored before its original is acked
            yield channel
        finally:
            if connection.is_open:
                # Returns what was taken and not acked (only after a failure: one delivery).
                connection.close()


def _take_each(channel: BlockingChannel, queue: str) -> Iterator[tuple[DeadLetter, int]]:
    """Each dead letter in ``queue`` when the pass began, taken and not acked yet, with its
    delivery tag; the caller stores it elsewhere or back, then acks it. A second copy of a
    letter already stored in this pass (left by a crash after the confirm) is acked here."""
    method, properties, body = channel.basic_get(queue, auto_ack=False)
    if method is None:
        return
    # Copies go to the tail, so the pass ends after the messages that were there at its start.
    remaining = min(method.message_count + 1, BROWSE_LIMIT)
    seen: set[str] = set()
    while True:
        letter = _letter(queue, properties, body)
        if letter.id in seen:
            channel.basic_ack(method.delivery_tag)
        else:
            seen.add(letter.id)
            yield letter, method.delivery_tag
        remaining -= 1
        if remaining <= 0:
            return
        method, properties, body = channel.basic_get(queue, auto_ack=False)
        if method is None:
            return


def _put_back(channel: BlockingChannel, letter: DeadLetter) -> None:
    """Store a fresh copy of ``letter`` at the tail of its dead-letter queue (confirmed;
    raises otherwise). What was read from ``x-death`` goes into our own headers, so the copy
    reads the same whatever the broker does with a client-published ``x-death``."""
    headers = {k: v for k, v in letter.headers.items() if k != "x-delivery-count"}
    headers[DEAD_ID_HEADER] = letter.id
    headers[DEAD_REASON_HEADER] = letter.reason
    headers[SOURCE_QUEUE_HEADER] = letter.source_queue
    if letter.dead_at is not None:
        headers[DEAD_AT_HEADER] = letter.dead_at
    properties = letter.properties
    channel.basic_publish(
        "",
        letter.dead_queue,
        letter.body,
        properties=pika.BasicProperties(
            content_type=properties.content_type,
            content_encoding=properties.content_encoding,
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=properties.message_id,
            correlation_id=properties.correlation_id,
            timestamp=properties.timestamp,
            type=properties.type,
            headers=headers,
        ),
        mandatory=True,
    )


def _letter(dead_queue: str, properties: pika.BasicProperties, body: bytes) -> DeadLetter:
    headers = dict(properties.headers or {})
    death = _first_death(headers)
    reason = headers.get(DEAD_REASON_HEADER)
    if reason is None and death is not None:
        reason = f"dead-lettered by the broker: {_text(death.get('reason'))}"
    source = headers.get(SOURCE_QUEUE_HEADER) or (_text(death.get("queue")) if death else None)
    dead_at = headers.get(DEAD_AT_HEADER)
    if dead_at is None and death is not None and isinstance(death.get("time"), datetime):
        dead_at = death["time"].replace(tzinfo=UTC).isoformat()
    # The broker's dead letters carry no id of ours: derive one that every pass computes alike
    # (the death's time and count tell two deaths of the same message apart).
    letter_id = (
        headers.get(DEAD_ID_HEADER)
        or hashlib.sha1(  # noqa: S324 - an id, not security
            (properties.message_id or "").encode()
            + body
            + repr((death or {}).get("time")).encode()
            + repr((death or {}).get("count")).encode()
        ).hexdigest()[:12]
    )
    return DeadLetter(
        id=_text(letter_id),
        dead_queue=dead_queue,
        source_queue=_text(source) if source else dead_queue.removesuffix(".dead"),
        reason=_text(reason or "unknown"),
        dead_at=_text(dead_at) if dead_at else None,
        attempts=int(headers.get(ATTEMPT_HEADER, 1)),
        message_id=properties.message_id,
        correlation_id=properties.correlation_id,
        headers=headers,
        body=body,
        properties=properties,
    )


def _first_death(headers: dict[str, Any]) -> dict[str, Any] | None:
    deaths = headers.get("x-death")
    return deaths[0] if isinstance(deaths, list) and deaths else None


def _replay_headers(headers: dict[str, Any]) -> dict[str, Any]:
    kept = {
        key: value
        for key, value in headers.items()
        if key not in (DEAD_REASON_HEADER, DEAD_AT_HEADER, DEAD_ID_HEADER, LAST_ERROR_HEADER)
        and not key.startswith("x-death")
        and not key.startswith("x-first-death")
        and not key.startswith("x-last-death")
    }
    kept[ATTEMPT_HEADER] = 1
    kept[REPLAYED_AT_HEADER] = datetime.now(UTC).isoformat()
    return kept


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
