"""``/healthz``, ``/readyz`` and ``/metrics`` on ``PWASYNC_HTTP_PORT`` (0.0.0.0).

- ``/healthz``: the process's loops are alive: each consumer's I/O loop, and every background
  loop registered in ``HEARTBEATS`` (the writer's dispatcher, senders and renewers, the
  ledger's releaser, the poller's scheduler), touched its heartbeat recently. A failing
  liveness probe means "restart me".
- ``/readyz``: the broker connection is up and consuming, and Redis answers PING. A failing
  readiness probe means "do not count on me now"; it recovers by itself.
- ``/metrics``: Prometheus text format.

A standard-library threading server in a daemon thread: three tiny endpoints do not justify a
web framework in every service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from common import metrics  # noqa: F401 - the metrics served at /metrics are defined there
from common.errors import ConfigError
from common.logging import get_logger

log = get_logger(__name__)

Check = Callable[[], bool]


class Heartbeat:
    """One background loop's sign of life: fresh while it beat within ``max_silence``."""

    def __init__(
        self, registry: Heartbeats, name: str, max_silence: float, clock: Callable[[], float]
    ):
        self.name = name
        self.max_silence = max_silence
        self._registry = registry
        self._clock = clock
        self._last = clock()

    def beat(self) -> None:
        self._last = self._clock()

    def fresh(self) -> bool:
        return self._clock() - self._last < self.max_silence

    def close(self) -> None:
        """The loop ended as asked: a stopped loop is not a dead one."""
        self._registry.remove(self.name)


class Heartbeats:
    """Every background loop of the process, by name; ``/healthz`` fails while one is silent
    (a loop that died, or one stuck in a call), so the orchestrator restarts the process
    instead of leaving it hung behind a green probe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._checks: dict[str, Check] = {}

    def register(self, name: str, max_silence: float) -> Heartbeat:
        with self._lock:
            name = self._unique(name)
            heartbeat = Heartbeat(self, name, max_silence, self._clock)
            self._checks[name] = heartbeat.fresh
        return heartbeat

    def add(self, name: str, check: Check) -> str:
        """A loop whose health is not a beat (a pool of senders: none stuck in one send)."""
        with self._lock:
            name = self._unique(name)
            self._checks[name] = check
        return name

    def remove(self, name: str) -> None:
        with self._lock:
            self._checks.pop(name, None)

    def checks(self) -> dict[str, Check]:
        with self._lock:
            return dict(self._checks)

    def _unique(self, name: str) -> str:
        candidate, n = name, 1
        while candidate in self._checks:
            n += 1
            candidate = f"{name}#{n}"
        return candidate


#: The process's loops; the health server reports them all.
HEARTBEATS = Heartbeats()


def run_every(
    name: str,
    interval: float,
    body: Callable[[], object],
    stop: threading.Event,
    *,
    heartbeats: Heartbeats = HEARTBEATS,
    max_backoff: float = 30.0,
) -> threading.Thread:
    """Run ``body`` every ``interval`` seconds in a daemon thread until ``stop``; the thread.

    The loop survives any exception: it logs it and waits longer before the next round
    (doubling up to ``max_backoff``), so a fault is neither fatal nor a hot loop. It beats
    after every round, failed or not, and is reported silent when a round hangs.
    """
    heartbeat = heartbeats.register(name, max_silence=max(60.0, 4 * (interval + max_backoff)))

    def run() -> None:
        delay = interval
        try:
            while not stop.wait(delay):
                try:
                    body()
                    delay = interval
                except Exception as exc:  # noqa: BLE001 - logged; the next round tries again
                    delay = _after_failure(name, exc, delay, interval, max_backoff)
                heartbeat.beat()
        finally:
            heartbeat.close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def _after_failure(
    name: str, exc: Exception, delay: float, interval: float, max_backoff: float
) -> float:
    """Log a failed round; the wait before the next one (doubled, at most ``max_backoff``)."""
    delay = min(max(delay * 2, interval), max_backoff)
    log.error(
        "background loop failed; trying again",
        loop=name,
        error=str(exc),
        error_type=exc.__class__.__name__,
        retry_in_seconds=delay,
    )
    return delay


async def run_every_async(
    name: str,
    interval: float,
    body: Callable[[], Awaitable[object]],
    stop: asyncio.Event,
    *,
    heartbeats: Heartbeats = HEARTBEATS,
    max_backoff: float = 30.0,
) -> None:
    """``run_every`` for an event loop: await ``body()`` every ``interval`` seconds until
    ``stop``, surviving any exception, beating after every round (a coroutine, to be run as a
    task). A loop whose event loop is blocked goes silent too: that is what it reports."""
    heartbeat = heartbeats.register(name, max_silence=max(60.0, 4 * (interval + max_backoff)))
    delay = interval
    try:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return
            try:
                await body()
                delay = interval
            except Exception as exc:  # noqa: BLE001 - logged; the next round tries again
                delay = _after_failure(name, exc, delay, interval, max_backoff)
            heartbeat.beat()
    finally:
        heartbeat.close()


class HealthServer:
    def __init__(
        self,
        port: int,
        *,
        liveness: dict[str, Check],
        readiness: dict[str, Check],
        heartbeats: Heartbeats = HEARTBEATS,
    ):
        self._liveness = liveness
        self._heartbeats = heartbeats
        self._readiness = readiness
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                server._answer(self)

            def log_message(self, *_args: object) -> None:
                pass  # probes every few seconds would drown the service's own log

        self._httpd = ThreadingHTTPServer(("0.0.0.0", port), Handler)  # noqa: S104
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="health-server", daemon=True
        )

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("serving /healthz, /readyz and /metrics", port=self.port)
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _answer(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(request, 200, generate_latest(), CONTENT_TYPE_LATEST)
        elif path in ("/healthz", "/readyz"):
            if path == "/healthz":
                checks = {**self._liveness, **self._heartbeats.checks()}
            else:
                checks = self._readiness
            results = {name: _safe(check) for name, check in checks.items()}
            ok = all(results.values())
            body = json.dumps({"status": "ok" if ok else "failing", "checks": results})
            self._send(request, 200 if ok else 503, body.encode(), "application/json")
        else:
            self._send(request, 404, b'{"error": "not found"}', "application/json")

    @staticmethod
    def _send(request: BaseHTTPRequestHandler, status: int, body: bytes, kind: str) -> None:
        request.send_response(status)
        request.send_header("Content-Type", kind)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)


def _safe(check: Check) -> bool:
    try:
        return bool(check())
    except Exception:  # noqa: BLE001 - a probe that raises is a failing probe
        return False


def serve_health(
    port: int, *, liveness: dict[str, Check], readiness: dict[str, Check]
) -> HealthServer | None:
    """Serve /healthz (with every registered loop), /readyz and /metrics on ``port``, started;
    None for port 0. A port that cannot be bound is the operator's to fix: ``ConfigError``."""
    if not port:
        return None
    try:
        return HealthServer(port, liveness=liveness, readiness=readiness).start()
    except OSError as exc:
        raise ConfigError(
            f"PWASYNC_HTTP_PORT: cannot listen on port {port} ({exc.strerror})"
        ) from None
