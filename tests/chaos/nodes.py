"""A RabbitMQ node and a Redis server of the test's own, so that a test may restart them.

The machine's shared RabbitMQ (5672) and Redis (6379) serve other test runs and are never
touched. These run on free ports under a temporary directory, as the local user:

- RabbitMQ 3.10: its own node name (``chaos-<random>@localhost``, registered with the running
  epmd), data and log directories, an empty plugin list (no management listener to collide
  with), a config file that names only its AMQP listener, and an Erlang cookie of its own
  (``HOME`` points the server and ``rabbitmqctl`` at it);
- Redis with AOF; ``appendfsync always`` unless told otherwise, so that a crash loses nothing
  the services were told was written, and the end state can be checked exactly.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.ports import free_port, port_open

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


def _wait(condition, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout:.0f} s")
        time.sleep(0.1)


class RabbitNode:
    def __init__(self, root: Path, *, management: bool = False) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.dist_port = free_port()
        self.name = f"chaos-{secrets.token_hex(4)}@localhost"
        self.restarts = 0
        # The management plugin (HTTP API), on a free loopback port, only when asked for.
        self.management_port = free_port() if management else None
        config = f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
        if management:
            config += (
                f"management.tcp.port = {self.management_port}\nmanagement.tcp.ip = 127.0.0.1\n"
            )
        (root / "rabbitmq.conf").write_text(config)
        plugins = "[rabbitmq_management]" if management else "[]"
        (root / "enabled_plugins").write_text(f"{plugins}.\n")
        cookie = root / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20))
        cookie.chmod(0o400)
        self._env = {
            **os.environ,
            "HOME": str(root),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(root / "log"),
            "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(root / "node.pid"),
        }

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    @property
    def management_url(self) -> str:
        assert self.management_port is not None, "started without management"
        return f"http://guest:guest@127.0.0.1:{self.management_port}"

    def _ctl(self, *args: str, timeout: float = 90) -> None:
        subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.name, *args],
            env=self._env,
            check=True,
            capture_output=True,
            timeout=timeout,
        )

    def start(self) -> None:
        (self.root / "node.pid").unlink(missing_ok=True)
        subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmq-server"), "-detached"],
            env=self._env,
            check=True,
            capture_output=True,
            timeout=30,
        )
        # `wait` returns once the pid file exists and the rabbit application runs.
        self._ctl("wait", "--timeout", "60", str(self.root / "node.pid"))
        _wait(lambda: port_open(self.port), 30, "RabbitMQ did not listen")
        if self.management_port is not None:
            _wait(lambda: port_open(self.management_port), 60, "management did not listen")

    def stop(self) -> None:
        """An orderly stop (what a restart by an operator or an upgrade does)."""
        self._ctl("stop", str(self.root / "node.pid"))
        _wait(lambda: not port_open(self.port), 30, "RabbitMQ did not stop")

    def restart(self, down_seconds: float = 0.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()
        self.restarts += 1

    def close(self) -> None:
        pid_file = self.root / "node.pid"
        if pid_file.exists() and port_open(self.port):
            try:
                self.stop()
            except (subprocess.SubprocessError, RuntimeError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)


class RedisServer:
    def __init__(
        self, root: Path, *, appendfsync: str = "always", password: str | None = None
    ) -> None:
        self.root = root
        self.password = password
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.appendfsync = appendfsync
        self.process: subprocess.Popen | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = (self.root / "redis.log").open("a")
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.root),
                "--appendonly", "yes",
                "--appendfsync", self.appendfsync,
                "--save", "",
                *(["--requirepass", self.password] if self.password else []),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        _wait(lambda: port_open(self.port), 30, "Redis did not listen")

    def crash(self) -> None:
        """SIGKILL: no shutdown, no final fsync; the AOF is all that survives."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        _wait(lambda: not port_open(self.port), 10, "Redis did not go away")

    def restart(self, down_seconds: float = 0.0) -> None:
        self.crash()
        time.sleep(down_seconds)
        self.start()
        self.restarts += 1

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
