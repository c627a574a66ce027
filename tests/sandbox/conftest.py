"""The sandbox runs once per test session as a real process (``python -m sandbox --port 0``),
exactly as the demo and the services meet it; every test starts from a freshly reset tenant.

``sandbox`` (with ``control``, ``http``) is the Project Online edition, which every test written
before the editions existed expects; ``sandbox_se`` (with ``control_se``, ``http_se``) is
Project Server Subscription Edition, the sandbox's default.
"""

from __future__ import annotations

import re
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from common.http import new_http_client
from common.messages import SyncRequested
from common.redis_store import Keys
from common.settings import Settings, load_settings
from sandbox.client import SandboxClient, read_env_file
from services.poller.connection import open_pwa
from services.poller.pwa_api import PwaSource
from services.poller.sources import pwa_project_link
from services.poller.state import PollerState
from services.poller.sync import SyncRunner

READY = re.compile(r"^sandbox ready at (?P<url>\S+) \(settings in (?P<env>.+)\)$")
GRAPH_SCOPE = "https://graph.microsoft.com/.default"


@dataclass(frozen=True)
class RunningSandbox:
    url: str
    settings: dict[str, str]
    process: subprocess.Popen[str]

    @property
    def ca_file(self) -> str:
        return self.settings["PWASYNC_CA_BUNDLE"]

    @property
    def tenant_id(self) -> str:
        return self.settings["PWASYNC_TENANT_ID"]

    @property
    def token_url(self) -> str:
        return f"{self.url}/{self.tenant_id}/oauth2/v2.0/token"


def start_sandbox(directory: Path, *extra: str, edition: str = "online") -> RunningSandbox:
    command = [sys.executable, "-m", "sandbox", "--port", "0", "--dir", str(directory)]
    process = subprocess.Popen(
        [*command, "--edition", edition, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    match = READY.match(line)
    if not match:
        process.kill()
        raise RuntimeError(f"the sandbox did not start: {line!r}")
    return RunningSandbox(match["url"], read_env_file(Path(match["env"])), process)


def _session_sandbox(
    tmp_path_factory: pytest.TempPathFactory, edition: str
) -> Iterator[RunningSandbox]:
    running = start_sandbox(tmp_path_factory.mktemp(f"sandbox-{edition}"), edition=edition)
    yield running
    running.process.terminate()
    running.process.wait(timeout=10)


def _control(sandbox: RunningSandbox) -> Iterator[SandboxClient]:
    with SandboxClient(sandbox.url, sandbox.ca_file) as client:
        client.reset()
        yield client


def _http(sandbox: RunningSandbox) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=sandbox.ca_file)
    with httpx.Client(verify=context, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    yield from _session_sandbox(tmp_path_factory, "online")


@pytest.fixture(scope="session")
def sandbox_se(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    yield from _session_sandbox(tmp_path_factory, "se")


@pytest.fixture
def control(sandbox: RunningSandbox) -> Iterator[SandboxClient]:
    yield from _control(sandbox)


@pytest.fixture
def control_se(sandbox_se: RunningSandbox) -> Iterator[SandboxClient]:
    yield from _control(sandbox_se)


@pytest.fixture
def http(sandbox: RunningSandbox) -> Iterator[httpx.Client]:
    yield from _http(sandbox)


@pytest.fixture
def http_se(sandbox_se: RunningSandbox) -> Iterator[httpx.Client]:
    yield from _http(sandbox_se)


TokenFactory = Callable[..., str]


@pytest.fixture
def pwa_token(sandbox: RunningSandbox, http: httpx.Client, control: SandboxClient) -> TokenFactory:
    """A delegated PWA token from the password grant (the service account by default)."""

    def issue(username: str | None = None, password: str | None = None) -> str:
        response = http.post(
            sandbox.token_url,
            data={
                "grant_type": "password",
                "client_id": sandbox.settings["PWASYNC_PWA_CLIENT_ID"],
                "username": username or sandbox.settings["PWASYNC_PWA_USERNAME"],
                "password": password or sandbox.settings["PWASYNC_PWA_PASSWORD"],
                "scope": f"{sandbox.url}/.default openid profile offline_access",
            },
        )
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    return issue


@pytest.fixture
def graph_token(sandbox: RunningSandbox, http: httpx.Client, control: SandboxClient) -> str:
    """An app-only Graph token from the client-credentials grant."""
    response = http.post(
        sandbox.token_url,
        data={
            "grant_type": "client_credentials",
            "client_id": sandbox.settings["PWASYNC_GRAPH_CLIENT_ID"],
            "client_secret": sandbox.settings["PWASYNC_GRAPH_CLIENT_SECRET"],
            "scope": GRAPH_SCOPE,
        },
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def settings_for(sandbox: RunningSandbox, scenario: str = "default", **overrides: str) -> Settings:
    """The product's settings for a sandbox (``PWASYNC_<NAME>`` overrides by keyword)."""
    env = {**sandbox.settings, "PWASYNC_SCENARIO": scenario}
    env.update({f"PWASYNC_{k.upper()}": v for k, v in overrides.items()})
    return load_settings(env)


def http_counts(service: str) -> tuple[float, float]:
    """(requests, 429/503 answers) counted under the HTTP metrics' ``service`` label."""
    requests = sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "pwasync_http_requests"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["service"] == service
    )
    throttled = REGISTRY.get_sample_value("pwasync_throttled_total", {"service": service})
    return requests, throttled or 0.0


@pytest.fixture
def make_poll(redis_client, redis_url, scenario):
    """A poll of one sandbox: runs the real sync over the product's PWA source."""
    clients = []

    def make(sandbox, control):
        settings = settings_for(sandbox, scenario)
        state = PollerState(redis_client, Keys(scenario), redis_url)
        state.initialize_start(datetime(2000, 1, 1))
        published = []
        http = new_http_client(ca_bundle=settings.ca_bundle)
        clients.append(http)
        pwa = open_pwa(settings, http)
        source = PwaSource(pwa, settings)
        runner = SyncRunner(
            scenario=scenario,
            feed=source,
            publish=published.extend,
            state=state,
            pwa_zone=settings.pwa_zone,
            task_link=partial(pwa_project_link, settings.pwa_url),
            request_counter=lambda: pwa.requests_made,
        )

        def run(**request):
            published.clear()
            control.reset_stats()
            summary = runner.run(SyncRequested(scenario=scenario, **request))
            return summary, list(published), control.stats()["pwa"]

        run.source = source
        return run

    yield make
    for http in clients:
        http.close()
