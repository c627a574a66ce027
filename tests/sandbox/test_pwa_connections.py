"""Every PWASYNC_PWA_AUTH mode against the sandbox, with the product's own code: success, and
the one line each failure turns into."""

from __future__ import annotations

import threading
import time

import pytest

from common.errors import AuthenticationError
from common.http import new_http_client
from common.redis_store import Keys
from common.settings import load_settings
from common.token_cache import TokenCacheStore
from services.poller.commands import check
from services.poller.connection import connect, open_pwa, token_store
from services.poller.projectdata import ProjectDataClient

pytestmark = pytest.mark.integration

SECRET = "test-secret-key-for-the-token-cache"
ADELE = "adele.vance@contoso.onmicrosoft.com"


def settings_for(sandbox, scenario="default", **overrides):
    env = {**sandbox.settings, "PWASYNC_SCENARIO": scenario}
    env.update({f"PWASYNC_{k.upper()}": v for k, v in overrides.items()})
    return load_settings(env)


def read_projects(settings, redis_client=None):
    with new_http_client(ca_bundle=settings.ca_bundle) as http:
        return list(
            ProjectDataClient(open_pwa(settings, http, redis_client), "Createevent").projects()
        )


# --- sharepoint_online: the password grant ---------------------------------------------------


def test_password_grant_reads_projectdata(sandbox, control):
    assert len(read_projects(settings_for(sandbox))) == 3


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(
    ("user", "password", "line"),
    [
        (
            "svc-pwasync@contoso.onmicrosoft.com",
            "Not-The-Password-9",
            "(AADSTS50126): wrong user name or password",
        ),
        (
            "patti.fernandez@contoso.onmicrosoft.com",
            "Sandbox-Mfa-2026!",
            "(AADSTS50076): the account requires multi-factor authentication, which the password "
            "grant cannot do; use PWASYNC_PWA_AUTH=oauth or exempt this service account from MFA",
        ),
        (
            "diego.siciliani@contoso.onmicrosoft.com",
            "Sandbox-Locked-2026!",
            "(AADSTS50053): the account is locked (too many failed sign-ins) or sign-in is blocked",
        ),
    ],
)
def test_password_grant_failures_are_one_clear_line(sandbox, control, user, password, line):
    settings = settings_for(sandbox, pwa_username=user, pwa_password=password)
    with pytest.raises(AuthenticationError) as raised:
        read_projects(settings)
    message = str(raised.value)
    assert message == f"Project Online ({user}) sign-in failed {line}"
    assert "\n" not in message and password not in message


# --- sharepoint_onprem: NTLM ------------------------------------------------------------------


def test_ntlm_reads_every_page_at_the_on_premises_page_size(sandbox, control):
    control.config(pwa_page_sizes={"Projects": 100, "Tasks": 100, "Assignments": 100})
    generated = control.generate(projects=1, tasks_per_project=250)
    settings = settings_for(
        sandbox, pwa_auth="sharepoint_onprem", pwa_username="CONTOSO\\svc-pwasync"
    )
    with new_http_client(ca_bundle=settings.ca_bundle) as http:
        feed = ProjectDataClient(open_pwa(settings, http), "TaskName")
        [project_id] = generated["project_ids"]
        tasks = list(feed.tasks(project_id))
    assert len(tasks) == 251  # 250 and the project summary task: three pages of 100
    statuses = control.stats()["pwa"]["by_status"]
    # One handshake (a 401 offering NTLM, the challenge, the answer); then the connection is
    # authenticated and every further page costs one request.
    assert statuses == {"200": 3, "401": 2}


def test_ntlm_accepts_a_upn_logon(sandbox, control):
    settings = settings_for(
        sandbox,
        pwa_auth="sharepoint_onprem",
        pwa_username="svc-pwasync@contoso.onmicrosoft.com",
    )
    assert len(read_projects(settings)) == 3


