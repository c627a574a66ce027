"""Free TCP ports for the servers the tests start themselves."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable
from pathlib import Path

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")

#: Ports this process handed out already: a server may bind its port seconds later (RabbitMQ
#: boots for a while) or leave it for a restart, so "free now" is not enough to hand it again.
_HANDED_OUT: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(part) for part in _EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return low, high


def _worker_share() -> tuple[int, int]:
    """(index, count) of this pytest-xdist worker; (0, 1) outside xdist.

    Under ``pytest -n N`` the workers pick ports at the same time: each takes only the ports
    whose last four digits modulo N are its index, so two workers never pick the same port,
    however long their servers take to bind it or stay down during a restart, and a Redis
    Cluster node's bus port (the port + 10000) falls in its own worker's share."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not worker.startswith("gw") or count < 2:
        return 0, 1
    return int(worker[2:]) % count, count


def _ours() -> Callable[[int], bool]:
    """Whether a port is outside the ephemeral range, of this worker's share and not handed
    out yet."""
    low, high = _ephemeral_range()
    index, count = _worker_share()

    def ours(port: int) -> bool:
        outside = 10_000 <= port < low or high < port < 65_536
        return outside and port % 10_000 % count == index and port not in _HANDED_OUT

    return ours


def _hand_out(port: int) -> int:
    _HANDED_OUT.add(port)
    return port


def free_port() -> int:
    """A free port on 127.0.0.1 outside the kernel's ephemeral range, never handed out before
    by this process nor by another xdist worker (``_worker_share``).

    Binding to port 0 hands out an ephemeral port, and a server that restarts on it (the fault
    suite's own RabbitMQ and Redis) can find it taken meanwhile as the local end of some
    outgoing connection: RabbitMQ then fails to boot with ``could_not_start_listener``. Ports
    outside that range are never handed to outgoing connections.
    """
    candidates = list(filter(_ours(), range(10_000, 65_536)))
    for port in random.sample(candidates, min(200, len(candidates))):
        if _bindable(port):
            return _hand_out(port)
    low, high = _ephemeral_range()
    raise RuntimeError(f"no free port on 127.0.0.1 outside the ephemeral range {low}-{high}")


def free_cluster_port() -> int:
    """A free port whose Redis Cluster bus port (the port + 10000) is free too, both outside
    the ephemeral range (as ``free_port``)."""
    ours = _ours()
    candidates = [port for port in range(10_000, 55_536) if ours(port) and ours(port + 10_000)]
    for port in random.sample(candidates, min(200, len(candidates))):
        if _bindable(port) and _bindable(port + 10_000):
            _hand_out(port + 10_000)
            return _hand_out(port)
    raise RuntimeError("no free pair of ports for a Redis Cluster node")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections on the port (a server the test started is up)."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
