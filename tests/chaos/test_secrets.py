"""Security 9: no secret in any log line, error line or ``pwasync status``. The run uses a
Redis with a password, a management URL with a password, the sandbox's PWA password and Graph
client secret and a token key, and then looks for every one of them (and for any token)."""

from __future__ import annotations

import re

import pytest

from tests.chaos.end_state import record
from tests.chaos.nodes import RedisServer
from tests.e2e.harness import Pipeline, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

REDIS_PASSWORD = "R3dis-pass-never-shown"
MANAGEMENT_PASSWORD = "M4nagement-pass-never-shown"
SECRET_KEY = "T0ken-key-never-shown"
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.")


def test_no_secret_in_logs_error_lines_or_status(tmp_path, amqp_url, scenario):
    redis = RedisServer(tmp_path / "redis", password=REDIS_PASSWORD)
    redis.start()
    pipeline = Pipeline(tmp_path, amqp_url=amqp_url, redis_url=redis.url, scenario=scenario)
    try:
        pipeline.env.update(
            {
                "PWASYNC_SECRET_KEY": SECRET_KEY,
                "PWASYNC_RABBITMQ_MANAGEMENT_URL": f"http://guest:{MANAGEMENT_PASSWORD}@127.0.0.1:1",
            }
        )
        settings = pipeline.sandbox.settings
        secrets = {
            "PWA password": settings["PWASYNC_PWA_PASSWORD"],
            "Graph client secret": settings["PWASYNC_GRAPH_CLIENT_SECRET"],
            "Redis password": REDIS_PASSWORD,
            "management password": MANAGEMENT_PASSWORD,
            "token key": SECRET_KEY,
        }

        def leaks(text: str) -> list[str]:
            found = [name for name, secret in secrets.items() if secret in text]
            return found + (["a token"] if JWT.search(text) else [])

        outputs: dict[str, str] = {}
        for name in ("poller", "writer", "ledger"):
            pipeline.start(name)
        pipeline.cli("fields", "create")
        pipeline.client.flag_tasks(pipeline.client.demo_flag_task_ids())
        pipeline.cli("sync-now")
        assert wait_for(lambda: len(pipeline.event_keys()) == 6, timeout=60)
        for args in (("status",), ("status", "--json"), ("runs", "--json"), ("dlq", "list")):
            result = pipeline.cli(*args, check=False)
            outputs[" ".join(args)] = result.stdout + result.stderr

        # Error lines: the broker and Redis unreachable with passwords in their URLs, a wrong
        # PWA password and a wrong client secret.
        down = {
            "PWASYNC_AMQP_URL": f"amqp://guest:{MANAGEMENT_PASSWORD}@127.0.0.1:1/%2F",
            "PWASYNC_REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:1/0",
        }
        wrong = {
            "PWASYNC_PWA_PASSWORD": secrets["PWA password"] + "-wrong",
            "PWASYNC_GRAPH_CLIENT_SECRET": secrets["Graph client secret"] + "-wrong",
        }
        for args, changes in (
            (("usage",), down),
            (("sync-now",), down),
            (("status",), down),
            (("check", "--mailbox", "adele.vance@contoso.onmicrosoft.com"), wrong),
        ):
            saved = dict(pipeline.env)
            pipeline.env.update(changes)
            result = pipeline.cli(*args, check=False)
            pipeline.env = saved
            assert result.returncode == 1, (args, result.stderr)
            outputs[" ".join(args) + " (failing)"] = result.stdout + result.stderr
        assert (
            "wrong user name or password"
            in outputs["check --mailbox adele.vance@contoso.onmicrosoft.com (failing)"]
        )
        codes = pipeline.stop_all()
        for path in sorted((tmp_path / "logs").glob("*.log")):
            outputs[path.name] = path.read_text()
        found = {name: leaks(text) for name, text in outputs.items() if leaks(text)}
        record(
            "secrets in logs, error lines, status",
            f"{len(outputs)} outputs (every log, status, runs, dlq, 4 failing commands) "
            f"searched for 5 secrets and any token: {len(found)} leaked",
        )
        assert found == {}
        assert set(codes.values()) == {0}
    finally:
        pipeline.close()
        redis.close()