@pytest.mark.parametrize(
    ("user", "password"),
    [("CONTOSO\\svc-pwasync", "wrong"), ("CONTOSO\\diego.siciliani", "Sandbox-Locked-2026!")],
)
def test_ntlm_refusals_are_one_clear_line(sandbox, control, user, password):
    settings = settings_for(
        sandbox, pwa_auth="sharepoint_onprem", pwa_username=user, pwa_password=password
    )
    with pytest.raises(AuthenticationError) as raised:
        read_projects(settings)
    assert str(raised.value) == (
        f"Project Server refused the Windows sign-in (Negotiate) of {user}: wrong user name or "
        "password, an expired password, or a locked or disabled account"
    )


# --- oauth: device code, encrypted cache in Redis ---------------------------------------------


def approve_when_pending(control, upn, decline=False):
    def approve():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pending = control.device_codes()
            if pending:
                control.approve_device_code(pending[0]["user_code"], upn, decline=decline)
                return
            time.sleep(0.1)

    thread = threading.Thread(target=approve, daemon=True)
    thread.start()
    return thread


def sign_in(sandbox, control, redis_client, scenario, upn=ADELE):
    settings = settings_for(sandbox, scenario, pwa_auth="oauth", secret_key=SECRET)
    shown = []
    approver = approve_when_pending(control, upn)
    with new_http_client(ca_bundle=settings.ca_bundle) as http:
        user = connect(settings, http, token_store(settings, redis_client), show=shown.append)
    approver.join()
    return settings, user, shown


def test_oauth_device_code_sign_in_is_stored_encrypted_and_survives_restarts(
    sandbox, control, redis_client, scenario
):
    control.update_user(ADELE, pwa_permissions=["reporting"])
    settings, user, shown = sign_in(sandbox, control, redis_client, scenario)
    assert user == ADELE
    assert "enter the code" in shown[0] and f"{sandbox.url}/devicelogin" in shown[0]
    stored = redis_client.get(f"pwasync:{{{scenario}}}:pwa:token-cache")
    assert stored and "refresh_token" not in stored.lower() and "secret" not in stored
    # A "restarted" service: new objects, the same Redis.
    assert len(read_projects(settings, redis_client)) == 3
    assert len(read_projects(settings, redis_client)) == 3
    # The stored access token was reused: nobody had to sign in again.
    grants = control.stats()["tokens"]["by_grant"]
    assert grants == {
        "urn:ietf:params:oauth:grant-type:device_code": {
            "authorization_pending": grants["urn:ietf:params:oauth:grant-type:device_code"].get(
                "authorization_pending", 0
            ),
            "ok": 1,
        }
    }


def test_oauth_refresh_writes_the_cache_back(sandbox, control, redis_client, scenario):
    control.update_user(ADELE, pwa_permissions=["reporting"])
    control.config(token_lifetime_s=60)  # MSAL refreshes tokens this close to expiry every time
    settings, _, _ = sign_in(sandbox, control, redis_client, scenario)
    key = f"pwasync:{{{scenario}}}:pwa:token-cache"
    before = redis_client.get(key)
    read_projects(settings, redis_client)
    assert redis_client.get(key) != before


def test_oauth_without_a_sign_in_or_after_revocation_says_run_connect(
    sandbox, control, redis_client, scenario
):
    settings = settings_for(sandbox, scenario, pwa_auth="oauth", secret_key=SECRET)
    with pytest.raises(AuthenticationError, match=r"nobody is signed in; run `pwasync connect`"):
        read_projects(settings, redis_client)

    control.update_user(ADELE, pwa_permissions=["reporting"])
    control.config(token_lifetime_s=60)
    settings, _, _ = sign_in(sandbox, control, redis_client, scenario)
    assert control.revoke_sign_ins(ADELE) >= 1
    with pytest.raises(AuthenticationError) as raised:
        read_projects(settings, redis_client)
    assert str(raised.value) == (
        f"Project Online ({ADELE}) sign-in failed (AADSTS50173): the stored sign-in was revoked "
        "(password change or an administrator's revocation); run `pwasync connect` to sign in "
        "again"
    )


