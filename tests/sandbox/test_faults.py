"""Injected faults: what each knob of ``faults`` does to a request, and bad feed rows."""

from __future__ import annotations

import ssl
import time

import httpx
import pytest

from sandbox.client import SandboxClient, SandboxError
from tests.sandbox.conftest import RunningSandbox, TokenFactory
from tests.sandbox.test_graph import ADELE, Graph, event_body

LIGHT = {"Accept": "application/json"}
RELOCATION = "bdd9ba3c-6a37-5353-b794-b68ac4e6a39f"  # "Office Relocation Berlin" in the seed
KICK_OFF = "7b0fb185-642a-5227-9a0e-0a0a4cc04f2e"  # one of its tasks


@pytest.fixture
def graph(sandbox: RunningSandbox, http: httpx.Client, graph_token: str) -> Graph:
    return Graph(sandbox, http, graph_token)


def _tasks_url(sandbox: RunningSandbox) -> str:
    site = sandbox.settings["PWASYNC_PWA_URL"]
    return f"{site}/_api/ProjectData/Projects(guid'{RELOCATION}')/Tasks"


def test_a_reset_drops_the_connection_without_an_answer_and_does_nothing(
    graph: Graph, control: SandboxClient
) -> None:
    control.config(faults={"graph": {"reset_ratio": 1}})
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        graph.request("POST", f"/users/{ADELE}/events", event_body())
    control.config(faults={"graph": {"reset_ratio": 0}})
    assert control.events(ADELE) == []
    assert control.stats()["faults"]["graph"] == {"reset": 1}


def test_a_timeout_carries_the_request_out_but_answers_after_the_client_gave_up(
    sandbox: RunningSandbox, graph_token: str, control: SandboxClient
) -> None:
    control.config(faults={"graph": {"timeout_ratio": 1, "stall_s": 2}})
    context = ssl.create_default_context(cafile=sandbox.ca_file)
    with httpx.Client(verify=context, timeout=0.5) as short, pytest.raises(httpx.ReadTimeout):
        Graph(sandbox, short, graph_token).request("POST", f"/users/{ADELE}/events", event_body())
    assert [e["subject"] for e in control.events(ADELE)] == ["Kick-off meeting"]
    assert control.stats()["faults"]["graph"] == {"timeout": 1}


def test_a_latency_spike_delays_the_answer(graph: Graph, control: SandboxClient) -> None:
    control.config(faults={"graph": {"spike_ratio": 1, "spike_ms": 300}})
    started = time.monotonic()
    assert graph.request("GET", f"/users/{ADELE}/events").status_code == 200
    assert time.monotonic() - started >= 0.3
    assert control.stats()["faults"]["graph"] == {"spike": 1}


def test_pwa_transport_faults_and_status_faults_are_counted(
    sandbox: RunningSandbox, http: httpx.Client, pwa_token: TokenFactory, control: SandboxClient
) -> None:
    token = pwa_token()
    headers = {**LIGHT, "Authorization": f"Bearer {token}"}
    control.config(faults={"pwa": {"reset_ratio": 1}})
    with pytest.raises(httpx.RemoteProtocolError):
        http.get(_tasks_url(sandbox), headers=headers)
    control.config(faults={"pwa": {"reset_ratio": 0, "throttle_ratio": 1}})
    throttled = http.get(_tasks_url(sandbox), headers=headers)
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "2"
    assert control.stats()["faults"]["pwa"] == {"reset": 1, "throttle": 1}


def test_a_page_in_the_middle_of_a_paged_read_fails(
    sandbox: RunningSandbox, http: httpx.Client, pwa_token: TokenFactory, control: SandboxClient
) -> None:
    control.config(pwa_page_sizes={"Tasks": 3}, faults={"pwa": {"page_failure_ratio": 1}})
    headers = {**LIGHT, "Authorization": f"Bearer {pwa_token()}"}
    first = http.get(_tasks_url(sandbox), headers=headers)
    assert first.status_code == 200  # the first page never fails
    failed = http.get(first.json()["odata.nextLink"], headers=headers)
    assert failed.status_code == 500
    assert "Retry-After" not in failed.headers
    assert "error occurred" in failed.json()["odata.error"]["message"]["value"]
    assert control.stats()["faults"]["pwa"] == {"page_failure": 1}


def test_task_row_overrides_put_bad_data_into_the_feed(
    sandbox: RunningSandbox, http: httpx.Client, pwa_token: TokenFactory, control: SandboxClient
) -> None:
    control.config(task_row_overrides={KICK_OFF.upper(): {"TaskStartDate": "31.12.2026"}})
    headers = {**LIGHT, "Authorization": f"Bearer {pwa_token()}"}
    rows = http.get(_tasks_url(sandbox), headers=headers).json()["value"]
    kick_off = next(row for row in rows if row["TaskId"] == KICK_OFF)
    assert kick_off["TaskStartDate"] == "31.12.2026"
    assert all(row["TaskStartDate"] != "31.12.2026" for row in rows if row["TaskId"] != KICK_OFF)


@pytest.mark.parametrize(
    "faults",
    [
        {"graph": {"reset_ratio": 1.5}},
        {"graph": {"spike_ms": -1}},
        {"graph": {"spike_ratio": True}},
        {"pwa": {"unknown_ratio": 0.1}},
        {"pwa": 0.1},
        {"mail": {"throttle_ratio": 0.1}},
    ],
)
def test_bad_fault_settings_are_refused_by_name(control: SandboxClient, faults: dict) -> None:
    with pytest.raises(SandboxError, match="faults"):
        control.config(faults=faults)


def test_the_control_surface_shows_the_event_body(graph: Graph, control: SandboxClient) -> None:
    graph.request("POST", f"/users/{ADELE}/events", event_body())
    assert [e["body"] for e in control.events(ADELE)] == ["From Project Online"]
