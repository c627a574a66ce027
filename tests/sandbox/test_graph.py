"""Graph calendar events: shapes, idempotency, lookups, validation and access rules."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from sandbox.client import SandboxClient
from tests.sandbox.conftest import RunningSandbox

ADELE = "adele.vance@contoso.onmicrosoft.com"
TASK_KEY = "String {66F5A359-4659-4830-9070-00047EC6AC6E} Name TaskKey"


def event_body(**overrides: Any) -> dict[str, Any]:
    return {
        "subject": "Kick-off meeting",
        "body": {"contentType": "text", "content": "From Project Online"},
        "start": {"dateTime": "2026-12-01T09:00:00", "timeZone": "W. Europe Standard Time"},
        "end": {"dateTime": "2026-12-01T11:00:00", "timeZone": "Europe/Berlin"},
        "showAs": "busy",
        "isReminderOn": False,
        **overrides,
    }


class Graph:
    def __init__(self, sandbox: RunningSandbox, http: httpx.Client, token: str) -> None:
        self.base, self.http = sandbox.settings["PWASYNC_GRAPH_URL"], http
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def request(self, method: str, path: str, body: Any = None, **params: str) -> httpx.Response:
        return self.http.request(
            method, f"{self.base}{path}", json=body, params=params or None, headers=self.headers
        )


@pytest.fixture
def graph(sandbox: RunningSandbox, http: httpx.Client, graph_token: str) -> Graph:
    return Graph(sandbox, http, graph_token)


def test_create_returns_the_full_event(graph: Graph, control: SandboxClient) -> None:
    response = graph.request(
        "POST",
        f"/users/{ADELE}/events",
        event_body(
            transactionId="txn-1", singleValueExtendedProperties=[{"id": TASK_KEY, "value": "k1"}]
        ),
    )
    assert response.status_code == 201
    assert response.headers["request-id"] and response.headers["client-request-id"]
    event = response.json()
    assert event["id"].startswith("AAMk") and len(event["id"]) > 100
    assert event["@odata.etag"] == f'W/"{event["changeKey"]}"'
    assert event["start"] == {"dateTime": "2026-12-01T08:00:00.0000000", "timeZone": "UTC"}
    assert event["originalStartTimeZone"] == "W. Europe Standard Time"
    assert event["body"]["contentType"] == "html"
    assert (event["transactionId"], event["isReminderOn"], event["showAs"]) == (
        "txn-1",
        False,
        "busy",
    )
    assert event["organizer"]["emailAddress"]["address"] == ADELE
    [stored] = control.mailbox_events(ADELE)
    assert stored["extended_properties"] == {
        "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name TaskKey": "k1"
    }


def test_transaction_id_deduplicates_retries(graph: Graph, control: SandboxClient) -> None:
    first = graph.request("POST", f"/users/{ADELE}/events", event_body(transactionId="t-42"))
    retry = graph.request("POST", f"/users/{ADELE}/events", event_body(transactionId="t-42"))
    assert first.json()["id"] == retry.json()["id"]
    assert len(control.events()) == 1
    control.config(transaction_id_window_s=0)
    graph.request("POST", f"/users/{ADELE}/events", event_body(transactionId="t-42"))
    assert len(control.events()) == 2


def test_extended_property_lookup_and_expand(graph: Graph) -> None:
    for key in ("task-a", "task-b"):
        graph.request(
            "POST",
            f"/users/{ADELE}/events",
            event_body(subject=key, singleValueExtendedProperties=[{"id": TASK_KEY, "value": key}]),
        )
    canonical = TASK_KEY.replace(
        "66F5A359-4659-4830-9070-00047EC6AC6E", "66f5a359-4659-4830-9070-00047ec6ac6e"
    )
    found = graph.request(
        "GET",
        f"/users/{ADELE}/events",
        **{
            "$filter": f"singleValueExtendedProperties/any(ep: ep/id eq '{canonical}' and "
            "ep/value eq 'task-b')",
            "$expand": f"singleValueExtendedProperties($filter=id eq '{canonical}')",
            "$select": "subject",
        },
    ).json()
    [event] = found["value"]
    assert set(event) == {"@odata.etag", "id", "subject", "singleValueExtendedProperties"}
    assert event["singleValueExtendedProperties"] == [{"id": canonical, "value": "task-b"}]


def test_patch_get_delete(graph: Graph) -> None:
    created = graph.request("POST", f"/users/{ADELE}/calendar/events", event_body()).json()
    path = f"/users/{ADELE}/events/{created['id']}"
    time.sleep(0.01)
    patched = graph.request(
        "PATCH",
        path,
        {"subject": "Moved", "end": {"dateTime": "2026-12-01T12:00:00", "timeZone": "UTC"}},
    )
    assert patched.status_code == 200
    assert patched.json()["changeKey"] != created["changeKey"]
    assert patched.json()["lastModifiedDateTime"] > created["lastModifiedDateTime"]
    assert graph.request("GET", path).json()["subject"] == "Moved"
    assert graph.request("DELETE", path).status_code == 204
    missing = graph.request("GET", path)
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "ErrorItemNotFound")


def test_paging_with_next_link(graph: Graph) -> None:
    for number in range(12):
        graph.request("POST", f"/users/{ADELE}/events", event_body(subject=f"e{number}"))
    first = graph.request("GET", f"/users/{ADELE}/events").json()
    assert len(first["value"]) == 10
    second = graph.http.get(first["@odata.nextLink"], headers=graph.headers).json()
    assert len(second["value"]) == 2 and "@odata.nextLink" not in second


@pytest.mark.parametrize(
    ("user", "code"),
    [
        ("johanna.lorenz@contoso.onmicrosoft.com", "ErrorInvalidUser"),
        ("irvin.sayers@contoso.onmicrosoft.com", "MailboxNotEnabledForRESTAPI"),
        ("svc-pwasync@contoso.onmicrosoft.com", "MailboxNotEnabledForRESTAPI"),
    ],
)
def test_mailboxes_that_cannot_be_reached(graph: Graph, user: str, code: str) -> None:
    response = graph.request("POST", f"/users/{user}/events", event_body())
    assert (response.status_code, response.json()["error"]["code"]) == (404, code)
    assert set(response.json()["error"]["innerError"]) == {
        "date",
        "request-id",
        "client-request-id",
    }


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"end": {"dateTime": "2026-12-01T07:59:00", "timeZone": "UTC"}}, "ErrorInvalidRequest"),
        (
            {"start": {"dateTime": "2026-12-01T09:00:00", "timeZone": "Mars/Olympus"}},
            "TimeZoneNotSupportedException",
        ),
        ({"start": {"dateTime": "tomorrow", "timeZone": "UTC"}}, "ErrorInvalidRequest"),
        ({"taskKey": "x"}, "RequestBodyRead"),
        ({"isReminderOn": "yes"}, "RequestBodyRead"),
        ({"showAs": "sleeping"}, "RequestBodyRead"),
    ],
)
def test_validation(graph: Graph, overrides: dict[str, Any], code: str) -> None:
    response = graph.request("POST", f"/users/{ADELE}/events", event_body(**overrides))
    assert (response.status_code, response.json()["error"]["code"]) == (400, code)


def test_authentication_and_authorisation(
    sandbox: RunningSandbox, http: httpx.Client, control: SandboxClient, graph_token: str
) -> None:
    path = f"/users/{ADELE}/events"
    anonymous = Graph(sandbox, http, "").request("GET", path)
    assert (anonymous.status_code, anonymous.json()["error"]["code"]) == (
        401,
        "InvalidAuthenticationToken",
    )
    garbage = Graph(sandbox, http, "not.a.token").request("GET", path)
    assert garbage.status_code == 401

    delegated = http.post(
        sandbox.token_url,
        data={
            "grant_type": "password",
            "client_id": sandbox.settings["PWASYNC_PWA_CLIENT_ID"],
            "username": "alex.wilber@contoso.onmicrosoft.com",
            "password": "Sandbox-User-2026!",
            "scope": "https://graph.microsoft.com/.default",
        },
    ).json()["access_token"]
    other_user = Graph(sandbox, http, delegated).request("POST", path, event_body())
    assert (other_user.status_code, other_user.json()["error"]["code"]) == (
        403,
        "ErrorAccessDenied",
    )

    control.config(token_lifetime_s=1)
    short_lived = http.post(
        sandbox.token_url,
        data={
            "grant_type": "client_credentials",
            "client_id": sandbox.settings["PWASYNC_GRAPH_CLIENT_ID"],
            "client_secret": sandbox.settings["PWASYNC_GRAPH_CLIENT_SECRET"],
            "scope": "https://graph.microsoft.com/.default",
        },
    ).json()["access_token"]
    time.sleep(1.1)
    expired = Graph(sandbox, http, short_lived).request("GET", path)
    assert expired.status_code == 401
    assert "expired" in expired.json()["error"]["message"]


def test_prefer_time_zone(graph: Graph) -> None:
    created = graph.request("POST", f"/users/{ADELE}/events", event_body()).json()
    response = graph.http.get(
        f"{graph.base}/users/{ADELE}/events/{created['id']}",
        headers={**graph.headers, "Prefer": 'outlook.timezone="Pacific Standard Time"'},
    )
    assert response.json()["start"] == {
        "dateTime": "2026-12-01T00:00:00.0000000",
        "timeZone": "Pacific Standard Time",
    }
