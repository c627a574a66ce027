from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from common.errors import AuthenticationError, ConfigError, RetryableApiError
from common.identity import GraphAppTokens, MsalHttp, sign_in_error
from common.settings import load_settings


def recording_client():
    seen = []

    def handler(request):
        seen.append(str(request.url))
        return httpx.Response(404)

    return httpx.Client(transport=httpx.MockTransport(handler)), seen


def test_userrealm_discovery_keeps_the_authority_port():
    client, seen = recording_client()
    adapter = MsalHttp(client, "https://127.0.0.1:8443")
    adapter.get("https://127.0.0.1/common/userrealm/a@b.c?api-version=1.0")
    assert seen == ["https://127.0.0.1:8443/common/userrealm/a@b.c?api-version=1.0"]


def test_other_hosts_and_default_ports_are_left_alone():
    client, seen = recording_client()
    MsalHttp(client, "https://login.microsoftonline.com").get(
        "https://login.microsoftonline.com/common/userrealm/x"
    )
    MsalHttp(client, "https://127.0.0.1:8443").get("https://graph.example/x")
    assert seen == [
        "https://login.microsoftonline.com/common/userrealm/x",
        "https://graph.example/x",
    ]


def test_form_data_is_sent_as_a_form():
    bodies = []

    def handler(request):
        bodies.append((request.headers["content-type"], request.content))
        return httpx.Response(200, json={})

    adapter = MsalHttp(httpx.Client(transport=httpx.MockTransport(handler)), "https://h")
    adapter.post("https://h/t/oauth2/v2.0/token", data={"grant_type": "password", "x": "a b"})
    assert bodies == [("application/x-www-form-urlencoded", b"grant_type=password&x=a+b")]


def test_a_client_assertion_given_as_bytes_is_sent_as_its_text():
    # MSAL passes the signed assertion of a certificate sign-in as bytes.
    bodies = []

    def handler(request):
        bodies.append(request.content)
        return httpx.Response(200, json={})

    adapter = MsalHttp(httpx.Client(transport=httpx.MockTransport(handler)), "https://h")
    adapter.post("https://h/t/oauth2/v2.0/token", data={"client_assertion": b"eyJ.e30.sig"})
    assert bodies == [b"client_assertion=eyJ.e30.sig"]


def test_transport_failures_are_retried_then_retryable():
    attempts = []

    def handler(request):
        attempts.append(1)
        raise httpx.ConnectError("refused")

    adapter = MsalHttp(
        httpx.Client(transport=httpx.MockTransport(handler)), "https://h", attempts=2
    )
    try:
        adapter.get("https://h/x")
    except RetryableApiError:
        pass
    else:
        raise AssertionError("expected RetryableApiError")
    assert len(attempts) == 2


def test_sign_in_errors_become_one_clear_line():
    wrong_password = sign_in_error(
        {
            "error": "invalid_grant",
            "error_codes": [50126],
            "error_description": "AADSTS50126: Error validating credentials.\nTrace ID: x",
        },
        "Project Online (pm@contoso.com)",
    )
    assert isinstance(wrong_password, AuthenticationError)
    assert str(wrong_password) == (
        "Project Online (pm@contoso.com) sign-in failed (AADSTS50126): wrong user name or password"
    )
    mfa = sign_in_error({"error": "invalid_grant", "error_codes": [50076]}, "Project Online")
    assert "multi-factor" in str(mfa) and "PWASYNC_PWA_AUTH=oauth" in str(mfa)
    outage = sign_in_error({"error": "temporarily_unavailable"}, "Graph")
    assert isinstance(outage, RetryableApiError)
    unknown = sign_in_error(
        {"error": "invalid_request", "error_description": "AADSTS9999: odd.\nmore"}, "Graph"
    )
    assert str(unknown) == "Graph sign-in failed: AADSTS9999: odd."


# --- national clouds and the trust of a sign-in host (issue 11, item 18) --------------------

TENANT = "contoso.onmicrosoft.us"


