"""RabbitMQ nodes and Redis servers of the test's own, so that a test may restart them, and
(issue 15) the clusters made of them: three RabbitMQ nodes joined in one cluster, a Redis
master with a replica and three Sentinels, a three-master Redis Cluster.

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

import redis

from tests.ports import free_cluster_port, free_port, port_open

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


def _wait(condition, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout:.0f} s")
        time.sleep(0.1)


class RabbitNode:
    def __init__(self, root: Path, *, management: bool = False, cookie: str | None = None) -> None:
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
        # The nodes of one cluster share their cookie; a lone node has one of its own.
        cookie_file = root / ".erlang.cookie"
        cookie_file.write_text(cookie or secrets.token_hex(20))
        cookie_file.chmod(0o400)
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

    def _ctl(self, *args: str, timeout: float = 90) -> str:
        return subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.name, *args],
            env=self._env,
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
        ).stdout

    def join(self, other: RabbitNode) -> None:
        """Make this (started, empty) node a member of ``other``'s cluster."""
        self._ctl("stop_app")
        self._ctl("join_cluster", other.name)
        self._ctl("start_app")
        self._ctl("await_startup", "--timeout", "60")

    def connections(self) -> int:
        """Client connections to this node now."""
        return (
            len(self._ctl("list_connections", "-q", "--no-table-headers", "name").split("\n")) - 1
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


class RabbitCluster:
    """RabbitMQ nodes on this machine made one cluster (shared cookie, ``join_cluster``):
    quorum queues declared on it get a member on every node."""

    def __init__(self, root: Path, size: int = 3) -> None:
        cookie = secrets.token_hex(20)
        self.nodes = [RabbitNode(root / f"node-{n}", cookie=cookie) for n in range(size)]

    @property
    def url(self) -> str:
        """PWASYNC_AMQP_URL: every node, comma-separated."""
        return ",".join(node.url for node in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        for node in self.nodes[1:]:
            node.join(self.nodes[0])

    def close(self) -> None:
        for node in reversed(self.nodes):
            node.close()


class RedisServer:
    def __init__(
        self,
        root: Path,
        *,
        appendfsync: str = "always",
        password: str | None = None,
        args: tuple[str, ...] = (),
        port: int | None = None,
    ) -> None:
        self.root = root
        self.password = password
        self.args = args
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
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
                *self.args,
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


class RedisSentinel:
    """One Sentinel (``redis-server --sentinel``) watching ``master`` as ``MASTER_NAME``,
    quick to act: down after 1 s, a failover may take 5 s."""

    def __init__(self, root: Path, master: RedisServer, *, quorum: int = 2) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        # A Sentinel rewrites its own configuration file, so each has one of its own.
        (root / "sentinel.conf").write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {root}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master.port} {quorum}\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
            f"sentinel failover-timeout {MASTER_NAME} 5000\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )

    def start(self) -> None:
        log = (self.root / "sentinel.log").open("a")
        self.process = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", str(self.root / "sentinel.conf"),
             "--sentinel"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        _wait(lambda: port_open(self.port), 30, "the Sentinel did not listen")

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


MASTER_NAME = "pwasync"


class SentinelGroup:
    """A Redis master with AOF, a replica of it and three Sentinels."""

    def __init__(self, root: Path) -> None:
        self.master = RedisServer(root / "master")
        self.replica = RedisServer(root / "replica")
        self.sentinels: list[RedisSentinel] = []
        self._root = root

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}/0"

    def start(self) -> None:
        self.master.start()
        self.replica.args = ("--replicaof", "127.0.0.1", str(self.master.port))
        self.replica.start()
        replica = redis.Redis(port=self.replica.port, decode_responses=True)
        _wait(
            lambda: replica.info("replication").get("master_link_status") == "up",
            30,
            "the replica did not sync",
        )
        replica.close()
        self.sentinels = [
            RedisSentinel(self._root / f"sentinel-{n}", self.master) for n in range(3)
        ]
        for sentinel in self.sentinels:
            sentinel.start()
        _wait(self._sentinels_see_everyone, 30, "the Sentinels did not find each other")

    def _sentinels_see_everyone(self) -> bool:
        for sentinel in self.sentinels:
            client = redis.Redis(port=sentinel.port, decode_responses=True)
            try:
                master = client.sentinel_master(MASTER_NAME)
            finally:
                client.close()
            if master["num-other-sentinels"] < 2 or master["num-slaves"] < 1:
                return False
        return True

    def master_port(self) -> int:
        """The port of the master the Sentinels name now."""
        client = redis.Redis(port=self.sentinels[0].port, decode_responses=True)
        try:
            return int(client.sentinel_get_master_addr_by_name(MASTER_NAME)[1])
        finally:
            client.close()

    def close(self) -> None:
        for server in (*self.sentinels, self.replica, self.master):
            server.close()


class RedisClusterNodes:
    """A Redis Cluster of ``size`` masters (``redis-cli --cluster create``), each with
    ``replicas`` replicas."""

    def __init__(self, root: Path, size: int = 3, *, replicas: int = 0) -> None:
        self.replicas = replicas
        size *= 1 + replicas
        self.servers = [
            RedisServer(
                root / f"node-{n}",
                args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(root / f"node-{n}" / "nodes.conf"),
                    "--cluster-node-timeout",
                    "2000",
                ),
                port=free_cluster_port(),
            )  # fmt: skip
            for n in range(size)
        ]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers)

    def start(self) -> None:
        for server in self.servers:
            server.start()
        subprocess.run(
            [shutil.which("redis-cli") or "redis-cli", "--cluster", "create",
             *(f"127.0.0.1:{s.port}" for s in self.servers),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        _wait(self._ready, 30, "the cluster did not come up")

    def _ready(self) -> bool:
        for server in self.servers:
            client = redis.Redis(port=server.port, decode_responses=True)
            try:
                info = client.execute_command("CLUSTER INFO")  # parsed, or the text
                state = info.get("cluster_state") if isinstance(info, dict) else str(info)
                if "ok" not in state:
                    return False
                replication = client.info("replication")
                if replication["role"] == "slave" and replication["master_link_status"] != "up":
                    return False
            finally:
                client.close()
        return True

    def close(self) -> None:
        for server in self.servers:
            server.close()
