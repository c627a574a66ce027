"""Poller benchmark: PWA requests and seconds of a first full sync and of incremental syncs.

Runs the emulated tenant and the real ``pwasync poller`` process against the RabbitMQ and Redis
on this machine (``PWASYNC_AMQP_URL`` / ``PWASYNC_REDIS_URL`` to use others), generates
PROJECTS x TASKS flagged tasks, and reads each run's figures from the run summary the poller
keeps in Redis (``pwa_requests``, ``duration_seconds``): the first full sync, an incremental
sync after one project was changed and published, and an incremental sync with nothing changed.
The task.changed messages are published to the broker (with confirms) but not consumed; the
scenario's queues and keys are deleted at the end.

Both plan sources run, one after the other: Project Server Subscription Edition (the
ProjectServer REST API behind Windows sign-in) and Project Online (ProjectData).

    python bench/poller.py [--projects 100] [--tasks 100] [--latency-ms 0]
                           [--edition se|online|both]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.redis_store import Keys, connect_redis  # noqa: E402
from sandbox.client import SandboxClient  # noqa: E402
from services.launcher import (  # noqa: E402
    clean_environment,
    delete_scenario,
    local_service_urls,
    pwasync_command,
    start_process,
    start_sandbox,
)

AMQP_URL, REDIS_URL = local_service_urls()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--latency-ms", type=int, default=0, help="added to every PWA request")
    parser.add_argument("--edition", choices=("se", "online", "both"), default="both")
    args = parser.parse_args()
    editions = ("se", "online") if args.edition == "both" else (args.edition,)
    return max(bench(edition, args) for edition in editions)


def bench(edition: str, args: argparse.Namespace) -> int:
    scenario = f"bench-poller-{uuid.uuid4().hex[:6]}"
    workdir = Path(tempfile.mkdtemp(prefix="pwasync-bench-poller-"))
    sandbox = start_sandbox(workdir, latency_ms=args.latency_ms, edition=edition)
    redis = connect_redis(REDIS_URL)
    poller = None
    try:
        control = SandboxClient(sandbox.url, sandbox.settings["PWASYNC_CA_BUNDLE"], timeout=600)
        generated = control.generate(
            projects=args.projects,
            tasks_per_project=args.tasks,
            flagged=True,
            ensure_field=True,
            mailboxes=20,
        )
        env = clean_environment(
            {
                **sandbox.settings,
                "PWASYNC_AMQP_URL": AMQP_URL,
                "PWASYNC_REDIS_URL": REDIS_URL,
                "PWASYNC_SCENARIO": scenario,
                "PWASYNC_SYNC_START": "2000-01-01T00:00:00Z",
                "PWASYNC_SYNC_OVERLAP_SECONDS": "0",
                "PWASYNC_LOG_LEVEL": "warning",
            }
        )
        poller = start_process("poller", pwasync_command("poller"), env=env, workdir=workdir)
        runs_key = f"{Keys(scenario).prefix}:poller:runs"

        def sync(*flags: str) -> dict:
            before = redis.llen(runs_key)
            control.reset_stats()
            command = pwasync_command("sync-now", *flags)
            subprocess.run(command, env=env, cwd=workdir, check=True, capture_output=True)
            deadline = time.monotonic() + 900
            while redis.llen(runs_key) == before:
                if time.monotonic() > deadline or not poller.alive():
                    raise SystemExit(f"the poller did not finish a run; see {workdir}/logs")
                time.sleep(0.05)
            run = json.loads(redis.lindex(runs_key, 0))
            run["sandbox_pwa_requests"] = control.stats()["pwa"]["requests"]
            return run

        rows = [("first full sync", sync("--full"))]
        project = generated["project_ids"][len(generated["project_ids"]) // 2]
        task = next(p for p in control.tenant()["projects"] if p["id"] == project)["task_ids"][0]
        control.update_task(task, name="Changed for the benchmark")
        rows.append(("incremental, 1 project changed", sync()))
        rows.append(("incremental, nothing changed", sync()))

        print(
            f"pwasync poller benchmark, edition {edition}: {args.projects} projects x "
            f"{args.tasks} tasks ({len(generated['task_ids'])} flagged tasks), PWA latency "
            f"{args.latency_ms} ms"
        )
        print(
            f"{'run':32} {'PWA requests':>12} {'seconds':>8} {'projects read':>13} "
            f"{'published':>9} {'unchanged':>9}"
        )
        for name, run in rows:
            print(
                f"{name:32} {run['sandbox_pwa_requests']:>12} {run['duration_seconds']:>8.2f} "
                f"{run['projects']['read']:>13} {run['tasks']['published']:>9} "
                f"{run['tasks']['unchanged']:>9}"
            )
        print()
        return 0 if all(run["status"] == "succeeded" for _, run in rows) else 1
    finally:
        if poller is not None:
            poller.terminate()
        sandbox.stop()
        delete_scenario(AMQP_URL, REDIS_URL, scenario)
        redis.close()


if __name__ == "__main__":
    sys.exit(main())
