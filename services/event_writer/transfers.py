"""``transfer.succeeded`` for many handlings in one confirmed message (group commit).

A handling's transfer waits here until the broker has confirmed a message that carries it, as
it did when each had a message of its own. While one message waits for its confirm, the
transfers that finish meanwhile gather for the next, so a quiet writer sends each at once and
a busy one sends a few hundred per publish: one publish, one delivery, one ack and one Redis
round trip in the ledger for them all, where each used to cost all four. A publish that fails
fails every handling it carried, and each is retried through the ack policy as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from common.messages import MAX_TRANSFERS, TransferSucceeded, encode, transfers_message

#: Publishes one body with confirms (the correlation id when every transfer shares one).
PublishBody = Callable[[bytes, str | None], Awaitable[None]]

_Pending = tuple[TransferSucceeded, str | None, asyncio.Future[None]]


class TransferBatcher:
    def __init__(self, publish: PublishBody, *, most: int = MAX_TRANSFERS) -> None:
        self._publish = publish
        self._most = most
        self._pending: list[_Pending] = []
        self._sending: asyncio.Task[None] | None = None

    async def publish(self, transfer: TransferSucceeded, correlation_id: str | None) -> None:
        """Return once a confirmed message carries ``transfer``; raise what its publish
        raised."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((transfer, correlation_id, future))
        if self._sending is None:
            self._sending = asyncio.create_task(self._send_while_pending())
        # Shielded: a handling cancelled meanwhile leaves its transfer in the message; the
        # ledger allocates it, which the events already in Outlook justify.
        await asyncio.shield(future)

    async def close(self) -> None:
        """Wait for the transfers handed in so far to be sent."""
        if self._sending is not None:
            await asyncio.shield(self._sending)

    async def _send_while_pending(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self._most], self._pending[self._most :]
                await self._send(batch)
        finally:
            self._sending = None

    async def _send(self, batch: list[_Pending]) -> None:
        ids = {correlation_id for _, correlation_id, _ in batch}
        try:
            body = encode(transfers_message([(t, c) for t, c, _ in batch]))
            await self._publish(body, ids.pop() if len(ids) == 1 else None)
        except BaseException as exc:  # noqa: BLE001 - each handling gets it to decide
            for _, _, future in batch:
                if future.done():
                    continue
                if isinstance(exc, Exception):
                    future.set_exception(exc)
                else:  # the writer stops: the handlings end as cancelled
                    future.cancel()
            if not isinstance(exc, Exception):
                raise
        else:
            for _, _, future in batch:
                if not future.done():
                    future.set_result(None)
