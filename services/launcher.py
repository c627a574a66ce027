"""Starting the sandbox and the services as real processes: for the demo and end-to-end tests.

Each process gets a clean environment: the caller's ``PWASYNC_*`` variables are dropped (so a
shell pointed at a real tenant cannot leak into a demo), the given settings are added, and the
working directory is the run's own folder, so no stray ``.env`` file is read.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from common.rabbit import RabbitConnector
from common.redis_store import Keys, connect_redis
from common.topology import topology_for

READY = re.compile(r"^sandbox ready at (?P<url>\S+) \(settings in (?P<env>.+)\)$")


def local_service_urls() -> tuple[str, str]:
    """The broker and Redis the demo and the benchmarks use: this machine's, as the quickstart
    expects them, unless ``PWASYNC_AMQP_URL`` / ``PWASYNC_REDIS_URL`` point elsewhere."""
    return (
        os.environ.get("PWASYNC_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
        os.environ.get("PWASYNC_REDIS_URL", "redis://127.0.0.1:6379/0"),
    )


def clean_environment(settings: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PWASYNC_")}
    env.update(settings)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def pwasync_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "services.cli", *args]


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            values[name.strip()] = value.strip()
    return values


def terminate(process: subprocess.Popen, timeout: float) -> int:
    """SIGTERM, wait for a clean exit; SIGKILL after ``timeout``. Returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def delete_scenario(
    amqp_url: str, redis_url: str, scenario: str, *, sentinel_password: str | None = None
) -> None:
    """Delete every queue and Redis key of a scenario (demo resets, test clean-up)."""
    connection = RabbitConnector(amqp_url, connection_name="pwasync-launcher").connect()
    try:
        channel = connection.channel()
        for queue in topology_for(scenario).queue_names():
            channel.queue_delete(queue)
    finally:
        connection.close()
    client = connect_redis(redis_url, sentinel_password=sentinel_password)
    try:
        # On a Redis Cluster SCAN goes to every primary; the keys found share one slot.
        keys = list(client.scan_iter(match=Keys(scenario).all_pattern, count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@dataclass
class ManagedProcess:
    name: str
    process: subprocess.Popen
    log_path: Path
    _log: IO[str]

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait for a clean exit; SIGKILL after ``timeout``. Returns the exit code."""
        code = terminate(self.process, timeout)
        self._log.close()
        return code

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait()


def start_process(
    name: str, args: list[str], *, env: dict[str, str], workdir: Path
) -> ManagedProcess:
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    log = log_path.open("a", encoding="utf-8")
    process = subprocess.Popen(
        args, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, text=True
    )
    return ManagedProcess(name, process, log_path, log)


@dataclass
class SandboxProcess:
    process: subprocess.Popen
    url: str
    settings: dict[str, str]

    def stop(self, timeout: float = 10.0) -> int:
        return terminate(self.process, timeout)


def start_sandbox(
    workdir: Path,
    *,
    port: int = 0,
    latency_ms: int = 0,
    seed: Path | None = None,
    timeout: float = 30.0,
    edition: str = "online",
) -> SandboxProcess:
    """Run ``pwasync sandbox`` and wait for its ready line; its settings come from the env file.

    ``edition`` is "online" (Project Online; the default, so callers that name none keep their
    behaviour) or "se" (Project Server Subscription Edition)."""
    directory = workdir / "sandbox"
    directory.mkdir(parents=True, exist_ok=True)
    args = pwasync_command(
        "sandbox",
        "--port",
        str(port),
        "--dir",
        str(directory),
        "--latency-ms",
        str(latency_ms),
        "--edition",
        edition,
    )
    if seed is not None:
        args += ["--seed", str(seed)]
    log = (workdir / "sandbox.log").open("a", encoding="utf-8")
    process = subprocess.Popen(
        args,
        env=clean_environment({}),
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    ready: queue.Queue[re.Match[str]] = queue.Queue()

    def drain() -> None:
        # Keep reading after the ready line, so the sandbox never blocks on a full pipe.
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            log.flush()
            if match := READY.match(line.strip()):
                ready.put(match)

    threading.Thread(target=drain, name="sandbox-stdout", daemon=True).start()
    try:
        match = ready.get(timeout=timeout)
    except queue.Empty:
        process.kill()
        raise RuntimeError(f"the sandbox did not start; see {workdir / 'sandbox.log'}") from None
    return SandboxProcess(process, match.group("url"), read_env_file(Path(match.group("env"))))
