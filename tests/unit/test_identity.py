import httpx

from common.errors import AuthenticationError, RetryableApiError
from common.identity import MsalHttp, sign_in_error


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
