"""Windows authentication on the PWA endpoints: Negotiate and NTLM logons, Extended Protection,
the zone's scheme list, refused accounts, and what the se edition does with bearer tokens."""

from __future__ import annotations

import base64
import gc
import os
import ssl
from pathlib import Path

import httpx
import pytest
import spnego
from starlette.requests import Request
from starlette.responses import Response

from sandbox.client import SandboxClient
from sandbox.config import SandboxConfig
from sandbox.context import Sandbox
from sandbox.editions import Edition
from sandbox.ntlm import NtlmAcceptor
from sandbox.windows_auth import WindowsLogon, windows_logon
from tests.sandbox.conftest import RunningSandbox, TokenFactory
from tests.sandbox.windows_client import WindowsAuth, challenge

LIGHT = {"Accept": "application/json"}
PROJECTS = "_api/ProjectServer/Projects?$select=Id"
DIEGO = "diego.siciliani@contoso.onmicrosoft.com"


def _url(sandbox: RunningSandbox, path: str = PROJECTS) -> str:
    return f"{sandbox.settings['PWASYNC_PWA_URL']}/{path}"


def _password(sandbox: RunningSandbox) -> str:
    return sandbox.settings["PWASYNC_PWA_PASSWORD"]


def _fresh_client(sandbox: RunningSandbox) -> httpx.Client:
    return httpx.Client(verify=ssl.create_default_context(cafile=sandbox.ca_file), timeout=30)


def _get(
    sandbox: RunningSandbox, http: httpx.Client, auth: WindowsAuth, path: str = PROJECTS
) -> httpx.Response:
    return http.get(_url(sandbox, path), headers=LIGHT, auth=auth)


# --- what the zone offers -----------------------------------------------------------------


def test_se_offers_negotiate_and_ntlm_as_two_headers_and_no_bearer(
    sandbox_se: RunningSandbox, control_se: SandboxClient, http_se: httpx.Client
) -> None:
    response = http_se.get(_url(sandbox_se), headers=LIGHT)
    assert response.status_code == 401
    assert response.headers.get_list("www-authenticate") == ["Negotiate", "NTLM"]
    assert "x-sharepointhealthscore" not in response.headers  # IIS answered, not SharePoint


def test_se_refuses_bearer_tokens(
    sandbox_se: RunningSandbox, control_se: SandboxClient, http_se: httpx.Client
) -> None:
    response = http_se.get(
        _url(sandbox_se), headers={**LIGHT, "Authorization": "Bearer eyJhbGciOi.x.y"}
    )
    assert response.status_code == 401
    assert response.headers.get_list("www-authenticate") == ["Negotiate", "NTLM"]


def test_online_offers_bearer_then_the_windows_schemes(
    sandbox: RunningSandbox, control: SandboxClient, http: httpx.Client
) -> None:
    offers = http.get(_url(sandbox), headers=LIGHT).headers.get_list("www-authenticate")
    assert offers[0].startswith('Bearer realm="') and offers[1:] == ["Negotiate", "NTLM"]


# --- logons -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "protocol"),
    [("Negotiate", "negotiate"), ("NTLM", "ntlm"), ("Negotiate", "ntlm")],
    ids=["spnego", "ntlm", "raw-ntlm-under-negotiate"],
)
def test_a_logon_with_channel_bindings_authenticates_the_connection(
    sandbox_se: RunningSandbox,
    control_se: SandboxClient,
    http_se: httpx.Client,
    scheme: str,
    protocol: str,
) -> None:
    auth = WindowsAuth(_password(sandbox_se), scheme=scheme, protocol=protocol)
    response = _get(sandbox_se, http_se, auth)
    assert response.status_code == 200, response.text
    assert auth.legs == [401, 401, 200]
    assert response.headers["x-sharepointhealthscore"] == "0"
    # SPNEGO's last leg (the accept-complete token) rides on the answer.
    assert (auth.final is not None) is (protocol == "negotiate")
    # IIS authenticates the connection: the next request needs no header.
    again = http_se.get(_url(sandbox_se), headers=LIGHT)
    assert again.status_code == 200
    assert control_se.stats()["pwa"]["by_status"] == {"200": 2, "401": 2}


def test_a_upn_logon_works_too(
    sandbox_se: RunningSandbox, control_se: SandboxClient, http_se: httpx.Client
) -> None:
    auth = WindowsAuth(_password(sandbox_se), username="svc-pwasync@contoso.onmicrosoft.com")
    assert _get(sandbox_se, http_se, auth).status_code == 200


@pytest.mark.parametrize("scheme", ["Negotiate", "NTLM"])
@pytest.mark.parametrize("bindings", ["none", "wrong"])
def test_extended_protection_refuses_missing_or_other_bindings(
    sandbox_se: RunningSandbox,
    control_se: SandboxClient,
    http_se: httpx.Client,
    scheme: str,
    bindings: str,
) -> None:
    auth = WindowsAuth(_password(sandbox_se), scheme=scheme, bindings=bindings)  # type: ignore[arg-type]
    response = _get(sandbox_se, http_se, auth)
    assert response.status_code == 401 and auth.legs == [401, 401, 401]
    assert response.headers.get_list("www-authenticate") == ["Negotiate", "NTLM"]