def token_exchange(authority_host):
    """A sign-in host answering MSAL's discovery and token calls; records the token requests."""
    requests = []

    def handler(request):
        if request.url.path.endswith("/.well-known/openid-configuration"):
            base = f"{authority_host}/{TENANT}"
            return httpx.Response(
                200,
                json={
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "issuer": f"{base}/v2.0",
                },
            )
        if request.url.path.endswith("/oauth2/v2.0/token"):
            requests.append((request.url.host, dict(parse_qsl(request.content.decode()))))
            return httpx.Response(
                200, json={"access_token": "t", "token_type": "Bearer", "expires_in": 3600}
            )
        return httpx.Response(404)

    return httpx.Client(transport=httpx.MockTransport(handler)), requests


def graph_settings(authority_host, graph_url, **extra):
    return load_settings(
        {
            "PWASYNC_TENANT_ID": TENANT,
            "PWASYNC_GRAPH_CLIENT_ID": "5fec62be-79ea-532e-94e6-bf96df4586bd",
            "PWASYNC_GRAPH_CLIENT_SECRET": "app-secret",
            "PWASYNC_AUTHORITY_HOST": authority_host,
            "PWASYNC_GRAPH_URL": graph_url,
            **extra,
        }
    )


@pytest.mark.parametrize(
    ("authority_host", "graph_url", "scope"),
    [
        (
            "https://login.microsoftonline.com",
            "https://graph.microsoft.com/v1.0",
            "https://graph.microsoft.com/.default",
        ),
        (
            "https://login.microsoftonline.us",
            "https://graph.microsoft.us/v1.0",
            "https://graph.microsoft.us/.default",
        ),
        (
            "https://login.microsoftonline.us",
            "https://dod-graph.microsoft.us/v1.0",
            "https://dod-graph.microsoft.us/.default",
        ),
        (
            "https://login.partner.microsoftonline.cn",
            "https://microsoftgraph.chinacloudapi.cn/v1.0",
            "https://microsoftgraph.chinacloudapi.cn/.default",
        ),
    ],
)
def test_the_graph_scope_is_the_graph_urls_origin(authority_host, graph_url, scope):
    http, requests = token_exchange(authority_host)
    assert GraphAppTokens(graph_settings(authority_host, graph_url), http).token() == "t"
    assert [(host, form["scope"]) for host, form in requests] == [
        (urlsplit(authority_host).hostname, scope)
    ]


def test_a_graph_resource_other_than_its_url_is_named_by_a_setting():
    # A Graph reached through a proxy or an emulator keeps Microsoft's resource as audience.
    settings = graph_settings(
        "https://login.microsoftonline.com",
        "https://graph-proxy.contoso.com/v1.0",
        PWASYNC_GRAPH_RESOURCE="https://graph.microsoft.com",
    )
    http, requests = token_exchange("https://login.microsoftonline.com")
    GraphAppTokens(settings, http).token()
    assert requests[0][1]["scope"] == "https://graph.microsoft.com/.default"


def test_an_unknown_sign_in_host_is_refused_at_start():
    # Any host not Microsoft's used to turn MSAL's authority validation off and get the secret.
    with pytest.raises(ConfigError) as caught:
        graph_settings("https://login.microsoftonline.co", "https://graph.microsoft.com/v1.0")
    message = str(caught.value)
    assert "PWASYNC_AUTHORITY_HOST" in message and "PWASYNC_AUTHORITY_HOST_TRUSTED" in message
    assert "app-secret" not in message and "\n" not in message


def test_a_sign_in_host_trusted_by_the_setting_gets_the_secret():
    host = "https://127.0.0.1:8443"
    settings = graph_settings(
        host,
        f"{host}/v1.0",
        PWASYNC_AUTHORITY_HOST_TRUSTED="true",
        PWASYNC_GRAPH_RESOURCE="https://graph.microsoft.com",
    )
    http, requests = token_exchange(host)
    assert GraphAppTokens(settings, http).token() == "t"
    assert requests[0][0] == "127.0.0.1" and requests[0][1]["client_secret"] == "app-secret"
