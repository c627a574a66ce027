"""Runs the sandbox and the real services as subprocesses, for end-to-end tests."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from common.redis_store import connect_redis
from sandbox.client import SandboxClient
from services.event_writer.event_mapping import TASK_KEY_PROPERTY
from services.launcher import (
    ManagedProcess,
    clean_environment,
    pwasync_command,
    start_process,
    start_sandbox,
)


class Pipeline:
    def __init__(
        self,
        workdir: Path,
        *,
        amqp_url: str,
        redis_url: str,
        scenario: str,
        latency_ms: int = 0,
        edition: str = "online",
    ) -> None:
        self.workdir = workdir
        self.scenario = scenario
        self.edition = edition
        self.sandbox = start_sandbox(workdir, latency_ms=latency_ms, edition=edition)
        self.env = clean_environment(
            {
                **self.sandbox.settings,
                "PWASYNC_AMQP_URL": amqp_url,
                "PWASYNC_REDIS_URL": redis_url,
                "PWASYNC_SCENARIO": scenario,
                "PWASYNC_LOG_LEVEL": "debug",
            }
        )
        self.client = SandboxClient(
            self.sandbox.url, ca_file=self.sandbox.settings["PWASYNC_CA_BUNDLE"]
        )
        self.services: dict[str, ManagedProcess] = {}

    # --- processes -------------------------------------------------------------------------

    def start(self, name: str, extra_env: dict[str, str] | None = None) -> ManagedProcess:
        command = name.split("-")[0]
        env = {**self.env, **(extra_env or {})}
        process = start_process(name, pwasync_command(command), env=env, workdir=self.workdir)
        self.services[name] = process
        return process

    def cli(
        self, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            pwasync_command(*args),
            env={**self.env, **(env or {})},
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"pwasync {' '.join(args)} -> {result.returncode}: {result.stderr}"
            )
        return result

    def stop_all(self) -> dict[str, int]:
        codes = {name: process.terminate() for name, process in self.services.items()}
        self.services.clear()
        return codes

    def close(self) -> None:
        for process in self.services.values():
            process.kill()
        self.client.close()
        self.sandbox.stop()

    # --- observations --------------------------------------------------------------------

    def event_keys(self) -> Counter[tuple[str, str]]:
        """(mailbox, task id) of every event pwasync wrote, with how many there are of each."""
        counts: Counter[tuple[str, str]] = Counter()
        for event in self.client.events():
            key = event["extended_properties"].get(TASK_KEY_PROPERTY)
            if key is not None:
                counts[(event["mailbox"].lower(), key.split("/", 1)[1])] += 1
        return counts

    def usage(self) -> dict[str, Any]:
        return json.loads(self.cli("usage", "--json").stdout)

    def redis_json_list(self, suffix: str) -> list[Any]:
        """A JSON list kept in the scenario's Redis keys (``suffix`` after the hash tag)."""
        client = connect_redis(self.env["PWASYNC_REDIS_URL"])  # any form: Sentinel, cluster
        try:
            key = f"pwasync:{{{self.scenario}}}:{suffix}"
            return [json.loads(item) for item in client.lrange(key, 0, -1)]
        finally:
            client.close()

    def log_lines(self, name: str) -> list[dict[str, Any]]:
        lines = []
        for line in (self.workdir / "logs" / f"{name}.log").read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                lines.append({"event": line, "level": "raw"})
        return lines


def metric_total(url: str, sample: str) -> float:
    """The sum of the samples on a ``/metrics`` page whose line starts with ``sample`` (a name,
    or a name and its first labels)."""
    text = httpx.get(url, timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(sample)
    )


def wait_for(condition: Callable[[], bool], *, timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()
