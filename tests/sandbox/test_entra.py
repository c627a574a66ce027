"""Sign-in through the real MSAL library, and Entra's error shapes."""

from __future__ import annotations

import base64
import json
import ssl
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import jwt
import msal
import pytest

from sandbox.client import SandboxClient
from sandbox.tokens import b64url_decode
from tests.sandbox.certificates import AppCertificate, app_certificate
from tests.sandbox.conftest import GRAPH_SCOPE, RunningSandbox

DEMO_PASSWORD = "Sandbox-User-2026!"


class _Response:
    def __init__(self, response: httpx.Response) -> None:
        self.status_code, self.text, self.headers = (
            response.status_code,
            response.text,
            response.headers,
        )

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise RuntimeError(f"HTTP {self.status_code}")


class PortRestoringHttpClient:
    """MSAL's ``http_client``: MSAL builds the user-realm URL from the authority's host name
    without its port, so this adapter puts the port back (the product's client does the same)."""

    def __init__(self, authority_url: str, ca_file: str) -> None:
        self._netloc = urlsplit(authority_url).netloc
        self._host = urlsplit(authority_url).hostname
        self._http = httpx.Client(verify=ssl.create_default_context(cafile=ca_file), timeout=30)

    def _fix(self, url: str) -> str:
        parts = urlsplit(url)
        return (
            urlunsplit(parts._replace(netloc=self._netloc)) if parts.netloc == self._host else url
        )

    def get(self, url: str, params: Any = None, headers: Any = None, **kwargs: Any) -> _Response:
        headers = {k: v for k, v in (headers or {}).items() if v is not None}
        return _Response(self._http.get(self._fix(url), params=params, headers=headers))

    def post(
        self, url: str, params: Any = None, data: Any = None, headers: Any = None, **kwargs: Any
    ) -> _Response:
        headers = {k: v for k, v in (headers or {}).items() if v is not None}
        # The client assertion comes as bytes, which httpx would send as their repr.
        data = {k: v.decode() if isinstance(v, bytes) else v for k, v in (data or {}).items()}
        return _Response(self._http.post(self._fix(url), params=params, data=data, headers=headers))


def _claims(token: str) -> dict[str, Any]:
    return json.loads(b64url_decode(token.split(".")[1]))