def test_without_extended_protection_unbound_logons_pass(
    sandbox_se: RunningSandbox, control_se: SandboxClient, http_se: httpx.Client
) -> None:
    assert control_se.config()["pwa_extended_protection"] is True  # the se default
    control_se.config(pwa_extended_protection=False)
    auth = WindowsAuth(_password(sandbox_se), bindings="none")
    assert _get(sandbox_se, http_se, auth).status_code == 200


def test_extended_protection_can_be_required_online_too(
    sandbox: RunningSandbox, control: SandboxClient, http: httpx.Client
) -> None:
    password = sandbox.settings["PWASYNC_PWA_PASSWORD"]
    assert control.config()["pwa_extended_protection"] is False  # the online default
    control.config(pwa_extended_protection=True)
    unbound = WindowsAuth(password, scheme="NTLM", bindings="none")
    assert _get(sandbox, http, unbound).status_code == 401
    with _fresh_client(sandbox) as fresh:  # the refused connection is closed by now
        bound = WindowsAuth(password, scheme="NTLM")
        assert _get(sandbox, fresh, bound).status_code == 200


# --- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Negotiate", "NTLM"])
def test_a_wrong_password_is_refused(sandbox_se: RunningSandbox, scheme: str) -> None:
    # On a new connection: one that an earlier test signed in stays signed in (as on IIS).
    with _fresh_client(sandbox_se) as fresh:
        response = _get(sandbox_se, fresh, WindowsAuth("not-the-password", scheme=scheme))
    assert response.status_code == 401


def test_locked_and_expired_accounts_are_refused(
    sandbox_se: RunningSandbox, control_se: SandboxClient, http_se: httpx.Client
) -> None:
    locked = WindowsAuth("Sandbox-Locked-2026!", username="CONTOSO\\diego.siciliani")
    assert _get(sandbox_se, http_se, locked).status_code == 401
    control_se.update_user(DIEGO, locked=False)
    assert _get(sandbox_se, http_se, locked).status_code == 403  # logged on; no PWA permission
    changed = control_se.update_user(DIEGO, password_expired=True)
    assert changed["password_expired"] is True
    with _fresh_client(sandbox_se) as fresh:  # a new connection must log on again
        response = _get(sandbox_se, fresh, locked)
    assert response.status_code == 401 and "x-sharepointhealthscore" not in response.headers
    user = next(u for u in control_se.tenant()["users"] if u["upn"] == DIEGO)
    assert user["password_expired"] is True


def test_an_account_expired_after_the_logon_is_refused_on_its_connection(
    sandbox_se: RunningSandbox, control_se: SandboxClient, http_se: httpx.Client
) -> None:
    assert _get(sandbox_se, http_se, WindowsAuth(_password(sandbox_se))).status_code == 200
    control_se.update_user("svc-pwasync@contoso.onmicrosoft.com", password_expired=True)
    assert http_se.get(_url(sandbox_se), headers=LIGHT).status_code == 401


def test_an_expired_password_fails_the_password_grant_online(
    sandbox: RunningSandbox, control: SandboxClient, http: httpx.Client
) -> None:
    control.update_user("svc-pwasync@contoso.onmicrosoft.com", password_expired=True)
    response = http.post(
        sandbox.token_url,
        data={
            "grant_type": "password",
            "client_id": sandbox.settings["PWASYNC_PWA_CLIENT_ID"],
            "username": sandbox.settings["PWASYNC_PWA_USERNAME"],
            "password": sandbox.settings["PWASYNC_PWA_PASSWORD"],
            "scope": f"{sandbox.url}/.default",
        },
    )
    assert response.status_code == 400
    assert response.json()["error_codes"] == [50055]


@pytest.mark.parametrize(
    "header",
    [
        "Negotiate",
        "NTLM",
        "Negotiate !!!",
        "NTLM AAAA",
        "NTLM TlRMTVNTUAADAAAA",  # an AUTHENTICATE without a handshake
        "Negotiate oQcwBaADCgEB",  # a NegTokenResp out of the blue
        "Negotiate YIIBAAAA",
    ],
)
def test_malformed_tokens_are_refused_not_crashed_on(
    sandbox_se: RunningSandbox, control_se: SandboxClient, http_se: httpx.Client, header: str
) -> None:
    response = http_se.get(_url(sandbox_se), headers={**LIGHT, "Authorization": header})
    assert response.status_code == 401
    assert response.headers.get_list("www-authenticate") == ["Negotiate", "NTLM"]


# --- the zone's scheme list ---------------------------------------------------------------


