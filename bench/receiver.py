"""Publish receiver benchmark: seconds from a publish in Project Server to the event in Outlook.

Runs the sandbox's Subscription Edition and the real poller, writer, ledger and receiver
processes against the RabbitMQ and Redis on this machine, registers the receiver with
``pwasync events register``, leaves the schedule on demand, and publishes one changed task
at a time: the time until the renamed event is in the assignee's mailbox, over PUBLISHES
publishes, as p50, p95 and max. Beside it, what polling gives for the same change: half the
schedule's interval on average and the whole interval at worst, plus the same sync.

    python bench/receiver.py [--publishes 20] [--graph-latency-ms 100] [--pwa-latency-ms 20]
                             [--poll-minutes 5] [--coalesce-seconds 2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox.client import SandboxClient  # noqa: E402
from services.launcher import (  # noqa: E402
    clean_environment,
    delete_scenario,
    local_service_urls,
    pwasync_command,
    start_process,
    start_sandbox,
)
from tests.e2e.harness import wait_for  # noqa: E402
from tests.ports import free_port, port_open  # noqa: E402

AMQP_URL, REDIS_URL = local_service_urls()
MAILBOX = "adele.vance@contoso.onmicrosoft.com"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--publishes", type=int, default=20)
    parser.add_argument("--graph-latency-ms", type=int, default=100)
    parser.add_argument("--pwa-latency-ms", type=int, default=20)
    parser.add_argument("--poll-minutes", type=int, default=5)
    parser.add_argument("--coalesce-seconds", type=float, default=2.0)
    args = parser.parse_args()
    scenario = f"bench-receiver-{uuid.uuid4().hex[:6]}"
    workdir = Path(tempfile.mkdtemp(prefix="pwasync-bench-receiver-"))
    sandbox = start_sandbox(workdir, edition="se")
    services = []
    try:
        control = SandboxClient(sandbox.url, sandbox.settings["PWASYNC_CA_BUNDLE"], timeout=60)
        control.config(graph_latency_ms=args.graph_latency_ms, pwa_latency_ms=args.pwa_latency_ms)
        port = free_port()
        env = clean_environment(
            {
                **sandbox.settings,
                "PWASYNC_AMQP_URL": AMQP_URL,
                "PWASYNC_REDIS_URL": REDIS_URL,
                "PWASYNC_SCENARIO": scenario,
                "PWASYNC_LOG_LEVEL": "warning",
                "PWASYNC_RECEIVER_PORT": str(port),
                "PWASYNC_RECEIVER_SECRET": uuid.uuid4().hex,
                "PWASYNC_RECEIVER_URL": f"http://127.0.0.1:{port}",
                "PWASYNC_RECEIVER_COALESCE_SECONDS": str(args.coalesce_seconds),
            }
        )

        def cli(*command: str) -> None:
            subprocess.run(
                pwasync_command(*command), env=env, cwd=workdir, check=True, capture_output=True
            )

        cli("fields", "create")
        for name in ("poller", "writer", "ledger", "receiver"):
            services.append(start_process(name, pwasync_command(name), env=env, workdir=workdir))
        _wait_or_exit(lambda: port_open(port), 30, "the receiver to listen")
        cli("events", "register")
        task_ids = control.demo_flag_task_ids()
        control.flag_tasks(task_ids, value=True, publish=True)
        _wait_or_exit(lambda: len(control.events(MAILBOX)) > 0, 60, "the first events")
        task = next(t for t in task_ids if _mailbox_subjects(control, t))
        seconds = [_one_publish(control, task, n) for n in range(args.publishes)]
        _report(args, seconds)
        return 0
    finally:
        for process in services:
            process.terminate()
        sandbox.stop()
        delete_scenario(AMQP_URL, REDIS_URL, scenario)


def _one_publish(control: SandboxClient, task_id: str, n: int) -> float:
    subject = f"Benchmark publish {n}"
    started = time.monotonic()
    control.update_task(task_id, name=subject, publish=True)
    _wait_or_exit(lambda: subject in _mailbox_subjects(control, task_id), 60, f"publish {n}")
    return time.monotonic() - started


def _mailbox_subjects(control: SandboxClient, task_id: str) -> set[str]:
    return {
        e["subject"]
        for e in control.events(MAILBOX)
        if task_id in str(e.get("extended_properties", {}))
    }


def _report(args: argparse.Namespace, seconds: list[float]) -> None:
    ordered = sorted(seconds)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    interval = args.poll_minutes * 60
    print(
        f"pwasync publish receiver benchmark: {args.publishes} publishes, one at a time, "
        f"Graph latency {args.graph_latency_ms} ms, PWA latency {args.pwa_latency_ms} ms"
    )
    print(f"{'path':40} {'p50 s':>8} {'p95 s':>8} {'max s':>8}")
    print(
        f"{'publish -> receiver -> event in Outlook':40} {statistics.median(seconds):>8.2f} "
        f"{p95:>8.2f} {ordered[-1]:>8.2f}"
    )
    print(
        f"{f'polling every {args.poll_minutes} min (+ the same sync)':40} "
        f"{interval / 2:>8.0f} {0.95 * interval:>8.0f} {interval:>8.0f}"
    )


def _wait_or_exit(condition, timeout: float, what: str) -> None:  # noqa: ANN001
    if not wait_for(condition, timeout=timeout, interval=0.02):
        raise SystemExit(f"timed out waiting for {what}")


if __name__ == "__main__":
    sys.exit(main())
