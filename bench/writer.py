"""Writer benchmarks against the sandbox with injected Graph latency; prints the figures.

    .venv/bin/python bench/writer.py [--latency-ms 100] [--jitter-ms 0] [--events 10000]
                                     [--mailboxes 200]
                                     [--only direct,pipeline,slow,one-mailbox,replicas]

Needs RabbitMQ and Redis (the same defaults as the tests). Every run uses a scenario of its own
(deleted afterwards) and new sandbox mailboxes. The rate is the number of events Graph created
per second from the first to the last, as the sandbox counts them; CPU per event is the
writer processes' CPU seconds over the same span divided by the events. Ratios are against the
baseline measured in the same run: one event at a time in a plain loop (POST, wait, next), as a
flow tool does. Figures:

1. ``direct``: one writer, ``--events`` task.changed messages published straight into its queue
   over ``--mailboxes`` mailboxes: events/s, CPU per event, the ratio to the baseline;
2. ``pipeline``: the whole pipeline (poller, one writer, ledger) started by ``pwasync sync-now``
   over as many flagged tasks: events/s and the ratio to the baseline;
3. ``one-mailbox``: one writer, one mailbox: events/s against the ceiling of 4 requests in
   flight (4 / latency), and 429s; beside it, what four bare loops (POST, wait, next) make on
   the same mailbox just before: the most a client gets through this sandbox on this machine;
4. ``slow``: one writer at ``--slow-latency-ms`` (1 s): events/s and the most requests one
   mailbox had in flight (Outlook allows 4);
5. ``replicas``: 1 and 4 writers, each ``PWASYNC_WRITER_CONCURRENCY=32``, at the slow latency:
   the scaling ratio (nothing shared should hold replicas back);
6. the peak RSS of a writer over every run.

The machine's other load shows in the figures: each line says how busy the cores were.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402
import httpx  # noqa: E402
import pika  # noqa: E402

from common.http import new_http_client  # noqa: E402
from common.identity import GraphAppTokens  # noqa: E402
from common.messages import Assignee, TaskChanged, encode  # noqa: E402
from common.rabbit import Publisher, RabbitConnector  # noqa: E402
from common.settings import load_settings  # noqa: E402
from common.topology import routing_key_task_changed, topology_for  # noqa: E402
from sandbox.client import SandboxClient  # noqa: E402
from services.event_writer import event_mapping  # noqa: E402
from services.launcher import (  # noqa: E402
    ManagedProcess,
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
        self.sandbox = start_sandbox(workdir, latency_ms=latency_ms)
        self.client = SandboxClient(
            self.sandbox.url, ca_file=self.sandbox.settings["PWASYNC_CA_BUNDLE"], timeout=600
        )
        self.runs = 0
        self.writer_env: dict[str, str] = {}
        self.peak_rss = 0.0

    def close(self) -> None:
        self.client.close()
        self.sandbox.stop()

    def latency(self, latency_ms: int) -> None:
        self.client.config(graph_latency_ms=latency_ms)

    def mailboxes(self, count: int) -> list[str]:
        return self.client.generate(projects=1, tasks_per_project=1, mailboxes=count)["mailboxes"]

    def env(self, scenario: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        return clean_environment(
            {
                **self.sandbox.settings,
                "PWASYNC_AMQP_URL": AMQP_URL,
                "PWASYNC_REDIS_URL": REDIS_URL,
                "PWASYNC_SCENARIO": scenario,
                **self.writer_env,
                **(extra or {}),
            }
        )

    def start(self, name: str, command: str, env: dict[str, str]) -> ManagedProcess:
        return start_process(
            f"bench{self.runs}-{name}", pwasync_command(command), env=env, workdir=self.workdir
        )

    def run_writers(
        self, replicas: int, mailboxes: list[str], events: int, extra: dict[str, str] | None = None
    ) -> dict[str, Any]:
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
        env = self.env(scenario, extra)
        self.client.reset_stats()
        base = created(self.client)
        writers = [self.start(f"writer-{i}", "writer", env) for i in range(replicas)]
        try:
            return self._measure(writers, base, events)
        finally:
            for writer in writers:
                writer.terminate(timeout=20)
            delete_scenario(AMQP_URL, REDIS_URL, scenario)

    def run_pipeline(self, projects: int, tasks: int, mailboxes: int) -> dict[str, Any]:
        """Poller, writer and ledger; ``sync-now --full`` over ``projects x tasks`` flagged
        tasks, one assignee each; time the creates."""
        self.runs += 1
        scenario = f"bench-pipe-{uuid.uuid4().hex[:8]}"
        generated = self.client.generate(
            projects=projects,
            tasks_per_project=tasks,
            flagged=True,
            ensure_field=True,
            mailboxes=mailboxes,
        )
        events = len(generated["task_ids"])
        env = self.env(
            scenario,
            {
                "PWASYNC_SYNC_START": "2000-01-01T00:00:00Z",
                "PWASYNC_SYNC_OVERLAP_SECONDS": "0",
                "PWASYNC_LOG_LEVEL": "warning",
            },
        )
        services = [self.start(name, name, env) for name in ("ledger", "writer", "poller")]
        try:
            time.sleep(3.0)  # connected and consuming
            self.client.reset_stats()
            base = created(self.client)
            subprocess.run(
                pwasync_command("sync-now", "--full"),
                env=env,
                cwd=self.workdir,
                check=True,
                capture_output=True,
            )
            queue = topology_for(scenario).work_queues["task_changes"].name
            return self._measure(services[1:2], base, events, others=[services[2]], queue=queue)
        finally:
            for service in reversed(services):
                service.terminate(timeout=20)
            delete_scenario(AMQP_URL, REDIS_URL, scenario)

    def _measure(
        self,
        writers: list[ManagedProcess],
        base: int,
        events: int,
        others: list[ManagedProcess] | None = None,
        queue: str | None = None,
    ) -> dict[str, Any]:
        """Sample the creates and the CPU of ``writers`` (and of ``others``: the poller) until
        ``events`` are in; with ``queue``, also the most messages ready in it (near 0: the
        writer waited for its messages; many: the writer was the slower)."""
        others = others or []
        depth = QueueDepth(queue) if queue else None
        peak_ready = 0
        samples: list[tuple[float, int, float, tuple[float, float], float, float]] = []
        sandbox_pid = self.sandbox.process.pid
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            count = created(self.client) - base
            samples.append(
                (
                    time.monotonic(),
                    count,
                    sum(cpu_seconds(w.pid) for w in writers),
                    machine_busy(),
                    sum(cpu_seconds(o.pid) for o in others),
                    cpu_seconds(sandbox_pid),
                )
            )
            if depth is not None:
                peak_ready = max(peak_ready, depth.ready())
            if count >= events or not all(w.alive() for w in writers):
                break
            time.sleep(0.2)
        if depth is not None:
            depth.close()
        stats = self.client.stats()["graph"]
        rss = max(peak_rss_mib(w.pid) for w in writers)
        self.peak_rss = max(self.peak_rss, rss)
        first, last = _steady(samples, events)
        elapsed = last[0] - first[0]
        made = last[1] - first[1]
        return {
            "events": samples[-1][1],
            "rate": made / elapsed if elapsed > 0 else float("nan"),
            "cpu_ms": 1000 * (last[2] - first[2]) / made if made else float("nan"),
            "writer_cpu": (last[2] - first[2]) / elapsed if elapsed > 0 else float("nan"),
            "throttled": stats["throttled"],
            "batches": stats["batches"],
            "requests": stats["requests"],
            "peak_per_mailbox": max(stats["peak_concurrency"]["by_mailbox"].values(), default=0),
            "rss_mib": rss,
            "machine_cpu": (last[3][0] - first[3][0]) / max(last[3][1] - first[3][1], 1e-9),
            "others_cpu": (last[4] - first[4]) / elapsed if elapsed > 0 else float("nan"),
            "sandbox_ms": 1000 * (last[5] - first[5]) / made if made else float("nan"),
            "peak_ready": peak_ready,
        }

    def _direct_posts(
        self, mailboxes: list[str], events: int
    ) -> tuple[Any, dict[str, str], list[TaskChanged]]:
        """What a client of its own needs to POST ``events`` events: the settings, a signed-in
        header, and the tasks over ``mailboxes`` (a scenario of their own)."""
        settings = load_settings({**self.sandbox.settings})
        with new_http_client(ca_bundle=settings.ca_bundle) as http:
            headers = {"Authorization": f"Bearer {GraphAppTokens(settings, http).token()}"}
        scenario = f"direct-{uuid.uuid4().hex[:8]}"
        tasks = [TaskChanged.model_validate_json(b) for b in messages(scenario, mailboxes, events)]
        return settings, headers, tasks

    def baseline(self, mailboxes: list[str], events: int) -> float:
        """One event at a time: POST, wait for the answer, next (a flow tool's loop)."""
        settings, headers, tasks = self._direct_posts(mailboxes, events)
        with new_http_client(ca_bundle=settings.ca_bundle) as http:
            started = time.monotonic()
            for task in tasks:
                event = event_mapping.new_event(task, task.assignees[0].resource_id)
                url = f"{settings.graph_url}/users/{task.assignees[0].email}/events"
                response = http.post(url, json=event, headers=headers)
                if response.status_code != 201:
                    raise httpx.HTTPError(f"baseline POST answered {response.status_code}")
            return events / (time.monotonic() - started)

    def bare_loops(self, mailbox: str, loops: int, events: int) -> float:
        """``loops`` one-at-a-time loops at once on one mailbox (aiohttp, nothing else): the
        most a client gets from 4 in flight through this sandbox on this machine."""
        settings, headers, tasks = self._direct_posts([mailbox], events)
        bodies = [event_mapping.new_event(t, t.assignees[0].resource_id) for t in tasks]
        url = f"{settings.graph_url}/users/{mailbox}/events"

        async def run() -> float:
            context = ssl.create_default_context(cafile=str(settings.ca_bundle))
            connector = aiohttp.TCPConnector(ssl=context)
            async with aiohttp.ClientSession(connector=connector) as session:

                async def loop(share: list[dict[str, Any]]) -> None:
                    for body in share:
                        async with session.post(url, json=body, headers=headers) as response:
                            await response.read()
                            if response.status != 201:
                                raise RuntimeError(f"bare POST answered {response.status}")

                started = time.monotonic()
                await asyncio.gather(*(loop(bodies[i::loops]) for i in range(loops)))
                return events / (time.monotonic() - started)

        return asyncio.run(run())


class QueueDepth:
    """How many messages are ready in one queue (a passive declare, so nothing is made)."""

    def __init__(self, queue: str) -> None:
        self._queue = queue
        self._connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        self._channel = self._connection.channel()

    def ready(self) -> int:
        return self._channel.queue_declare(self._queue, passive=True).method.message_count

    def close(self) -> None:
        self._connection.close()


def _steady(samples: list[Any], events: int) -> tuple[Any, Any]:
    """The samples that bound the run at full pace: from the first with an event in to the
    last taken while events were still coming (the final sample comes up to one sampling
    interval after the last event, which would count idle time against the writers)."""
    first = next(s for s in samples if s[1] > 0)
    running = [s for s in samples if s[1] < events and s[0] > first[0]]
    return first, running[-1] if running else samples[-1]


def describe(run: dict[str, Any]) -> str:
    return (
        f"{run['rate']:.0f} events/s ({run['events']} events; CPU {run['cpu_ms']:.2f} ms per "
        f"event, writers {run['writer_cpu']:.0%} of a core; {run['requests']} Graph requests in "
        f"{run['batches']} batches; {run['throttled']} throttled; peak {run['peak_per_mailbox']} "
        f"in flight per mailbox; peak RSS {run['rss_mib']:.0f} MiB; machine CPU busy "
        f"{run['machine_cpu']:.0%} of all cores, the emulated tenant's "
        f"{run['sandbox_ms']:.2f} ms per event)"
    )


FIGURES = ("direct", "pipeline", "slow", "one-mailbox", "replicas")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency-ms", type=int, default=100)
    parser.add_argument("--slow-latency-ms", type=int, default=1000)
    parser.add_argument(
        "--jitter-ms",
        type=int,
        default=0,
        help="each Graph request takes up to this much longer (uniform), as real Graph varies",
    )
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--mailboxes", type=int, default=200)
    parser.add_argument("--slow-events", type=int, default=5000)
    parser.add_argument("--one-mailbox-events", type=int, default=400)
    parser.add_argument("--replica-events", type=int, default=1000)
    parser.add_argument("--baseline-events", type=int, default=30)
    parser.add_argument(
        "--set", action="append", default=[], metavar="PWASYNC_X=V", help="a writer setting"
    )
    parser.add_argument(
        "--only", default=",".join(FIGURES), help=f"comma-separated, of {', '.join(FIGURES)}"
    )
    parser.add_argument("--workdir", type=Path, help="keep the logs here (default: a temp dir)")
    args = parser.parse_args()
    only = set(args.only.split(","))
    if only - set(FIGURES):
        parser.error(f"--only takes {', '.join(FIGURES)}")

    with tempfile.TemporaryDirectory(prefix="pwasync-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        bench = Bench(workdir, args.latency_ms)
        bench.writer_env = dict(item.split("=", 1) for item in args.set)
        if args.jitter_ms:
            bench.client.config(graph_latency_jitter_ms=args.jitter_ms)
        try:
            figures(bench, args, only)
        finally:
            bench.close()
    return 0


def figures(bench: Bench, args: argparse.Namespace, only: set[str]) -> None:
    latency, slow = args.latency_ms, args.slow_latency_ms
    print(f"sandbox Graph latency {latency} ms; {os.cpu_count()} cores", flush=True)
    base = None
    if only & {"direct", "pipeline"}:
        base = bench.baseline(bench.mailboxes(args.baseline_events), args.baseline_events)
        print(f"baseline, one event at a time: {base:.1f} events/s", flush=True)
    if "direct" in only:
        run = bench.run_writers(1, bench.mailboxes(args.mailboxes), args.events)
        print(
            f"1. one writer, direct publish, {args.mailboxes} mailboxes: {describe(run)}; "
            f"{run['rate'] / base:.0f}x the baseline",
            flush=True,
        )
    if "pipeline" in only:
        projects = max(1, args.events // 100)
        run = bench.run_pipeline(projects, args.events // projects, args.mailboxes)
        print(
            f"2. whole pipeline (poller + writer + ledger, sync-now), {args.mailboxes} "
            f"mailboxes: {describe(run)}; poller CPU {run['others_cpu']:.0%} of a core; at most "
            f"{run['peak_ready']} messages waiting for the writer; "
            f"{run['rate'] / base:.0f}x the baseline",
            flush=True,
        )
    if "one-mailbox" in only:
        mailbox = bench.mailboxes(1)
        bare = bench.bare_loops(mailbox[0], 4, args.one_mailbox_events // 2)
        run = bench.run_writers(1, mailbox, args.one_mailbox_events)
        ceiling = 4 * 1000 / (latency + args.jitter_ms / 2)  # 4 in flight / the mean latency
        print(
            f"3. one mailbox at {latency} ms: {run['rate']:.1f} events/s = "
            f"{run['rate'] / ceiling:.0%} of the ceiling of {ceiling:.0f}/s; "
            f"{run['throttled']} throttled; peak {run['peak_per_mailbox']} in flight; four bare "
            f"loops (POST, wait, next; aiohttp) made {bare:.1f}/s = {bare / ceiling:.0%} here",
            flush=True,
        )
    if only & {"slow", "replicas"}:
        bench.latency(slow)
    if "slow" in only:
        run = bench.run_writers(1, bench.mailboxes(args.mailboxes), args.slow_events)
        print(
            f"4. one writer at {slow} ms, {args.mailboxes} mailboxes: {describe(run)}", flush=True
        )
    if "replicas" in only:
        capped = {"PWASYNC_WRITER_CONCURRENCY": "32"}
        rates = {}
        for replicas in (1, 4):
            run = bench.run_writers(
                replicas, bench.mailboxes(args.mailboxes), args.replica_events, capped
            )
            rates[replicas] = run["rate"]
            print(
                f"5. {replicas} writer(s), 32 tasks in flight each, {slow} ms: {describe(run)}",
                flush=True,
            )
        print(f"5. 4 writers vs 1: {rates[4] / rates[1]:.2f}x", flush=True)
    print(f"6. peak RSS of a writer over these runs: {bench.peak_rss:.0f} MiB", flush=True)


if __name__ == "__main__":
    sys.exit(main())
