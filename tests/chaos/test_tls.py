"""Security 8: TLS verification is on everywhere. The sandbox's certificate comes from a
throw-away CA; without ``PWASYNC_CA_BUNDLE`` every path refuses it (the PWA, Graph, the
sign-in), whatever the environment says (``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE``), and the
bundle only adds that CA to the public roots."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from common.errors import PermanentApiError
from common.http import new_graph_session, new_http_client
from common.identity import MsalHttp
from services.event_writer import graph_protocol
from services.event_writer.graph import GraphTransport, LoopTokens
from services.poller.pwa_http import PwaHttp
from tests.chaos.end_state import record
from tests.e2e.harness import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

REFUSED = "TLS certificate not trusted"


class _Token:
    def token(self) -> str:
        return "not-a-real-token"

    def invalidate(self) -> None:
        pass


class _Bearer(httpx.Auth):
    def auth_flow(self, request):  # noqa: ANN001, ANN201 - httpx's protocol
        request.headers["Authorization"] = "Bearer not-a-real-token"
        yield request


def test_every_https_edge_refuses_an_untrusted_certificate_and_trusts_the_bundle(pipeline):
    settings = pipeline.sandbox.settings
    ca = Path(settings["PWASYNC_CA_BUNDLE"])
    projects = f"{settings['PWASYNC_PWA_URL']}/_api/ProjectData/Projects"
    tenant = settings["PWASYNC_TENANT_ID"]
    token_url = f"{settings['PWASYNC_AUTHORITY_HOST']}/{tenant}/oauth2/v2.0/token"
    with new_http_client(ca_bundle=None) as untrusting, new_http_client(ca_bundle=ca) as trusting:

        def graph(http):
            """The writer's Graph edge (asyncio), with the trust of ``http``."""

            async def send():
                bundle = ca if http is trusting else None
                async with new_graph_session(ca_bundle=bundle) as client:
                    transport = GraphTransport(
                        client, settings["PWASYNC_GRAPH_URL"], LoopTokens(_Token())
                    )
                    request = graph_protocol.find_by_property("adele@x", "String {0} Name k", "v")
                    return await transport.send(request)

            return asyncio.run(send())

        edges = {
            "PWA": lambda http: PwaHttp(http, settings["PWASYNC_PWA_URL"], _Bearer()).get_json(
                projects
            ),
            "Graph": graph,
            "sign-in": lambda http: MsalHttp(http, settings["PWASYNC_AUTHORITY_HOST"]).post(
                token_url, data={"grant_type": "client_credentials"}
            ),
        }
        for name, call in edges.items():
            with pytest.raises(PermanentApiError, match=REFUSED) as refused:
                call(untrusting)
            assert "PWASYNC_CA_BUNDLE" in str(refused.value), name
        # With the bundle the same calls reach the sandbox (which refuses the fake token).
        with pytest.raises(PermanentApiError, match="401"):
            edges["PWA"](trusting)
        assert edges["Graph"](trusting).status == 401
        assert edges["sign-in"](trusting).status_code == 400


def test_check_and_the_services_without_the_ca_bundle_refuse_the_sandbox(pipeline):
    ca = pipeline.sandbox.settings["PWASYNC_CA_BUNDLE"]
    untrusting = {
        "PWASYNC_CA_BUNDLE": "",  # removed below: the services get no bundle at all
        # The environment cannot add trust behind the setting's back.
        "SSL_CERT_FILE": ca,
        "REQUESTS_CA_BUNDLE": ca,
        "CURL_CA_BUNDLE": ca,
    }
    pipeline.env = {k: v for k, v in {**pipeline.env, **untrusting}.items() if v}
    check = pipeline.cli("check", "--mailbox", "adele.vance@contoso.onmicrosoft.com", check=False)
    assert check.returncode == 1
    failed = [line for line in check.stdout.splitlines() if line.startswith("FAIL")]
    assert failed and all(REFUSED in line for line in failed), check.stdout

    # The services sign in (MSAL reads the authority's OpenID configuration) before they take
    # any work: without trust they stop at once, with the one line, and take nothing.
    for name in ("writer", "poller"):
        service = pipeline.start(name)
        assert wait_for(lambda s=service: not s.alive(), timeout=60), name
        assert service.process.returncode == 1, name
        lines = [line for line in service.log_path.read_text().splitlines() if line.strip()]
        assert REFUSED in lines[-1] and "PWASYNC_CA_BUNDLE" in lines[-1], lines[-3:]
        del pipeline.services[name]
    assert pipeline.client.events() == []
    record(
        "TLS: the sandbox without PWASYNC_CA_BUNDLE",
        "PWA, Graph and sign-in edges, `pwasync check`, a writer and a poller started: every "
        f"call refused ({REFUSED}), the services exit 1 with that line; 0 events",
    )
