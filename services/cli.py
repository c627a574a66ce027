"""``pwasync``: the one console script (commands of the interface page).

Exit codes: 0 success, 1 the check or operation failed, 2 usage or configuration error.
Operator-facing failures are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from common.errors import ConfigError, PwasyncError
from common.ids import canonical_id
from common.logging import configure_logging, flush_logs, get_logger
from common.settings import Settings, load_settings, unknown_variables

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

log = get_logger("pwasync")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or EXIT_OK)
    except ConfigError as exc:
        flush_logs()  # the one line that says why comes last, after the queued log lines
        print(f"pwasync: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PwasyncError as exc:
        flush_logs()
        print(f"pwasync: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED


# --- settings and logging for each command ----------------------------------------------------


def _settings(service: str = "cli") -> Settings:
    settings = load_settings()
    configure_logging(fmt=settings.log_format, level=settings.log_level, service=service)
    for name in unknown_variables():
        log.warning("unknown setting ignored (a typo?)", variable=name)
    return settings


def _service(
    name: str, run: Callable, requires: Callable[[Settings], None]
) -> Callable[[argparse.Namespace], int]:
    def command(_args: argparse.Namespace) -> int:
        from services.runtime import run_service

        settings = _settings(name)
        requires(settings)  # a missing setting is the one line printed, before anything starts
        return run_service(
            name, lambda stop: run(settings, stop), stop_timeout=settings.stop_timeout_seconds
        )

    return command


def _poller(settings: Settings, stop) -> None:  # noqa: ANN001
    from services.poller.service import run_poller

    run_poller(settings, stop)


def _writer(settings: Settings, stop) -> None:  # noqa: ANN001
    from services.event_writer.service import run_writer

    run_writer(settings, stop)


def _ledger(settings: Settings, stop) -> None:  # noqa: ANN001
    from services.ledger.service import run_ledger

    run_ledger(settings, stop)


def _receiver(settings: Settings, stop) -> None:  # noqa: ANN001
    from services.receiver.service import run_receiver

    run_receiver(settings, stop)


# --- one-shot commands --------------------------------------------------------------------------


def _sync_now(args: argparse.Namespace) -> int:
    from common.messages import SyncRequested, encode
    from common.rabbit import Publisher, RabbitConnector
    from common.topology import ROUTING_KEY_SYNC_REQUESTED, topology_for

    settings = _settings()
    request = SyncRequested(
        scenario=settings.scenario,
        project_ids=args.project,
        task_ids=args.task,
        full=args.full,
        trigger="manual",
        allow_deletions=args.allow_deletions,
    )
    if args.dry_run:
        from services.ops.dry_run import run_dry_run

        return run_dry_run(settings, request)
    connector = RabbitConnector(settings.amqp_url.get_secret_value(), connection_name="pwasync-cli")
    publisher = Publisher(connector, topology_for(settings.scenario))
    try:
        correlation_id = str(uuid.uuid4())
        message_id = publisher.publish(
            ROUTING_KEY_SYNC_REQUESTED, encode(request), correlation_id=correlation_id
        )
    finally:
        publisher.close()
    print(
        f"sync requested for scenario {settings.scenario} (correlation id {correlation_id}, "
        f"message {message_id})"
    )
    return EXIT_OK


def _usage(args: argparse.Namespace) -> int:
    from services.ops.usage_command import run_usage

    return run_usage(_settings(), as_json=args.json)


def _fields(args: argparse.Namespace) -> int:
    from services.poller.commands import fields

    lines, ok = fields(_settings(), args.action)
    print("\n".join(lines))
    return EXIT_OK if ok else EXIT_FAILED


def _connect(args: argparse.Namespace) -> int:
    from services.poller.commands import connect_operator

    user = connect_operator(_settings(), show=lambda text: print(text, flush=True))
    print(f"signed in as {user}; the sign-in is stored encrypted in Redis for every service")
    return EXIT_OK


def _events(args: argparse.Namespace) -> int:
    from services.receiver.commands import events_command

    lines, ok = events_command(_settings(), args.events_action)
    print("\n".join(lines))
    return EXIT_OK if ok else EXIT_FAILED


def _check(args: argparse.Namespace) -> int:
    from services.poller.commands import check

    lines = check(_settings(), args.mailbox)
    for line in lines:
        print(line.render())
    return EXIT_OK if lines and all(line.ok for line in lines) else EXIT_FAILED


def _require_sandbox() -> None:
    """The sandbox is left out of production images and needs the `sandbox` extra."""
    try:
        import sandbox.server  # noqa: F401 - only whether it imports
    except ImportError:
        raise ConfigError(
            "the sandbox is not installed here (production images leave it out): "
            "install it with pip install 'pwasync[sandbox]' from a checkout"
        ) from None


def _sandbox(args: argparse.Namespace) -> int:
    _require_sandbox()
    from sandbox.server import serve

    serve(
        port=args.port,
        directory=args.dir,
        latency_ms=args.latency_ms,
        seed=args.seed,
        edition=args.edition,
    )
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    from services.ops.status import collect_status, status_table

    status = collect_status(_settings())
    print(json.dumps(status) if args.json else status_table(status))
    return EXIT_OK


def _runs(args: argparse.Namespace) -> int:
    from services.ops.runs_command import run_runs

    return run_runs(_settings(), as_json=args.json, limit=args.limit)


def _dlq(args: argparse.Namespace) -> int:
    from services.ops.dlq_command import run_dlq

    return run_dlq(_settings(), args)


def _explain(args: argparse.Namespace) -> int:
    from services.ops.explain_command import run_explain

    return run_explain(_settings(), args.task, as_json=args.json)


def _demo(args: argparse.Namespace) -> int:
    _require_sandbox()
    from services.demo import run_demo

    return run_demo(
        workdir=args.dir, writers=args.writers, edition=args.edition, source=args.source
    )


# --- parser ---------------------------------------------------------------------------------


def _require_source(settings: Settings) -> None:
    from services.poller.sources import require_source

    require_source(settings)


def _source_id(text: str) -> str:
    """A project or task id as ``sync-now`` takes it: a GUID in any form, or a source's own id."""
    try:
        return canonical_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pwasync", description="Keep Microsoft Project tasks in Outlook calendars."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name, run, requires, text in (
        ("poller", _poller, _require_source, "run the poller until SIGTERM/SIGINT"),
        ("writer", _writer, Settings.require_graph, "run an event writer until SIGTERM/SIGINT"),
        ("ledger", _ledger, lambda _: None, "run the endpoint ledger until SIGTERM/SIGINT"),
        (
            "receiver",
            _receiver,
            Settings.require_receiver,
            "run the publish receiver (Project Server's publish calls) until SIGTERM/SIGINT",
        ),
    ):
        commands.add_parser(name, help=text).set_defaults(run=_service(name, run, requires))

    sync = commands.add_parser("sync-now", help="publish a manual sync request")
    sync.add_argument("--project", action="append", type=_source_id, default=[], metavar="ID")
    sync.add_argument("--task", action="append", type=_source_id, default=[], metavar="ID")
    sync.add_argument("--full", action="store_true", help="re-read every project")
    sync.add_argument(
        "--allow-deletions",
        action="store_true",
        help="confirm the removals the deletion guard held back",
    )
    sync.add_argument(
        "--dry-run",
        action="store_true",
        help="print what the sync would create, update and delete; change nothing",
    )
    sync.set_defaults(run=_sync_now)

    usage = commands.add_parser("usage", help="endpoints in use over the rolling 30 days")
    usage.add_argument("--json", action="store_true")
    usage.set_defaults(run=_usage)

    fields = commands.add_parser("fields", help="verify or create the task flag field")
    fields.add_argument("action", choices=("verify", "create"))
    fields.set_defaults(run=_fields)

    connect = commands.add_parser("connect", help="oauth: sign an operator in (device code)")
    connect.set_defaults(run=_connect)

    events = commands.add_parser(
        "events", help="the publish receiver's handler on Project Server: register, list, remove"
    )
    events.add_argument("events_action", choices=("register", "list", "unregister"))
    events.set_defaults(run=_events)

    check = commands.add_parser("check", help="check every prerequisite on both sides")
    check.add_argument("--mailbox", help="a mailbox to reach (default PWASYNC_CHECK_MAILBOX)")
    check.set_defaults(run=_check)

    sandbox = commands.add_parser("sandbox", help="run the emulated Microsoft 365 tenant")
    sandbox.add_argument("--port", type=int, default=8443, help="0 picks a free port")
    sandbox.add_argument("--dir", type=Path, default=Path(".sandbox"))
    sandbox.add_argument("--latency-ms", type=int, default=0)
    sandbox.add_argument("--seed", type=Path, default=None, help="seed JSON (default: built-in)")
    sandbox.add_argument(
        "--edition",
        choices=["se", "online"],
        default="se",
        help="se: Project Server Subscription Edition (default); online: Project Online",
    )
    sandbox.set_defaults(run=_sandbox)

    status = commands.add_parser("status", help="queues, last sync, throttling, usage")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=_status)

    runs = commands.add_parser("runs", help="history of sync runs and their counts")
    runs.add_argument("--json", action="store_true")
    runs.add_argument("--limit", type=int, default=20, metavar="N")
    runs.set_defaults(run=_runs)

    dlq = commands.add_parser("dlq", help="dead letters: list, show, replay, purge")
    dlq_actions = dlq.add_subparsers(dest="dlq_action", required=True, metavar="ACTION")
    dlq_actions.add_parser("list", help="every dead letter with its reason").add_argument(
        "--json", action="store_true"
    )
    dlq_actions.add_parser("show", help="one dead letter, whole").add_argument("id")
    replay = dlq_actions.add_parser("replay", help="send dead letters back to their queue")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?")
    which.add_argument("--all", action="store_true")
    dlq_actions.add_parser("purge", help="delete every dead letter").add_argument(
        "--yes", action="store_true", help="confirm without asking"
    )
    dlq.set_defaults(run=_dlq)

    explain = commands.add_parser(
        "explain",
        help="one task's whole story: the plan, its selection, its events, endpoint, dead letters",
    )
    explain.add_argument("task", metavar="TASK", help="the task's id or its name")
    explain.add_argument("--json", action="store_true")
    explain.set_defaults(run=_explain)

    demo = commands.add_parser("demo", help="sandbox + every service + a sync, then a summary")
    demo.add_argument("--dir", type=Path, default=Path(".demo"))
    demo.add_argument("--writers", type=int, default=2)
    demo.add_argument(
        "--edition",
        choices=("se", "online"),
        default="se",
        help="the plan source the sandbox plays: Project Server Subscription Edition (default) "
        "or Project Online",
    )
    demo.add_argument(
        "--source",
        choices=("project", "dataverse", "planner"),
        default="project",
        help="where the plans are read (PWASYNC_SOURCE): Project (--edition), Planner premium "
        "(dataverse) or basic Planner (planner)",
    )
    demo.set_defaults(run=_demo)
    return parser


if __name__ == "__main__":
    sys.exit(main())
