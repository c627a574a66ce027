"""The product's sign-ins with a certificate instead of a secret (PWASYNC_GRAPH_CLIENT_CERT,
PWASYNC_DATAVERSE_CLIENT_CERT), against the sandbox's Entra: the writer's Graph app and the
Planner premium reader's app, and the one line an operator gets for a wrong thumbprint."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from common.errors import AuthenticationError
from common.http import new_graph_session, new_http_client
from common.identity import GraphAppTokens
from sandbox.client import SandboxClient
from services.event_writer.graph import GraphTransport, LoopTokens
from services.event_writer.graph_protocol import GraphRequest
from services.poller.dataverse_auth import open_dataverse
from tests.sandbox.certificates import AppCertificate, app_certificate
from tests.sandbox.conftest import RunningSandbox, settings_for

ADELE = "adele.vance@contoso.onmicrosoft.com"


@pytest.fixture(scope="module")
def certificate() -> AppCertificate:
    return app_certificate("pwasync app")


def _graph_settings(sandbox: RunningSandbox, key: Path, thumbprint: str):
    return settings_for(
        sandbox,
        graph_client_secret="",
        graph_client_cert=str(key),
        graph_client_cert_thumbprint=thumbprint,
    )


def test_the_writer_signs_in_to_graph_with_a_certificate_and_writes(
    sandbox: RunningSandbox, control: SandboxClient, certificate: AppCertificate, tmp_path
):
    control.add_app_certificate(
        sandbox.settings["PWASYNC_GRAPH_CLIENT_ID"], certificate.certificate_pem
    )
    settings = _graph_settings(sandbox, certificate.write_key(tmp_path), certificate.thumbprint)
    assert settings.graph_client_secret is None  # the certificate alone signs in

    async def read_events(tokens: GraphAppTokens):
        async with new_graph_session(ca_bundle=settings.ca_bundle) as session:
            transport = GraphTransport(session, settings.graph_url, LoopTokens(tokens))
            return await transport.send(GraphRequest("GET", ADELE, "/events"))

    with new_http_client(ca_bundle=settings.ca_bundle) as http:
        result = asyncio.run(read_events(GraphAppTokens(settings, http)))
    assert result.status == 200


def test_a_wrong_thumbprint_is_refused_in_one_clear_line(
    sandbox: RunningSandbox, control: SandboxClient, certificate: AppCertificate, tmp_path
):
    control.add_app_certificate(
        sandbox.settings["PWASYNC_GRAPH_CLIENT_ID"], certificate.certificate_pem
    )
    other = app_certificate("another certificate")
    settings = _graph_settings(sandbox, certificate.write_key(tmp_path), other.thumbprint)
    with (
        new_http_client(ca_bundle=settings.ca_bundle) as http,
        pytest.raises(AuthenticationError) as refused,
    ):
        GraphAppTokens(settings, http).token()
    message = str(refused.value)
    assert message.startswith("Graph (app-only) sign-in failed (AADSTS700027): ")
    assert "PWASYNC_*_CLIENT_CERT_THUMBPRINT" in message and "\n" not in message


def test_the_dataverse_reader_signs_in_with_its_apps_certificate(
    sandbox: RunningSandbox, control: SandboxClient, certificate: AppCertificate, tmp_path
):
    client_id = sandbox.settings["PWASYNC_DATAVERSE_CLIENT_ID"]
    control.add_app_certificate(client_id, certificate.certificate_pem)
    settings = settings_for(
        sandbox,
        source="dataverse",
        dataverse_client_secret="",
        dataverse_client_cert=str(certificate.write_key(tmp_path)),
        dataverse_client_cert_thumbprint=certificate.thumbprint,
    )
    with new_http_client(ca_bundle=settings.ca_bundle) as http:
        edge = open_dataverse(settings, http)
        who = edge.get_json(f"{edge.api_url}/WhoAmI")
        assert who["UserId"]  # the application user of that app
        # Its certificate taken off the app: the next sign-in is refused, in one line.
        control.remove_app_certificate(client_id, certificate.thumbprint)
        with pytest.raises(AuthenticationError, match=r"^Dataverse \(app-only\) .*AADSTS700027"):
            open_dataverse(settings, http).get_json(f"{edge.api_url}/WhoAmI")
