"""What the services write to their logs: one JSON object per line, the sync request's
correlation id on every line its work causes, and never a secret."""

import json
import re

import pytest

from tests.e2e.harness import metric_total, wait_for
from tests.ports import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.")


def test_logs_are_json_correlated_and_free_of_secrets(pipeline):
    ports = {name: free_port() for name in ("poller", "writer", "ledger")}
    for name in ("poller", "writer", "ledger"):
        pipeline.start(name, {"PWASYNC_HTTP_PORT": str(ports[name])})
    pipeline.cli("fields", "create")
    pipeline.client.flag_tasks(pipeline.client.demo_flag_task_ids(), value=True, publish=True)
    requested = pipeline.cli("sync-now").stdout
    correlation_id = re.search(r"correlation id ([0-9a-f-]{36})", requested).group(1)
    assert wait_for(lambda: pipeline.usage()["endpoints_in_use"] == 4, timeout=60)

    def metric(name: str, sample: str) -> float:
        return metric_total(f"http://127.0.0.1:{ports[name]}/metrics", sample)

    assert (
        metric("writer", 'pwasync_http_requests_total{method="POST",service="graph",status="201"}')
        >= 6
    )
    assert (
        metric("poller", 'pwasync_http_requests_total{method="GET",service="pwa",status="200"}') > 0
    )
    assert metric("poller", "pwasync_poll_duration_seconds_count") >= 1
    # One transfer.succeeded may carry several transfers (a writer's group commit).
    assert metric("ledger", 'pwasync_messages_total{outcome="acked"') >= 1
    assert metric("ledger", "pwasync_endpoints_allocated_total") == 4
    assert metric("ledger", "pwasync_endpoints_in_use") == 4
    assert set(pipeline.stop_all().values()) == {0}

    secrets = [
        pipeline.env["PWASYNC_PWA_PASSWORD"],
        pipeline.env["PWASYNC_GRAPH_CLIENT_SECRET"],
    ]
    for name in ("poller", "writer", "ledger"):
        text = (pipeline.workdir / "logs" / f"{name}.log").read_text()
        for secret in secrets:
            assert secret not in text, f"a secret in the {name} log"
        assert not JWT.search(text), f"a token in the {name} log"
        assert "Bearer " not in text
        lines = [json.loads(line) for line in text.splitlines()]  # every line is JSON
        assert all({"event", "level", "timestamp", "service"} <= line.keys() for line in lines)
        caused = [line for line in lines if line.get("correlation_id") == correlation_id]
        assert caused, f"no {name} line carries the sync request's correlation id"