def test_a_negotiate_only_zone_refuses_ntlm_by_name_but_not_inside_negotiate(
    sandbox_se: RunningSandbox, control_se: SandboxClient, http_se: httpx.Client
) -> None:
    control_se.config(pwa_auth_schemes=["Negotiate"])
    offers = http_se.get(_url(sandbox_se), headers=LIGHT).headers.get_list("www-authenticate")
    assert offers == ["Negotiate"]
    context = spnego.client(
        "CONTOSO\\svc-pwasync", _password(sandbox_se), protocol="ntlm", service="HTTP"
    )
    token = base64.b64encode(context.step()).decode()
    by_name = http_se.get(_url(sandbox_se), headers={**LIGHT, "Authorization": f"NTLM {token}"})
    assert by_name.status_code == 401 and challenge(by_name, "NTLM") is None
    raw = WindowsAuth(_password(sandbox_se), scheme="Negotiate", protocol="ntlm")
    assert _get(sandbox_se, http_se, raw).status_code == 200


@pytest.mark.parametrize(
    ("schemes", "offers"), [(["Basic"], ['Basic realm="127.0.0.1"']), ([], [])]
)
def test_a_zone_without_a_scheme_pwasync_speaks_refuses_every_logon(
    sandbox_se: RunningSandbox,
    control_se: SandboxClient,
    http_se: httpx.Client,
    schemes: list[str],
    offers: list[str],
) -> None:
    control_se.config(pwa_auth_schemes=schemes)
    response = http_se.get(_url(sandbox_se), headers=LIGHT)
    assert response.status_code == 401
    assert response.headers.get_list("www-authenticate") == offers
    basic = base64.b64encode(f"CONTOSO\\svc-pwasync:{_password(sandbox_se)}".encode()).decode()
    assert (
        http_se.get(
            _url(sandbox_se), headers={**LIGHT, "Authorization": f"Basic {basic}"}
        ).status_code
        == 401
    )
    for scheme in ("Negotiate", "NTLM"):
        auth = WindowsAuth(_password(sandbox_se), scheme=scheme)
        assert _get(sandbox_se, http_se, auth).status_code == 401


def test_unknown_schemes_are_not_a_setting(control_se: SandboxClient) -> None:
    from sandbox.client import SandboxError

    with pytest.raises(SandboxError, match="unknown scheme 'Kerberos'"):
        control_se.config(pwa_auth_schemes=["Kerberos"])
    assert control_se.config(pwa_auth_schemes=["ntlm"])["pwa_auth_schemes"] == ["NTLM"]


def test_online_still_takes_bearer_tokens(
    sandbox: RunningSandbox, control: SandboxClient, http: httpx.Client, pwa_token: TokenFactory
) -> None:
    response = http.get(_url(sandbox), headers={**LIGHT, "Authorization": f"Bearer {pwa_token()}"})
    assert response.status_code == 200, response.text
    assert "x-sharepointhealthscore" not in response.headers


# --- what a logon belongs to ---------------------------------------------------------------


class _Connection:
    """Stands for a TCP connection's transport, as uvicorn's request cycle holds it."""


class _Cycle:
    def __init__(self, transport: _Connection) -> None:
        self.transport = transport

    async def receive(self) -> dict[str, object]:  # pragma: no cover - never read
        return {"type": "http.request", "body": b""}


def _request(transport: _Connection, authorization: str | None = None) -> Request:
    headers = [(b"authorization", authorization.encode())] if authorization else []
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": headers,
        "client": ("127.0.0.1", 50000),  # the same address and port for every connection
    }
    return Request(scope, receive=_Cycle(transport).receive)


def test_a_logon_belongs_to_its_connection_not_to_the_clients_port() -> None:
    """A closed connection's port is reused by a later one, which must start unauthenticated."""
    sandbox = Sandbox("https://127.0.0.1:1", None, SandboxConfig(), Edition.SE)
    service = sandbox.tenant.user(sandbox.tenant.service["pwa_user"])
    assert service is not None
    client = spnego.client(
        f"CONTOSO\\{service.upn.split('@')[0]}", service.password, protocol="ntlm"
    )
    first = _Connection()
    leg = windows_logon(sandbox, _request(first, f"NTLM {_b64(client.step())}"))
    assert isinstance(leg, Response) and leg.status_code == 401
    token = leg.headers["www-authenticate"].partition(" ")[2]
    answer = client.step(base64.b64decode(token))
    assert isinstance(windows_logon(sandbox, _request(first, f"NTLM {_b64(answer)}")), WindowsLogon)
    assert isinstance(windows_logon(sandbox, _request(first)), WindowsLogon)

    assert windows_logon(sandbox, _request(_Connection())) is None  # same port, new connection
    del first
    gc.collect()
    assert not sandbox.ntlm.has_logons()  # the closed connection's logon is gone with it


def _b64(raw: bytes | None) -> str:
    return base64.b64encode(raw or b"").decode("ascii")


def test_an_acceptors_user_file_is_removed_with_it():
    """Every sandbox has an acceptor; their files of passwords must not pile up in /tmp."""
    acceptor = NtlmAcceptor()
    folder = Path(os.environ["NTLM_USER_FILE"]).parent
    assert folder.is_dir()
    del acceptor
    gc.collect()
    assert not folder.exists()