def _public_app(sandbox: RunningSandbox) -> msal.PublicClientApplication:
    authority = f"{sandbox.url}/{sandbox.tenant_id}"
    return msal.PublicClientApplication(
        sandbox.settings["PWASYNC_PWA_CLIENT_ID"],
        authority=authority,
        instance_discovery=False,
        http_client=PortRestoringHttpClient(authority, sandbox.ca_file),
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_msal_password_grant_caches_the_account_and_refreshes(
    sandbox: RunningSandbox, control: SandboxClient
) -> None:
    app = _public_app(sandbox)
    scopes = [f"{sandbox.url}/.default"]
    result = app.acquire_token_by_username_password(
        sandbox.settings["PWASYNC_PWA_USERNAME"], sandbox.settings["PWASYNC_PWA_PASSWORD"], scopes
    )
    assert "access_token" in result, result
    claims = _claims(result["access_token"])
    assert claims["aud"] == sandbox.url
    assert claims["upn"] == sandbox.settings["PWASYNC_PWA_USERNAME"]
    assert "ProjectWebAppReporting.Read" in claims["scp"].split()
    [account] = app.get_accounts()
    assert account["username"] == sandbox.settings["PWASYNC_PWA_USERNAME"]

    # Tokens under five minutes from expiry make MSAL redeem its refresh token.
    control.config(token_lifetime_s=60)
    app.acquire_token_by_username_password(
        sandbox.settings["PWASYNC_PWA_USERNAME"], sandbox.settings["PWASYNC_PWA_PASSWORD"], scopes
    )
    silent = app.acquire_token_silent(scopes, account=app.get_accounts()[0])
    assert silent and "access_token" in silent
    assert control.stats()["tokens"]["by_grant"]["refresh_token"] == {"ok": 1}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(
    ("upn", "password", "code"),
    [
        ("svc-pwasync", "wrong", 50126),
        ("patti.fernandez", "Sandbox-Mfa-2026!", 50076),
        ("diego.siciliani", "Sandbox-Locked-2026!", 50053),
        ("nobody", "x", 50034),
    ],
)
def test_msal_password_grant_errors(
    sandbox: RunningSandbox, control: SandboxClient, upn: str, password: str, code: int
) -> None:
    result = _public_app(sandbox).acquire_token_by_username_password(
        f"{upn}@contoso.onmicrosoft.com", password, [f"{sandbox.url}/.default"]
    )
    assert result["error"] == "invalid_grant"
    assert result["error_codes"] == [code]
    assert result["error_description"].startswith(f"AADSTS{code}: ")
    assert {"timestamp", "trace_id", "correlation_id"} <= set(result)


def test_msal_client_credentials_grant(sandbox: RunningSandbox, control: SandboxClient) -> None:
    authority = f"{sandbox.url}/contoso.onmicrosoft.com"
    app = msal.ConfidentialClientApplication(
        sandbox.settings["PWASYNC_GRAPH_CLIENT_ID"],
        client_credential=sandbox.settings["PWASYNC_GRAPH_CLIENT_SECRET"],
        authority=authority,
        instance_discovery=False,
        http_client=PortRestoringHttpClient(authority, sandbox.ca_file),
    )
    result = app.acquire_token_for_client([GRAPH_SCOPE])
    claims = _claims(result["access_token"])
    assert claims["aud"] == "https://graph.microsoft.com"
    assert claims["roles"] == ["Calendars.ReadWrite", "Tasks.Read.All", "User.Read.All"]
    assert "scp" not in claims
    assert app.acquire_token_for_client([GRAPH_SCOPE])["token_source"] == "cache"


@pytest.mark.parametrize(
    ("form", "status", "error", "code"),
    [
        ({"client_secret": "wrong"}, 401, "invalid_client", 7000215),
        ({"client_secret": None}, 401, "invalid_client", 7000218),
        ({"client_id": "00000000-0000-0000-0000-000000000001"}, 400, "unauthorized_client", 700016),
        (
            {"scope": "https://graph.microsoft.com/Calendars.ReadWrite"},
            400,
            "invalid_scope",
            1002012,
        ),
        ({"scope": "https://unknown.example/.default"}, 400, "invalid_resource", 500011),
        ({"grant_type": "device_code"}, 400, "unsupported_grant_type", 70003),
    ],
)
def test_token_endpoint_errors(
    sandbox: RunningSandbox,
    http: httpx.Client,
    control: SandboxClient,
    form: dict,
    status: int,
    error: str,
    code: int,
) -> None:
    data = {
        "grant_type": "client_credentials",
        "scope": GRAPH_SCOPE,
        "client_id": sandbox.settings["PWASYNC_GRAPH_CLIENT_ID"],
        "client_secret": sandbox.settings["PWASYNC_GRAPH_CLIENT_SECRET"],
        **form,
    }
    response = http.post(sandbox.token_url, data={k: v for k, v in data.items() if v})
    assert response.status_code == status
    body = response.json()
    assert (body["error"], body["error_codes"]) == (error, [code])


def test_discovery_documents(sandbox: RunningSandbox, http: httpx.Client) -> None:
    config = http.get(f"{sandbox.url}/organizations/v2.0/.well-known/openid-configuration").json()
    assert config["token_endpoint"] == f"{sandbox.url}/organizations/oauth2/v2.0/token"
    assert config["issuer"] == f"{sandbox.url}/{{tenantid}}/v2.0"
    by_domain = http.get(
        f"{sandbox.url}/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration"
    ).json()
    assert by_domain["token_endpoint"] == sandbox.token_url
    assert (
        http.get(f"{sandbox.url}/fabrikam.com/v2.0/.well-known/openid-configuration").status_code
        == 400
    )
    realm = http.get(
        f"{sandbox.url}/common/userrealm/adele.vance@contoso.onmicrosoft.com",
        params={"api-version": "1.0"},
    ).json()
    assert realm["account_type"] == "Managed"


# ---------------------------------------------------------------------------------------------
# Certificate credentials (client_assertion)


@pytest.fixture(scope="module")
def certificate() -> AppCertificate:
    return app_certificate("pwasync calendar writer")


@pytest.mark.parametrize(
    "credential",
    [
        # What pwasync gives MSAL: the key and the SHA-1 thumbprint -> RS256 with x5t.
        lambda cert: {"private_key": cert.key_pem, "thumbprint": cert.thumbprint},
        # The key and the certificate -> PS256 with x5t#S256 (and x5c).
        lambda cert: {"private_key": cert.key_pem, "public_certificate": cert.certificate_pem},
    ],
    ids=["RS256-x5t", "PS256-x5t#S256"],
)
def test_msal_client_credentials_grant_with_a_certificate(
    sandbox: RunningSandbox, control: SandboxClient, certificate: AppCertificate, credential
) -> None:
    client_id = sandbox.settings["PWASYNC_GRAPH_CLIENT_ID"]
    registered = control.add_app_certificate(client_id, certificate.certificate_pem)
    assert registered["thumbprint"] == certificate.thumbprint
    assert [c["thumbprint"] for c in control.app_certificates(client_id)] == [
        certificate.thumbprint
    ]
    authority = f"{sandbox.url}/{sandbox.tenant_id}"
    app = msal.ConfidentialClientApplication(
        client_id,
        client_credential=credential(certificate),
        authority=authority,
        instance_discovery=False,
        http_client=PortRestoringHttpClient(authority, sandbox.ca_file),
    )
    result = app.acquire_token_for_client([GRAPH_SCOPE])
    assert "access_token" in result, result.get("error_description")
    claims = _claims(result["access_token"])
    assert claims["appid"] == client_id and claims["roles"][0] == "Calendars.ReadWrite"
    control.remove_app_certificate(client_id, certificate.thumbprint)
    refused = app.acquire_token_for_client([f"{sandbox.url}/.default"])  # not cached: new call
    assert refused["error"] == "invalid_client" and refused["error_codes"] == [700027]


def _assertion(
    sandbox: RunningSandbox,
    signer: AppCertificate,
    named: AppCertificate | None = None,
    header: dict[str, Any] | None = None,
    algorithm: str = "RS256",
    **claims: Any,
) -> str:
    """A client assertion as MSAL makes one, signed by ``signer``'s key, its x5t naming
    ``named`` (default: the signer's certificate), with ``claims`` changed (None: left out)."""
    now = int(time.time())
    client_id = sandbox.settings["PWASYNC_GRAPH_CLIENT_ID"]
    payload = {"aud": sandbox.token_url, "iss": client_id, "sub": client_id,
               "exp": now + 600, "iat": now, "jti": str(uuid.uuid4()), **claims}  # fmt: skip
    x5t = base64.urlsafe_b64encode(bytes.fromhex((named or signer).thumbprint))
    headers = {"x5t": x5t.rstrip(b"=").decode(), **(header or {})}
    key: Any = signer.key if not algorithm.startswith("HS") else "shared-secret-of-32-bytes-length!"
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm, headers)


