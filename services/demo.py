"""``pwasync demo``: the whole pipeline against the sandbox, then a summary.

Starts the emulated tenant and every service as real processes against the RabbitMQ and Redis
on localhost, creates the flag field, flags the seed's demo tasks, requests a sync, waits for
the pipeline to settle, prints the events and the endpoint usage, and stops everything with
SIGTERM. Scenario ``demo``: its queues and Redis keys are reset first, so runs repeat cleanly.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from common.errors import ServiceUnavailable
from common.rabbit import RabbitConnector, inspect_queue
from common.redis_store import REDIS_ERRORS, Keys, connect_redis, redis_address
from common.topology import topology_for
from services.launcher import (
    ManagedProcess,
    SandboxProcess,
    clean_environment,
    delete_scenario,
    local_service_urls,
    pwasync_command,
    start_process,
    start_sandbox,
)

SCENARIO = "demo"
AMQP_URL, REDIS_URL = local_service_urls()
SETTLE_TIMEOUT = 90.0
#: The poller's line for a flagged task none of whose assignees can get an event.
NO_USABLE_ADDRESS = "flagged task has no assignee with a usable e-mail address; it gets no event"


EDITIONS = {
    "se": "Project Server Subscription Edition, ProjectServer REST API, Windows sign-in",
    "online": "Project Online, ProjectData feed, Entra sign-in",
}


def run_demo(
    *, workdir: Path, writers: int = 2, edition: str = "se", source: str = "project"
) -> int:
    workdir = workdir.resolve()
    if not _infrastructure_ready():
        return 1
    delete_scenario(AMQP_URL, REDIS_URL, SCENARIO)
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    for old in (workdir / "logs").glob("*.log"):
        old.unlink()

    print("pwasync demo")
    sandbox = start_sandbox(workdir, edition=edition)
    print(f"  sandbox    {sandbox.url}  (emulated Microsoft 365 tenant; log in {workdir})")
    plans = EDITIONS[edition] if source == "project" else SOURCES[source]
    print(f"  plans      {plans} (--source, --edition se|online)")
    env = clean_environment(
        {
            **sandbox.settings,
            "PWASYNC_AMQP_URL": AMQP_URL,
            "PWASYNC_REDIS_URL": REDIS_URL,
            "PWASYNC_SCENARIO": SCENARIO,
            "PWASYNC_LOG_FORMAT": "json",
            "PWASYNC_SOURCE": source,
            **_source_settings(source, sandbox),
        }
    )
    services: list[ManagedProcess] = []
    try:
        for name in ["poller", *[f"writer-{i + 1}" for i in range(writers)], "ledger"]:
            command = name.split("-")[0]
            services.append(start_process(name, pwasync_command(command), env=env, workdir=workdir))
        print(f"  services   {', '.join(s.name for s in services)}  (logs in {workdir / 'logs'})")
        _wait_for_consumers(writers)

        for line in _cli(env, workdir, "fields", "create").splitlines():
            print(f"  field      {line}")
        flag, how = FLAGGING[source]
        flagged = flag(sandbox)
        print(f"  flagged    {len(flagged)} task(s) {how}")
        print(f"  sync       {_cli(env, workdir, 'sync-now')}")
        events = _wait_until_settled(sandbox)

        print()
        _print_events(events)
        print()
        _print_left_out(workdir)
        print()
        print(_cli(env, workdir, "usage"))
    finally:
        print()
        codes = [f"{s.name} {s.terminate()}" for s in services]
        sandbox.stop()
        print(f"stopped (exit codes: {', '.join(codes)})")
    return 0 if all(code.endswith(" 0") for code in codes) else 1


# --- steps ------------------------------------------------------------------------------------


def _infrastructure_ready() -> bool:
    ok = True
    try:
        RabbitConnector(AMQP_URL, connection_name="pwasync-demo").connect().close()
    except ServiceUnavailable as exc:
        print(
            f"pwasync demo: {exc}: start it with `rabbitmq-server -detached` "
            "(or `docker compose up -d rabbitmq`)"
        )
        ok = False
    try:
        connect_redis(REDIS_URL).ping()
    except REDIS_ERRORS:
        print(
            f"pwasync demo: cannot reach Redis at {redis_address(REDIS_URL)}: start it with "
            "`redis-server --daemonize yes` (or `docker compose up -d redis`)"
        )
        ok = False
    return ok


def _wait_for_consumers(writers: int, timeout: float = 60.0) -> None:
    topology = topology_for(SCENARIO)
    wanted = {
        topology.sync_requests.name: 1,
        topology.task_changes.name: writers,
        topology.transfers.name: 1,
    }
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(_queue_state(q)[1] >= n for q, n in wanted.items()):
            return
        time.sleep(0.3)
    raise ServiceUnavailable("the services did not start consuming; see the logs")


def _queue_state(queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of a queue, or (0, 0) if it does not exist yet."""
    state = inspect_queue(RabbitConnector(AMQP_URL, connection_name="pwasync-demo"), queue)
    return (state.ready, state.consumers) if state else (0, 0)


