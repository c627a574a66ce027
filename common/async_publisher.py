"""Confirmed publishing on an event loop (aio-pika): many handlings, one connection.

aio-pika is a maintained asyncio AMQP client (over aiormq) that does publisher confirms and
mandatory returns natively: a publish is a coroutine that returns once the broker confirmed
the message, while other coroutines publish meanwhile, so a confirm costs no round trip of
the caller's own and no thread hand-off. The guarantee is the ``Publisher``'s: ``publish``
returns only once the broker has confirmed the message; unroutable raises
``UnroutableMessage``; a nack, a lost connection or no confirm in time is tried again, then
raises ``PublishNotConfirmed``.

The connection is opened on the first publish and re-opened on the next one after a failure
(the topology is declared first, over a short blocking connection in a worker thread).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from typing import Any

import aio_pika
import aio_pika.abc
import aiormq.exceptions

from common.errors import PublishNotConfirmed, ServiceUnavailable
from common.logging import get_logger
from common.rabbit import HEARTBEAT_SECONDS, RabbitConnector, declare_topology, unroutable
from common.topology import Topology

log = get_logger(__name__)

#: What aio-pika / aiormq raise when the connection or channel is gone (a new one may work).
ASYNC_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.AMQPChannelError,
    ConnectionError,
    OSError,
    TimeoutError,
)


async def open_connection(
    connector: RabbitConnector, topology: Topology
) -> aio_pika.abc.AbstractConnection:
    """Declare the topology (blocking pika, in a thread, on the next node of a cluster in
    turn), then connect to that node with aio-pika; failures as ``ServiceUnavailable``."""
    try:
        url = await asyncio.to_thread(_declare, connector, topology)
        return await aio_pika.connect(
            url,
            client_properties={"connection_name": connector.connection_name},
            timeout=connector.handshake_timeout,
            heartbeat=HEARTBEAT_SECONDS,
        )
    except aiormq.exceptions.ProbableAuthenticationError:
        raise ServiceUnavailable(
            f"RabbitMQ at {connector.address} refused the credentials of PWASYNC_AMQP_URL"
        ) from None
    except ASYNC_CONNECTION_ERRORS as exc:
        raise ServiceUnavailable(
            f"cannot reach RabbitMQ at {connector.address} ({exc.__class__.__name__})"
        ) from None


def _declare(connector: RabbitConnector, topology: Topology) -> str:
    """Declare the topology on the next node in turn (``RabbitConnector``); its URL."""
    connection, _, url = connector.open_node()
    try:
        declare_topology(connection, topology)
    finally:
        if connection.is_open:
            connection.close()
    return url


def amqp_message(
    body: bytes,
    *,
    message_id: str,
    correlation_id: str | None,
    headers: Mapping[str, Any] | None,
) -> aio_pika.Message:
    """The properties ``common.rabbit.message_properties`` gives a blocking publish."""
    return aio_pika.Message(
        body,
        content_type="application/json",
        content_encoding="utf-8",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message_id,
        correlation_id=correlation_id,
        timestamp=int(time.time()),
        headers=dict(headers or {}),
    )


class AsyncPublisher:
    """Confirmed publisher for the coroutines of one event loop."""

    def __init__(
        self,
        connector: RabbitConnector,
        topology: Topology,
        *,
        attempts: int = 3,
        confirm_timeout: float = 60.0,
    ) -> None:
        self._connector = connector
        self._topology = topology
        self._attempts = attempts
        self._confirm_timeout = confirm_timeout
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self._opening = asyncio.Lock()
        self._closed = False

    async def publish(
        self,
        routing_key: str,
        body: bytes,
        *,
        exchange: str | None = None,
        message_id: str | None = None,
        correlation_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> str:
        """Publish and return the message id once the broker has confirmed the message."""
        message_id = message_id or str(uuid.uuid4())
        message = amqp_message(
            body, message_id=message_id, correlation_id=correlation_id, headers=headers
        )
        last_error: BaseException | None = None
        for number in range(1, self._attempts + 1):
            if self._closed:
                raise PublishNotConfirmed("the publisher is closed; the message was not sent")
            try:
                target = await self._target(exchange)
                await target.publish(
                    message, routing_key, mandatory=True, timeout=self._confirm_timeout
                )
                return message_id
            except aiormq.exceptions.PublishError:
                raise unroutable(
                    self._topology.exchange if exchange is None else exchange, routing_key
                ) from None
            except aiormq.exceptions.DeliveryError as exc:  # nacked: the broker may take it
                last_error = exc
            except (*ASYNC_CONNECTION_ERRORS, ServiceUnavailable) as exc:
                last_error = exc
                await self._reset()
            if number < self._attempts:
                await asyncio.sleep(0.2 * 2**number)
        raise PublishNotConfirmed(
            f"RabbitMQ at {self._connector.address} did not confirm a message to "
            f"{routing_key!r} after {self._attempts} attempts "
            f"({last_error.__class__.__name__ if last_error else 'unknown'})"
        )

    async def _target(self, exchange: str | None) -> aio_pika.abc.AbstractExchange:
        channel = self._channel
        if channel is None or channel.is_closed:
            async with self._opening:
                if self._channel is None or self._channel.is_closed:
                    await self._reset()
                    self._connection = await open_connection(self._connector, self._topology)
                    self._channel = await self._connection.channel(
                        publisher_confirms=True, on_return_raises=True
                    )
                    self._exchange = await self._channel.get_exchange(
                        self._topology.exchange, ensure=False
                    )
                channel = self._channel
        if exchange == "":
            return channel.default_exchange
        assert self._exchange is not None
        if exchange is None or exchange == self._topology.exchange:
            return self._exchange
        return await channel.get_exchange(exchange, ensure=False)

    async def _reset(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            try:
                await connection.close()
            except Exception:  # noqa: BLE001 - a broken connection is gone either way
                log.debug("closing a broken publisher connection failed")

    async def close(self) -> None:
        self._closed = True
        await self._reset()