@pytest.mark.parametrize(
    ("change", "status", "error", "code", "says"),
    [
        (lambda s, c, o: _assertion(s, c), 200, None, None, ""),
        (lambda s, c, o: _assertion(s, c, nbf=int(time.time()) - 5), 200, None, None, ""),
        (lambda s, c, o: _assertion(s, o), 401, "invalid_client", 700027, "key was not found"),
        (lambda s, c, o: _assertion(s, o, named=c), 401, "invalid_client", 700027,
         "signature value did not match"),
        (lambda s, c, o: _assertion(s, c, exp=int(time.time()) - 900), 401, "invalid_client",
         700024, "not within its valid time range"),
        (lambda s, c, o: _assertion(s, c, nbf=int(time.time()) + 900), 401, "invalid_client",
         700024, "not within its valid time range"),
        (lambda s, c, o: _assertion(s, c, exp=None), 401, "invalid_client", 50027, "'exp'"),
        (lambda s, c, o: _assertion(s, c, jti=None), 401, "invalid_client", 50027, "'jti'"),
        (lambda s, c, o: _assertion(s, c, aud="https://login.example/t/oauth2/v2.0/token"), 401,
         "invalid_client", 50027, "audience"),
        (lambda s, c, o: _assertion(s, c, iss="someone-else"), 401, "invalid_client", 700021,
         "doesn't match 'client_id'"),
        (lambda s, c, o: _assertion(s, c, sub="someone-else"), 401, "invalid_client", 700021,
         "doesn't match 'client_id'"),
        (lambda s, c, o: _assertion(s, c, header={"x5t": None}), 401, "invalid_client", 50027,
         "No certificate thumbprint"),
        (lambda s, c, o: _assertion(s, c, algorithm="HS256"), 401, "invalid_client", 50027,
         "'HS256' is not supported"),
        (lambda s, c, o: "not.a.jwt", 401, "invalid_client", 50027, "malformed"),
    ],
    ids=["accepted", "accepted-with-nbf", "unregistered-certificate", "wrong-key", "expired",
         "not-yet-valid", "no-exp", "no-jti", "wrong-audience", "wrong-issuer", "wrong-subject",
         "no-thumbprint", "symmetric-algorithm", "malformed"],
)  # fmt: skip
def test_client_assertion_rules(
    sandbox: RunningSandbox,
    http: httpx.Client,
    control: SandboxClient,
    certificate: AppCertificate,
    change,
    status: int,
    error: str | None,
    code: int | None,
    says: str,
) -> None:
    control.add_app_certificate(
        sandbox.settings["PWASYNC_GRAPH_CLIENT_ID"], certificate.certificate_pem
    )
    other = app_certificate("not registered")
    response = http.post(
        sandbox.token_url,
        data={
            "grant_type": "client_credentials",
            "scope": GRAPH_SCOPE,
            "client_id": sandbox.settings["PWASYNC_GRAPH_CLIENT_ID"],
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": change(sandbox, certificate, other),
        },
    )
    body = response.json()
    assert response.status_code == status, body
    if error is None:
        assert body["token_type"] == "Bearer" and body["access_token"]
        return
    assert (body["error"], body["error_codes"]) == (error, [code])
    assert (
        body["error_description"].startswith(f"AADSTS{code}: ")
        and says in body["error_description"]
    )


def test_an_expired_certificate_or_a_wrong_assertion_type_is_refused(
    sandbox: RunningSandbox, http: httpx.Client, control: SandboxClient
) -> None:
    expired = app_certificate(valid_from=datetime.now(UTC) - timedelta(days=400), days=365)
    client_id = sandbox.settings["PWASYNC_GRAPH_CLIENT_ID"]
    control.add_app_certificate(client_id, expired.certificate_pem)
    form = {"grant_type": "client_credentials", "scope": GRAPH_SCOPE, "client_id": client_id,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": _assertion(sandbox, expired)}  # fmt: skip
    body = http.post(sandbox.token_url, data=form).json()
    assert (
        body["error_codes"] == [700027] and "The key used is expired" in body["error_description"]
    )
    body = http.post(sandbox.token_url, data={**form, "client_assertion_type": "jwt"}).json()
    assert (body["error"], body["error_codes"]) == ("invalid_request", [50027])
    # A secret beside an assertion is refused, not silently preferred.
    secret = sandbox.settings["PWASYNC_GRAPH_CLIENT_SECRET"]
    body = http.post(sandbox.token_url, data={**form, "client_secret": secret}).json()
    assert body["error"] == "invalid_request" and "not both" in body["error_description"]
