"""The health endpoints of a real service process (the ledger), and their failure modes."""

import socket

import httpx
import pytest

from common.health import HealthServer, Heartbeats
from tests.e2e.harness import wait_for
from tests.ports import free_port

pytestmark = pytest.mark.integration


def test_probes_report_each_check():
    state = {"broker": True}
    server = HealthServer(
        0,
        liveness={"loop": lambda: True},
        readiness={"broker": lambda: state["broker"], "redis": lambda: 1 / 0},
        heartbeats=Heartbeats(),  # none of the loops other tests of this process left
    ).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok", "checks": {"loop": True}}
        ready = httpx.get(f"{base}/readyz")
        assert ready.status_code == 503  # a check that raises is a failing check
        assert ready.json()["checks"] == {"broker": True, "redis": False}
        assert httpx.get(f"{base}/nope").status_code == 404
        assert "pwasync_messages_total" in httpx.get(f"{base}/metrics").text
    finally:
        server.stop()


def test_a_running_ledger_is_alive_ready_and_counts_messages(
    tmp_path, amqp_url, redis_url, scenario
):
    from services.launcher import clean_environment, pwasync_command, start_process

    port = free_port()
    env = clean_environment(
        {
            "PWASYNC_AMQP_URL": amqp_url,
            "PWASYNC_REDIS_URL": redis_url,
            "PWASYNC_SCENARIO": scenario,
            "PWASYNC_HTTP_PORT": str(port),
        }
    )
    ledger = start_process("ledger", pwasync_command("ledger"), env=env, workdir=tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(f"{base}/readyz").status_code == 200
            except httpx.TransportError:
                return False

        assert wait_for(ready, timeout=30)
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert "pwasync_endpoints_in_use" in httpx.get(f"{base}/metrics").text
    finally:
        assert ledger.terminate() == 0


def test_a_port_in_use_is_a_configuration_error(tmp_path, amqp_url, redis_url, scenario):
    from services.launcher import clean_environment, pwasync_command, start_process

    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = clean_environment(
            {
                "PWASYNC_AMQP_URL": amqp_url,
                "PWASYNC_REDIS_URL": redis_url,
                "PWASYNC_SCENARIO": scenario,
                "PWASYNC_HTTP_PORT": str(port),
            }
        )
        ledger = start_process("ledger", pwasync_command("ledger"), env=env, workdir=tmp_path)
        assert ledger.process.wait(30) == 2
    output = (tmp_path / "logs" / "ledger.log").read_text()
    assert f"PWASYNC_HTTP_PORT: cannot listen on port {port}" in output
