"""What every long-running service shares: signals, waiting for Redis, the exit code.

A service runs in the foreground until SIGTERM or SIGINT. The signal handler only sets an
event; the service's own loop notices it, stops taking work, finishes what is in flight and
returns, and the process exits 0.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

import redis

from common.logging import get_logger
from common.redis_store import REDIS_ERRORS, redis_address

log = get_logger(__name__)


def install_stop_handlers(stop: threading.Event) -> None:
    def handle(signum: int, _frame: object) -> None:
        if not stop.is_set():
            log.info("stop requested; finishing in-flight work", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def wait_for_redis(client: redis.Redis, url: str, stop: threading.Event) -> None:
    """Block until Redis answers PING (containers may start before it), or until stopped."""
    delay = 1.0
    while not stop.is_set():
        try:
            client.ping()
            return
        except REDIS_ERRORS as exc:
            log.warning(
                "waiting for Redis",
                address=redis_address(url),
                error=exc.__class__.__name__,
                retry_in_seconds=delay,
            )
            stop.wait(delay)
            delay = min(delay * 2, 30.0)


def run_service(name: str, body: Callable[[threading.Event], None]) -> int:
    """Run ``body(stop)`` with signal handling; 0 when it returns after a stop request."""
    stop = threading.Event()
    install_stop_handlers(stop)
    log.info("service starting", service=name)
    body(stop)
    log.info("service stopped", service=name)
    return 0
