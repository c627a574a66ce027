"""Confirmed publishing of a batch of messages for threaded callers.

A blocking publish waits a confirm round trip per message, so a caller with many messages to
hand over (the poller, a project's task changes) is paced by the broker's round trips, not by
its work. ``BatchPublisher.publish_all`` puts a whole batch in flight at once on an
``AsyncPublisher`` running in an event loop of its own thread, and returns once the broker has
confirmed every message. When some are not confirmed it raises ``NotAllConfirmed``, which says
which ones were, so the caller records those and sends the rest again later.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from common.async_publisher import AsyncPublisher
from common.errors import NotAllConfirmed
from common.rabbit import RabbitConnector
from common.topology import Topology

#: How long ``close`` waits for the loop's publisher to close its connection.
CLOSE_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Outgoing:
    """One message of a batch, to the topology's exchange."""

    routing_key: str
    body: bytes
    message_id: str
    correlation_id: str | None = None


class BatchPublisher:
    """Publishes batches with their confirms awaited together; any thread may call it."""

    def __init__(self, connector: RabbitConnector, topology: Topology) -> None:
        self._loop = asyncio.new_event_loop()
        self._publisher = AsyncPublisher(connector, topology)
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="batch-publisher", daemon=True
        )
        self._thread.start()

    def publish_all(self, messages: Sequence[Outgoing]) -> None:
        """Return once every message is confirmed; else raise ``NotAllConfirmed``. Bounded:
        each message gets the ``AsyncPublisher``'s attempts, each with its confirm timeout."""
        if not messages:
            return
        results = asyncio.run_coroutine_threadsafe(self._publish(messages), self._loop).result()
        failures = [(n, r) for n, r in enumerate(results) if isinstance(r, BaseException)]
        if not failures:
            return
        first = failures[0][1]
        raise NotAllConfirmed(
            f"{len(failures)} of {len(messages)} messages not confirmed: {first}",
            confirmed=frozenset(range(len(messages))) - {n for n, _ in failures},
            cause=first,
        )

    async def _publish(self, messages: Sequence[Outgoing]) -> list[object]:
        return await asyncio.gather(
            *(
                self._publisher.publish(
                    m.routing_key,
                    m.body,
                    message_id=m.message_id,
                    correlation_id=m.correlation_id,
                )
                for m in messages
            ),
            return_exceptions=True,
        )

    def close(self) -> None:
        """Close the connection and stop the loop. Call once no thread publishes any more."""
        if not self._thread.is_alive():
            return
        closing = asyncio.run_coroutine_threadsafe(self._publisher.close(), self._loop)
        try:
            closing.result(timeout=CLOSE_TIMEOUT_SECONDS)
        except Exception:  # noqa: BLE001 - a broken connection is gone either way
            pass
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=CLOSE_TIMEOUT_SECONDS)
            if not self._thread.is_alive():
                self._loop.close()
