"""Writer benchmarks against the sandbox with injected Graph latency; prints the figures.

    .venv/bin/python bench/writer.py [--latency-ms 100] [--events 3000] [--mailboxes 200]

Needs RabbitMQ and Redis (the same defaults as the tests). Every run uses a scenario of its own
(deleted afterwards) and new sandbox mailboxes. task.changed messages are published straight
into the writers' queue (no poller), then the writer processes are started; the rate is the
number of events Graph created per second from the first to the last, as the sandbox counts
them. Figures:

1. one writer replica, events spread over ``--mailboxes`` mailboxes;
2. the baseline: one event at a time in a plain loop (POST, wait, next), as a flow tool does;
3. one mailbox: events/s against the ceiling of 4 requests in flight (4 / latency), and 429s;
4. 1, 2 and 4 replicas: events/s and the scaling ratio;
5. peak RSS per writer, and the CPU the writer and the sandbox used (the sandbox is one Python
   process; when it is saturated it, not the writer, is the limit).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from common.http import new_http_client  # noqa: E402
from common.identity import GraphAppTokens  # noqa: E402
from common.messages import Assignee, TaskChanged, encode  # noqa: E402
from common.rabbit import Publisher, RabbitConnector  # noqa: E402
from common.settings import load_settings  # noqa: E402
from common.topology import routing_key_task_changed, topology_for  # noqa: E402
from sandbox.client import SandboxClient  # noqa: E402
from services.event_writer import event_mapping  # noqa: E402
from services.launcher import (  # noqa: E402
    clean_environment,
    delete_scenario,
    local_service_urls,
    pwasync_command,
    start_process,
    start_sandbox,
)

AMQP_URL, REDIS_URL = local_service_urls()
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, every core."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / CLOCK_TICKS, sum(values) / CLOCK_TICKS


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def created(client: SandboxClient) -> int:
    return client.stats()["graph"]["by_method"].get("POST", {}).get("201", 0)


def messages(scenario: str, mailboxes: list[str], count: int) -> list[bytes]:
    now = datetime.now(UTC)
    bodies = []
    for index in range(count):
        mailbox = mailboxes[index % len(mailboxes)]
        start = datetime(2026, 12, 1, 9) + timedelta(days=index % 30)
        task = TaskChanged(
            scenario=scenario,
            project_id=uuid.UUID(int=1),
            project_name="Benchmark",
            task_id=uuid.uuid4(),
            task_name=f"Task {index}",
            start=start,
            finish=start + timedelta(hours=8),
            timezone="Europe/Berlin",
            assignees=[Assignee(resource_id=uuid.uuid4(), name=mailbox, email=mailbox)],
            revision=now,
            read_at=now,
            task_url="https://contoso.sharepoint.com/sites/pwa/project.aspx?projuid=1",
        )
        bodies.append(encode(task))
    return bodies


class Bench:
    def __init__(self, workdir: Path, latency_ms: int) -> None:
        self.workdir = workdir
        self.latency_ms = latency_ms
        self.sandbox = start_sandbox(workdir, latency_ms=latency_ms)
        self.client = SandboxClient(
            self.sandbox.url, ca_file=self.sandbox.settings["PWASYNC_CA_BUNDLE"], timeout=120
        )
        self.runs = 0
        self.writer_env: dict[str, str] = {}

    def close(self) -> None:
        self.client.close()
        self.sandbox.stop()

    def mailboxes(self, count: int) -> list[str]:
        return self.client.generate(projects=1, tasks_per_project=1, mailboxes=count)["mailboxes"]

    def run_writers(self, replicas: int, mailboxes: list[str], events: int) -> dict[str, float]:
        """Publish ``events`` messages, start ``replicas`` writers, time the creates."""
        self.runs += 1
        scenario = f"bench-{uuid.uuid4().hex[:8]}"
        publisher = Publisher(
            RabbitConnector(AMQP_URL, connection_name="bench"), topology_for(scenario)
        )
        try:
            for body in messages(scenario, mailboxes, events):
                publisher.publish(routing_key_task_changed(scenario), body)
        finally:
            publisher.close()
        env = clean_environment(
            {
                **self.sandbox.settings,
                "PWASYNC_AMQP_URL": AMQP_URL,
                "PWASYNC_REDIS_URL": REDIS_URL,
                "PWASYNC_SCENARIO": scenario,
                **self.writer_env,
            }
        )
        self.client.reset_stats()
        base = created(self.client)
        writers = [
            start_process(
                f"bench{self.runs}-writer-{i}",
                pwasync_command("writer"),
                env=env,
                workdir=self.workdir,
            )
            for i in range(replicas)
        ]
        try:
            samples: list[tuple[float, int, float, float, tuple[float, float]]] = []
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                count = created(self.client) - base
                samples.append(
                    (
                        time.monotonic(),
                        count,
                        sum(cpu_seconds(w.pid) for w in writers),
                        cpu_seconds(self.sandbox.process.pid),
                        machine_busy(),
                    )
                )
                if count >= events:
                    break
                time.sleep(0.2)
            stats = self.client.stats()["graph"]
            rss = [peak_rss_mib(w.pid) for w in writers]
        finally:
            codes = [w.terminate(timeout=20) for w in writers]
            delete_scenario(AMQP_URL, REDIS_URL, scenario)
        first = next(s for s in samples if s[1] > 0)
        last = samples[-1]
        elapsed = last[0] - first[0]
        return {
            "events": last[1],
            "rate": (last[1] - first[1]) / elapsed if elapsed > 0 else float("nan"),
            "throttled": stats["throttled"],
            "batches": stats["batches"],
            "requests": stats["requests"],
            "peak_per_mailbox": max(stats["peak_concurrency"]["by_mailbox"].values(), default=0),
            "rss_mib": max(rss),
            "writer_cpu": (last[2] - first[2]) / elapsed if elapsed > 0 else float("nan"),
            "sandbox_cpu": (last[3] - first[3]) / elapsed if elapsed > 0 else float("nan"),
            "machine_cpu": (last[4][0] - first[4][0]) / max(last[4][1] - first[4][1], 1e-9),
            "exit_codes": codes,
        }

    def baseline(self, mailboxes: list[str], events: int) -> float:
        """One event at a time: POST, wait for the answer, next (a flow tool's loop)."""
        settings = load_settings({**self.sandbox.settings})
        with new_http_client(ca_bundle=settings.ca_bundle) as http:
            tokens = GraphAppTokens(settings, http)
            headers = {"Authorization": f"Bearer {tokens.token()}"}
            scenario = f"baseline-{uuid.uuid4().hex[:8]}"
            bodies = [
                TaskChanged.model_validate_json(b) for b in messages(scenario, mailboxes, events)
            ]
            started = time.monotonic()
            for task in bodies:
                event = event_mapping.new_event(task, task.assignees[0].resource_id)
                url = f"{settings.graph_url}/users/{task.assignees[0].email}/events"
                response = http.post(url, json=event, headers=headers)
                if response.status_code != 201:
                    raise httpx.HTTPError(f"baseline POST answered {response.status_code}")
            return events / (time.monotonic() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency-ms", type=int, default=100)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--mailboxes", type=int, default=200)
    parser.add_argument("--one-mailbox-events", type=int, default=400)
    parser.add_argument("--baseline-events", type=int, default=30)
    parser.add_argument(
        "--set", action="append", default=[], metavar="PWASYNC_X=V", help="a writer setting"
    )
    parser.add_argument("--only", choices=("one", "all"), default="all")
    parser.add_argument("--workdir", type=Path, help="keep the logs here (default: a temp dir)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="pwasync-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        bench = Bench(workdir, args.latency_ms)
        bench.writer_env = dict(item.split("=", 1) for item in args.set)
        try:
            latency = args.latency_ms
            print(f"sandbox Graph latency {latency} ms; {os.cpu_count()} cores", flush=True)
            boxes = bench.mailboxes(args.mailboxes)
            one = bench.run_writers(1, boxes, args.events)
            print(
                f"1. one writer, {args.mailboxes} mailboxes: {one['rate']:.0f} events/s "
                f"({one['events']} events; {one['requests']} Graph requests in {one['batches']} "
                f"batches; {one['throttled']} throttled; writer CPU {one['writer_cpu']:.0%}, "
                f"sandbox CPU {one['sandbox_cpu']:.0%} of one core; machine CPU busy "
                f"{one['machine_cpu']:.0%} of all cores)",
                flush=True,
            )
            if args.only == "one":
                return 0
            base = bench.baseline(bench.mailboxes(args.baseline_events), args.baseline_events)
            print(
                f"2. baseline, one event at a time: {base:.1f} events/s; the writer is "
                f"{one['rate'] / base:.0f}x faster",
                flush=True,
            )
            single = bench.run_writers(1, bench.mailboxes(1), args.one_mailbox_events)
            ceiling = 4 * 1000 / latency
            print(
                f"3. one mailbox: {single['rate']:.1f} events/s = {single['rate'] / ceiling:.0%} "
                f"of the ceiling of {ceiling:.0f}/s; {single['throttled']} throttled; peak "
                f"{single['peak_per_mailbox']} requests in flight",
                flush=True,
            )
            rates = {}
            for replicas in (1, 2, 4):
                run = bench.run_writers(replicas, bench.mailboxes(args.mailboxes), args.events)
                rates[replicas] = run["rate"]
                print(
                    f"4. {replicas} replica(s): {run['rate']:.0f} events/s, scaling "
                    f"{run['rate'] / rates[1]:.2f}x; peak RSS per writer {run['rss_mib']:.0f} MiB; "
                    f"writers' CPU {run['writer_cpu']:.0%}, sandbox CPU "
                    f"{run['sandbox_cpu']:.0%} of one core; {run['throttled']} throttled; "
                    f"peak per mailbox {run['peak_per_mailbox']}; machine CPU busy "
                    f"{run['machine_cpu']:.0%} of all cores",
                    flush=True,
                )
            print(f"5. peak RSS of one writer (run 1): {one['rss_mib']:.0f} MiB")
        finally:
            bench.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