def _cli(env: dict[str, str], workdir: Path, *args: str) -> str:
    result = subprocess.run(
        pwasync_command(*args), env=env, cwd=workdir, capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        raise ServiceUnavailable(
            f"`pwasync {' '.join(args)}` failed: {(result.stderr or result.stdout).strip()}"
        )
    return result.stdout.strip()


def _source_settings(source: str, sandbox: SandboxProcess) -> dict[str, str]:
    """What the services need beyond the sandbox's settings to read this source."""
    if source == "planner":
        from services.demo_planner import planner_settings

        return planner_settings(sandbox)
    return {}


def _flag_demo_tasks(sandbox: SandboxProcess) -> list[str]:
    from sandbox.client import SandboxClient

    client = SandboxClient(sandbox.url, ca_file=sandbox.settings["PWASYNC_CA_BUNDLE"])
    task_ids = client.demo_flag_task_ids()
    client.flag_tasks(task_ids, value=True, publish=True)
    return task_ids


def _label_dataverse_tasks(sandbox: SandboxProcess) -> list[str]:
    from sandbox.client import SandboxClient
    from sandbox.dataverse_client import DataverseControl

    control = DataverseControl(
        SandboxClient(sandbox.url, ca_file=sandbox.settings["PWASYNC_CA_BUNDLE"])
    )
    task_ids = control.demo_label_task_ids()
    control.label(task_ids)
    return task_ids


def _label_planner_tasks(sandbox: SandboxProcess) -> list[str]:
    from services.demo_planner import label_demo_tasks

    return label_demo_tasks(sandbox)


#: Per plan source: how the demo flags the seed's demo tasks, and how it says so.
FLAGGING = {
    "project": (_flag_demo_tasks, "set to 'Create event = Yes' and published"),
    "dataverse": (_label_dataverse_tasks, "given the plan label 'Create event'"),
    "planner": (_label_planner_tasks, "in basic Planner labelled 'Create event'"),
}
SOURCES = {
    "dataverse": "Planner premium plans in Dataverse, Web API, app-only sign-in",
    "planner": "basic Planner plans through Graph, app-only sign-in, all-day events",
}


def _wait_until_settled(sandbox: SandboxProcess) -> list[dict[str, Any]]:
    """Wait until the queues are empty and nothing changed in the calendars for a while."""
    from sandbox.client import SandboxClient

    client = SandboxClient(sandbox.url, ca_file=sandbox.settings["PWASYNC_CA_BUNDLE"])
    topology = topology_for(SCENARIO)
    queues = [q.name for q in topology.work_queues.values()]
    deadline = time.monotonic() + SETTLE_TIMEOUT
    last: Any = None
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        events = client.events()
        snapshot = (
            json.dumps(events, sort_keys=True, default=str),
            _endpoint_count(),
            [_queue_state(q)[0] for q in queues],
        )
        if snapshot != last:
            last, quiet_since = snapshot, time.monotonic()
        elif not any(snapshot[2]) and time.monotonic() - quiet_since > 3.0:
            return events
        time.sleep(0.5)
    return client.events()


def _endpoint_count() -> int:
    return connect_redis(REDIS_URL).zcard(Keys(SCENARIO).ledger_endpoints)


# --- output -------------------------------------------------------------------------------------


def _print_events(events: list[dict[str, Any]]) -> None:
    print(f"Events in Outlook ({len(events)}):")
    print(f"  {'mailbox':38} {'task':28} {'start (UTC)':17} {'end (UTC)':17}")
    for event in sorted(events, key=lambda e: (e["mailbox"], e["subject"])):
        print(
            f"  {event['mailbox']:38} {event['subject'][:28]:28} "
            f"{_short(event['start']):17} {_short(event['end']):17}"
        )


def _short(value: Any) -> str:
    text = value.get("dateTime", "") if isinstance(value, dict) else str(value)
    return text[:16].replace("T", " ")


def _print_left_out(workdir: Path) -> None:
    """Why flagged tasks and assignees got no event, from the services' own log lines."""
    reasons = []
    for name in sorted((workdir / "logs").glob("*.log")):
        for line in name.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            event = entry.get("event")
            if (
                event in ("task skipped", "project skipped")
                and entry.get("reason") != "not_flagged"
            ):
                what = entry.get("task") or entry.get("project")
                reasons.append(f"{what!r}: {entry['reason']}")
            elif event == NO_USABLE_ADDRESS:
                reasons.append(f"{entry.get('task')!r}: no assignee with an e-mail address")
            elif event == "assignee has no e-mail address; no event for them":
                reasons.append(f"{entry.get('assignee')!r} on a flagged task: no e-mail address")
            elif event == "mailbox cannot take events; recorded for the assignee":
                reasons.append(f"{entry.get('mailbox')}: {entry.get('reason')}")
    print(f"Left out, with the reason ({len(set(reasons))}):")
    for reason in sorted(set(reasons)):
        print(f"  {reason}")