def test_oauth_with_another_secret_key_says_what_to_do(sandbox, control, redis_client, scenario):
    control.update_user(ADELE, pwa_permissions=["reporting"])
    sign_in(sandbox, control, redis_client, scenario)
    other = settings_for(sandbox, scenario, pwa_auth="oauth", secret_key="not the same key")
    with pytest.raises(Exception, match="PWASYNC_SECRET_KEY does not decrypt"):
        read_projects(other, redis_client)
    store = TokenCacheStore(redis_client, Keys(scenario), "redis://", SECRET)
    assert store.load() is not None


def test_a_declined_device_code_is_one_line(sandbox, control, redis_client, scenario):
    settings = settings_for(sandbox, scenario, pwa_auth="oauth", secret_key=SECRET)
    approver = approve_when_pending(control, ADELE, decline=True)
    with (
        new_http_client(ca_bundle=settings.ca_bundle) as http,
        pytest.raises(AuthenticationError) as raised,
    ):
        connect(settings, http, token_store(settings, redis_client), show=lambda _: None)
    approver.join()
    assert str(raised.value) == (
        "Project Online device sign-in failed: the sign-in was declined in the browser"
    )
    assert redis_client.get(f"pwasync:{{{scenario}}}:pwa:token-cache") is None


# --- pwasync check ------------------------------------------------------------------------------


def test_check_passes_when_everything_is_in_place(sandbox, control):
    control.generate(projects=1, tasks_per_project=1, flagged=True, ensure_field=True)
    lines = check(settings_for(sandbox), ADELE)
    assert [line.name for line in lines] == [
        "PWA reachable",
        "PWA API",
        "read ProjectData ('Access Project Server Reporting Service')",
        "PWA time zone",
        "permission 'Manage Enterprise Custom Fields'",
        "flag field 'Create event' (Task, Flag)",
        "publish receiver",
        "Graph token (app-only)",
        f"mailbox {ADELE}",
    ]
    assert all(line.ok for line in lines), [line.render() for line in lines]

    # Without a mailbox named, it tests one of an assignee it finds in the plans.
    bare = check(settings_for(sandbox), None)
    found = next(line for line in bare if line.name == "test mailbox")
    mailbox = found.detail.split(",", 1)[0]
    assert found.ok and "found in the plans" in found.detail
    assert bare[-1].name == f"mailbox {mailbox}"
    assert all(line.ok for line in bare), [line.render() for line in bare]


def test_check_names_each_missing_prerequisite(sandbox, control):
    settings = settings_for(
        sandbox,
        pwa_username="pwa-reader@contoso.onmicrosoft.com",
        pwa_password="Sandbox-Reader-2026!",
    )
    lines = {line.name: line for line in check(settings, "irvin.sayers@contoso.onmicrosoft.com")}
    assert lines["read ProjectData ('Access Project Server Reporting Service')"].ok
    manage = lines["permission 'Manage Enterprise Custom Fields'"]
    # Not read (issue 11, item 20): the flag field's own line is the one that fails.
    assert manage.ok and manage.detail.startswith("not checked")
    field = lines["flag field 'Create event' (Task, Flag)"]
    assert not field.ok and field.detail.startswith("does not exist")
    mailbox = lines["mailbox irvin.sayers@contoso.onmicrosoft.com"]
    assert not mailbox.ok and "MailboxNotEnabledForRESTAPI" in mailbox.detail


def test_check_reports_a_reader_without_the_reporting_permission(sandbox, control):
    control.update_user(ADELE, password="Pw-2026!", pwa_permissions=[])
    settings = settings_for(sandbox, pwa_username=ADELE, pwa_password="Pw-2026!")
    lines = {line.name: line for line in check(settings, None)}
    read = lines["read ProjectData ('Access Project Server Reporting Service')"]
    assert not read.ok and "grant the account the PWA permission" in read.detail
    assert not lines["test mailbox"].ok
