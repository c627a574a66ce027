"""Fault 7: bad configuration. Every required setting missing, and every setting malformed,
stops the command at once with one line that names the variable (never its value) and exit 2,
before it connects to anything or logs a line."""

from __future__ import annotations

import itertools
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from services.launcher import clean_environment, pwasync_command
from tests.chaos.end_state import record

pytestmark = [pytest.mark.e2e]

PASSWORD = "Pa55-w0rd-never-shown"
# Valid settings for every command; the broker and Redis ports are closed, so a command that
# got past its configuration would fail with exit 1, not 2.
BASE = {
    "PWASYNC_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/%2F",
    "PWASYNC_REDIS_URL": "redis://127.0.0.1:1/0",
    "PWASYNC_PWA_URL": "https://127.0.0.1:2/sites/pwa",
    "PWASYNC_PWA_AUTH": "sharepoint_online",
    "PWASYNC_PWA_USERNAME": "svc-pwasync@contoso.com",
    "PWASYNC_PWA_PASSWORD": PASSWORD,
    "PWASYNC_PWA_CLIENT_ID": "9fab117b-8231-520e-8850-b247a88d6aa2",
    "PWASYNC_TENANT_ID": "contoso.onmicrosoft.com",
    "PWASYNC_GRAPH_CLIENT_ID": "5fec62be-79ea-532e-94e6-bf96df4586bd",
    "PWASYNC_GRAPH_CLIENT_SECRET": PASSWORD,
    "PWASYNC_AUTHORITY_HOST": "https://127.0.0.1:2",
    "PWASYNC_AUTHORITY_HOST_TRUSTED": "true",
}
NOT_PEM = str(Path(__file__))  # a readable file that is neither a CA nor a key

# (command, what is changed, the variable the line must name)
MISSING = [
    *[(["poller"], {name: ""}, name) for name in (
        "PWASYNC_PWA_URL", "PWASYNC_PWA_CLIENT_ID", "PWASYNC_PWA_USERNAME",
        "PWASYNC_PWA_PASSWORD",
    )],
    (["poller"], {"PWASYNC_PWA_AUTH": "oauth"}, "PWASYNC_SECRET_KEY"),
    (["poller"], {"PWASYNC_PWA_AUTH": "sharepoint_onprem", "PWASYNC_PWA_USERNAME": ""},
     "PWASYNC_PWA_USERNAME"),
    (["writer"], {"PWASYNC_TENANT_ID": ""}, "PWASYNC_TENANT_ID"),
    (["writer"], {"PWASYNC_GRAPH_CLIENT_ID": ""}, "PWASYNC_GRAPH_CLIENT_ID"),
    (["writer"], {"PWASYNC_GRAPH_CLIENT_SECRET": ""}, "PWASYNC_GRAPH_CLIENT_SECRET"),
    (["fields", "verify"], {"PWASYNC_PWA_URL": ""}, "PWASYNC_PWA_URL"),
    (["fields", "create"], {"PWASYNC_PWA_PASSWORD": ""}, "PWASYNC_PWA_PASSWORD"),
    (["connect"], {"PWASYNC_PWA_AUTH": "oauth"}, "PWASYNC_SECRET_KEY"),
    (["connect"], {"PWASYNC_PWA_AUTH": "oauth", "PWASYNC_SECRET_KEY": "k",
                   "PWASYNC_PWA_CLIENT_ID": ""}, "PWASYNC_PWA_CLIENT_ID"),
]  # fmt: skip

MALFORMED = {
    "PWASYNC_AMQP_URL": "http://admin:" + PASSWORD + "@broker/",
    "PWASYNC_REDIS_URL": "localhost:6379",
    "PWASYNC_SCENARIO": "Has Spaces",
    "PWASYNC_PWA_URL": "ftp://contoso/pwa",
    "PWASYNC_PWA_AUTH": "kerberos",
    "PWASYNC_PWA_TIMEZONE": "Mars/Olympus",
    "PWASYNC_SCHEDULE": "hourly",
    "PWASYNC_SCHEDULE_TIMEZONE": "Nowhere",
    "PWASYNC_SYNC_START": "yesterday",
    "PWASYNC_ENDPOINT_LIMIT": "-1",
    "PWASYNC_HTTP_PORT": "70000",
    "PWASYNC_LOG_FORMAT": "xml",
    "PWASYNC_LOG_LEVEL": "loud",
    "PWASYNC_CA_BUNDLE": NOT_PEM,
    "PWASYNC_GRAPH_CLIENT_CERT": NOT_PEM,
    "PWASYNC_GRAPH_CLIENT_CERT_THUMBPRINT": "AB:CD",
    "PWASYNC_GRAPH_URL": "http://graph.microsoft.com/v1.0",
    "PWASYNC_AUTHORITY_HOST": "login.microsoftonline.com",
    "PWASYNC_WRITER_CONCURRENCY": "0",
    "PWASYNC_EVENT_SHOW_AS": "maybe",
    "PWASYNC_EVENT_ALL_DAY": "sometimes",
    "PWASYNC_EVENT_REMINDER_MINUTES": "soon",
    "PWASYNC_GRAPH_MAILBOX_CONCURRENCY": "5",
    "PWASYNC_GRAPH_BATCH_SIZE": "21",
    "PWASYNC_HTTP_TIMEOUT_SECONDS": "0",
    "PWASYNC_SYNC_OVERLAP_SECONDS": "-1",
    "PWASYNC_DELETION_GUARD_PERCENT": "101",
}
COMMANDS = [
    ["poller"], ["writer"], ["ledger"], ["sync-now"], ["usage"], ["fields", "verify"],
    ["connect"], ["runs"], ["dlq", "list"], ["status"], ["check"], ["explain", "Go-live"],
]  # fmt: skip


def _cases() -> list[tuple[list[str], dict[str, str], str]]:
    """Every missing setting for the commands that need it; every malformed setting for two
    commands each, in turn, so every command meets several."""
    commands = itertools.cycle(COMMANDS)
    malformed = [
        (next(commands), {name: value}, name) for name, value in MALFORMED.items() for _ in range(2)
    ]
    return MISSING + malformed


def _run(case, workdir: Path) -> tuple[list[str], str, int, str, str]:
    command, changes, variable = case
    result = subprocess.run(
        pwasync_command(*command),
        env=clean_environment({**BASE, **changes}),
        cwd=workdir,  # no .env file here
        capture_output=True,
        text=True,
        timeout=60,
    )
    return command, variable, result.returncode, result.stdout, result.stderr


def test_every_missing_or_malformed_setting_is_one_line_and_exit_2(tmp_path):
    cases = _cases()
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda case: _run(case, tmp_path), cases))
    failures = []
    for command, variable, code, stdout, stderr in results:
        lines = [line for line in stderr.splitlines() if line.strip()]
        ok = (
            code == 2
            and stdout == ""
            and len(lines) == 1
            and lines[0].startswith("pwasync: configuration error: ")
            and variable in lines[0]
            and PASSWORD not in stderr
        )
        if not ok:
            failures.append((" ".join(command), variable, code, stdout[:200], lines[:3]))
    record(
        "bad configuration (missing, malformed)",
        f"{len(cases)} cases over {len(COMMANDS) + 1} commands: "
        f"{len(cases) - len(failures)} gave one line naming the variable and exit 2",
    )
    assert failures == []
