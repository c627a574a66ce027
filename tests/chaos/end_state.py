"""The end state of a fault run, measured exactly, and the table ``make chaos`` prints.

After the faults, a run is left to settle (every expected event there, the ledger caught up,
the work and retry queues empty for a while), the services are stopped with SIGTERM, and then:

- every (mailbox, task) event pwasync wrote is counted in the sandbox by its task-key property:
  **created** (events of ours), **duplicates** (a second event of a pair), **lost** (an
  expected pair without an event) and **unexpected** (a pair nobody asked for);
- the ledger (``pwasync usage --json``) must hold exactly the tasks that have events;
- every queue of the scenario must be empty except the dead-letter queues, and every dead letter
  (``pwasync dlq list --json``) must carry a reason and be one the test expected; a sync request
  that names another scenario is not this run's (``leftovers``);
- no log line of any service may hold a password, the client secret or a token.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import BadMessage
from common.messages import SyncRequested, decode
from common.rabbit import RabbitConnector, inspect_queue
from common.topology import topology_for
from services.event_writer.event_mapping import TASK_KEY_PROPERTY
from tests.e2e.harness import Pipeline, wait_for

RESULTS: list[Row] = []  # every measured run of this session, for the table
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.")


@dataclass(frozen=True)
class Expectation:
    events: frozenset[tuple[str, str]]  # (mailbox, task id)
    dead: dict[str, int] = field(default_factory=dict)  # reason fragment -> dead letters

    @property
    def tasks(self) -> set[str]:
        return {task for _, task in self.events}


@dataclass
class Row:
    fault: str
    run: str
    operations: str
    expected: int
    created: int
    duplicates: int
    lost: int
    unexpected: int
    ledger: str
    dead: list[str]
    queued: dict[str, int]
    secrets_in_logs: list[str]
    seconds: float
    exit_codes: dict[str, int] = field(default_factory=dict)
    duplicated: list[dict] = field(default_factory=list)  # the events of duplicated pairs

    def dead_summary(self) -> str:
        if not self.dead:
            return "0"
        reasons = Counter(_short(reason) for reason in self.dead)
        return f"{len(self.dead)}: " + "; ".join(f"{r} (x{n})" for r, n in reasons.items())


def _short(reason: str, width: int = 60) -> str:
    """A reason without the error class, cut for the table."""
    reason = re.sub(r"^[A-Za-z]+: ", "", reason).removeprefix("body ")
    return reason if len(reason) <= width else reason[: width - 1] + "…"


def settle(pipeline: Pipeline, expectation: Expectation, amqp_url: str, timeout: float) -> bool:
    """Wait until the expected events and endpoints are there and the queues stay empty."""
    wanted = len(expectation.events)

    def events_arrived() -> bool:
        if pipeline.client.health()["events"] < wanted:
            return False
        return set(pipeline.event_keys()) >= expectation.events

    deadline = time.monotonic() + timeout
    if not wait_for(events_arrived, timeout=timeout, interval=1.0):
        return False
    remaining = max(5.0, deadline - time.monotonic())
    tasks = len(expectation.tasks)
    if not wait_for(lambda: pipeline.usage()["endpoints_in_use"] >= tasks, timeout=remaining):
        return False
    quiet = 0
    while quiet < 3 and time.monotonic() < deadline + 30:
        quiet = quiet + 1 if not busy_queues(pipeline.scenario, amqp_url) else 0
        time.sleep(1.0)
    return quiet >= 3


def busy_queues(scenario: str, amqp_url: str) -> dict[str, int]:
    """Ready messages in every queue of the scenario that is not a dead-letter queue."""
    depths = queue_depths(scenario, amqp_url)
    return {name: n for name, n in depths.items() if n and not name.endswith(".dead")}


def leftovers(scenario: str, amqp_url: str) -> dict[str, int]:
    """``busy_queues`` once the services have stopped, without other scenarios' sync requests.

    ``sync.requested`` is one routing key bound by every scenario's queue on the broker (the
    interface fixes it), so a request another test run sends (a ``sync-now`` on the other
    xdist worker) lands in this queue too once the poller is gone. The poller ignores such a
    request, so it is not work this run left: the queue is browsed and only requests for this
    scenario, or bodies no poller could read, are counted."""
    busy = busy_queues(scenario, amqp_url)
    queue = topology_for(scenario).sync_requests.name
    if queue in busy:
        bodies = _browse(queue, amqp_url)
        own = [body for body in bodies if not _for_another_scenario(body, scenario)]
        busy = {name: n for name, n in {**busy, queue: len(own)}.items() if n}
    return busy


def _browse(queue: str, amqp_url: str) -> list[bytes]:
    """The bodies waiting in a queue, left there: taken unacked, given back when the
    connection closes."""
    connection = RabbitConnector(amqp_url, connection_name="chaos-check").connect()
    try:
        channel = connection.channel()
        bodies = []
        while (got := channel.basic_get(queue, auto_ack=False))[0] is not None:
            bodies.append(got[2])
        return bodies
    finally:
        connection.close()


def _for_another_scenario(body: bytes, scenario: str) -> bool:
    try:
        return decode(body, SyncRequested).scenario != scenario
    except BadMessage:
        return False  # unreadable: a poller of this scenario would have dead-lettered it


def queue_depths(scenario: str, amqp_url: str) -> dict[str, int]:
    connector = RabbitConnector(amqp_url, connection_name="chaos-check")
    depths = {}
    for name in topology_for(scenario).queue_names():
        state = inspect_queue(connector, name)
        depths[name] = state.ready if state else 0
    return depths


def measure(
    pipeline: Pipeline,
    expectation: Expectation,
    *,
    fault: str,
    run: str,
    operations: str,
    amqp_url: str,
    started: float,
    exit_codes: dict[str, int],
) -> Row:
    """Measure the end state (services stopped) and keep the row for the table."""
    keys = pipeline.event_keys()
    present = set(keys)
    usage = pipeline.usage()
    ledger_tasks = {task["task_id"] for task in usage["tasks"]}
    ledger = f"{len(ledger_tasks)}/{len(expectation.tasks)}" + (
        "" if ledger_tasks == expectation.tasks else " MISMATCH"
    )
    dead = json.loads(pipeline.cli("dlq", "list", "--json").stdout)
    duplicated = [
        {"mailbox": e["mailbox"], "task": key, "created": e["created"], "id": e["id"][-12:]}
        for e in pipeline.client.events()
        if (key := (e["extended_properties"].get(TASK_KEY_PROPERTY) or "/").split("/", 1)[1])
        and keys.get((e["mailbox"].lower(), key), 0) > 1
    ]
    row = Row(
        duplicated=duplicated,
        fault=fault,
        run=run,
        operations=operations,
        expected=len(expectation.events),
        created=sum(keys.values()),
        duplicates=sum(n - 1 for n in keys.values() if n > 1),
        lost=len(expectation.events - present),
        unexpected=len(present - expectation.events),
        ledger=ledger,
        dead=[letter["reason"] for letter in dead],
        queued=leftovers(pipeline.scenario, amqp_url),
        secrets_in_logs=secrets_in_logs(pipeline),
        seconds=time.monotonic() - started,
        exit_codes=exit_codes,
    )
    RESULTS.append(row)
    return row


def record(fault: str, operations: str, *, run: str = "short") -> Row:
    """A row for a fault that writes no events (configuration, TLS): what was tried."""
    row = Row(fault, run, operations, 0, 0, 0, 0, 0, "-", [], {}, [], 0.0)
    RESULTS.append(row)
    return row


def assert_exact(row: Row, expectation: Expectation) -> None:
    """The end state is exactly the expected one; the row says what differs."""
    assert (row.duplicates, row.lost, row.unexpected) == (0, 0, 0), row
    assert not row.ledger.endswith("MISMATCH"), row
    assert row.queued == {}, row
    assert all(reason.strip() for reason in row.dead), row
    matched = Counter()
    for reason in row.dead:
        fragment = next((f for f in expectation.dead if f in reason), None)
        assert fragment is not None, f"unexpected dead letter: {reason}"
        matched[fragment] += 1
    assert dict(matched) == {k: v for k, v in expectation.dead.items() if v}, row
    assert row.secrets_in_logs == [], row
    assert all(code == 0 for code in row.exit_codes.values()), row


def secrets_in_logs(pipeline: Pipeline) -> list[str]:
    """Log files of the run that hold a password, the client secret or a token."""
    settings = pipeline.sandbox.settings
    secrets = [
        settings["PWASYNC_PWA_PASSWORD"],
        settings["PWASYNC_GRAPH_CLIENT_SECRET"],
    ]
    found = []
    for path in sorted((pipeline.workdir / "logs").glob("*.log")):
        text = path.read_text(encoding="utf-8", errors="replace")
        if any(secret in text for secret in secrets) or _JWT.search(text):
            found.append(path.name)
    return found


def format_table(rows: list[Row]) -> str:
    header = (
        "| fault | run | operations | events expected | created | duplicates | lost | "
        "ledger (endpoints/expected) | dead-lettered with reason | seconds |"
    )
    lines = [header, "|" + "---|" * 10]
    for row in rows:
        lines.append(
            f"| {row.fault} | {row.run} | {row.operations} | {row.expected} | {row.created} | "
            f"{row.duplicates} | {row.lost} | {row.ledger} | {row.dead_summary()} | "
            f"{row.seconds:.0f} |"
        )
    return "\n".join(lines)


def write_table(rows: list[Row], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_table(rows) + "\n", encoding="utf-8")
