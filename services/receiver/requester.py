"""The receiver's one publishing loop: coalesced publish calls become ``sync.requested``.

HTTP threads only announce calls; this loop owns the coalescer's timers and the broker. A
request that cannot be published stays in the outbox and is retried with a growing pause
(1 to 30 s): a publish announced while the broker is away is late, never lost, and the
receiver never spins. On stop, whatever is folded or waiting gets one last attempt; what
still fails is logged by project (the next poll reads those projects anyway).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

from common import metrics
from common.health import HEARTBEATS, Heartbeats
from common.logging import get_logger
from services.receiver.coalescing import Due, PublishCoalescer

log = get_logger(__name__)

Publish = Callable[[list[uuid.UUID]], None]
HEARTBEAT_SECONDS = 1.0
#: /healthz reports the loop dead after this long without a round (it wakes every second).
MAX_SILENCE_SECONDS = 30.0
MAX_BACKOFF_SECONDS = 30.0


class SyncRequester:
    def __init__(
        self,
        coalescer: PublishCoalescer,
        publish: Publish,
        *,
        clock: Callable[[], float] = time.monotonic,
        heartbeats: Heartbeats = HEARTBEATS,
    ) -> None:
        self._coalescer = coalescer
        self._publish = publish
        self._clock = clock
        self._wake = threading.Condition()
        self._outbox: list[Due] = []
        self._backoff = 0.0
        self._retry_at: float | None = None
        self._heartbeats = heartbeats
        self.failing_since: float | None = None  # the first failed publish of this outage

    def announce(self, project_id: uuid.UUID, received_at: float) -> None:
        with self._wake:
            due = self._coalescer.offer(project_id, received_at)
            if due is not None:
                self._outbox.append(due)
            self._wake.notify()  # a folded call moves the next deadline too

    def run(self, stop: threading.Event) -> None:
        heartbeat = self._heartbeats.register("sync-requester", MAX_SILENCE_SECONDS)
        try:
            while not stop.is_set():
                try:
                    self.send_due()
                except Exception as exc:  # noqa: BLE001 - the loop outlives any one failure
                    log.error("sync request loop failed; going on", error=repr(exc))
                heartbeat.beat()
                self._sleep(stop)
            self._send(self._take(final=True), final=True)
        finally:
            heartbeat.close()

    def send_due(self) -> None:
        if self._retry_at is not None and self._clock() < self._retry_at:
            return
        self._send(self._take(final=False), final=False)

    def _take(self, *, final: bool) -> list[Due]:
        with self._wake:
            now = self._clock()
            ready = self._outbox + (self._coalescer.drain() if final else self._coalescer.due(now))
            self._outbox = []
            return ready

    def _send(self, ready: list[Due], *, final: bool) -> None:
        if not ready:
            return
        projects = sorted({due.project_id for due in ready})
        try:
            self._publish(projects)
        except Exception as exc:  # noqa: BLE001 - broker errors and bugs alike: keep the work
            self._failed(ready, projects, exc, final=final)
            return
        now = self._clock()
        for due in ready:
            metrics.RECEIVER_CALL_TO_REQUEST_SECONDS.observe(max(0.0, now - due.received_at))
        metrics.RECEIVER_SYNCS_REQUESTED.inc()
        self.failing_since, self._retry_at, self._backoff = None, None, 0.0

    def _failed(self, ready: list[Due], projects: list[uuid.UUID], exc: Exception, *, final: bool):
        ids = [str(p) for p in projects]
        if final:
            log.error(
                "could not request the sync of published projects before stopping; "
                "the next poll reads them",
                project_ids=ids,
                error=str(exc),
            )
            return
        with self._wake:
            self._outbox = ready + self._outbox
        now = self._clock()
        if self.failing_since is None:
            self.failing_since = now
        self._backoff = min(MAX_BACKOFF_SECONDS, max(1.0, self._backoff * 2))
        self._retry_at = now + self._backoff
        log.warning(
            "could not request a sync; retrying",
            project_ids=ids,
            error=str(exc),
            retry_in_seconds=self._backoff,
        )

    def _sleep(self, stop: threading.Event) -> None:
        """Until the next window ends, a call arrives or the retry pause is over (at most
        a heartbeat); never zero while publishing fails."""
        with self._wake:
            now = self._clock()
            if self._retry_at is not None:
                wake_at = self._retry_at
            elif self._outbox:
                return
            else:
                wake_at = self._coalescer.next_deadline() or now + HEARTBEAT_SECONDS
            if not stop.is_set():
                self._wake.wait(min(HEARTBEAT_SECONDS, max(0.0, wake_at - now)))
