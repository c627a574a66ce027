"""Free TCP ports for the servers the tests start themselves."""

from __future__ import annotations

import random
import socket
from pathlib import Path

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(part) for part in _EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return low, high


def free_port() -> int:
    """A free port on 127.0.0.1 outside the kernel's ephemeral range.

    Binding to port 0 hands out an ephemeral port, and a server that restarts on it (the fault
    suite's own RabbitMQ and Redis) can find it taken meanwhile as the local end of some
    outgoing connection: RabbitMQ then fails to boot with ``could_not_start_listener``. Ports
    outside that range are never handed to outgoing connections.
    """
    low, high = _ephemeral_range()
    candidates = [*range(10_000, low), *range(high + 1, 65_536)]
    for port in random.sample(candidates, min(200, len(candidates))):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on 127.0.0.1 outside the ephemeral range {low}-{high}")


def free_cluster_port() -> int:
    """A free port whose Redis Cluster bus port (the port + 10000) is free too, both outside
    the ephemeral range (as ``free_port``)."""
    low, high = _ephemeral_range()
    candidates = [
        port
        for port in [*range(10_000, low), *range(high + 1, 65_536)]
        if not low <= port + 10_000 <= high and port + 10_000 < 65_536
    ]
    for port in random.sample(candidates, min(200, len(candidates))):
        if _bindable(port) and _bindable(port + 10_000):
            return port
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
