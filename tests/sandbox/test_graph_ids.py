"""Event ids as Exchange hands them out: regular ids change when an item moves, immutable ids
(``Prefer: IdType="ImmutableId"``) do not; and a transactionId outlives its event."""

from __future__ import annotations

import httpx
import pytest

from sandbox.client import SandboxClient
from tests.sandbox.conftest import RunningSandbox
from tests.sandbox.test_graph import ADELE, TASK_KEY, Graph, event_body

IMMUTABLE = {"Prefer": 'IdType="ImmutableId"'}


@pytest.fixture
def graph(sandbox: RunningSandbox, http: httpx.Client, graph_token: str) -> Graph:
    return Graph(sandbox, http, graph_token)


def call(graph: Graph, method: str, path: str, body=None, *, immutable: bool = False, **params):
    headers = {**graph.headers, **(IMMUTABLE if immutable else {})}
    return graph.http.request(
        method, f"{graph.base}{path}", json=body, params=params or None, headers=headers
    )


def test_the_preference_picks_the_id_form_per_request(graph: Graph) -> None:
    created = call(graph, "POST", f"/users/{ADELE}/events", event_body(), immutable=True)
    assert created.status_code == 201
    assert 'IdType="ImmutableId"' in created.headers["Preference-Applied"]
    immutable = created.json()["id"]
    regular = call(graph, "GET", f"/users/{ADELE}/events/{immutable}").json()["id"]
    assert immutable != regular
    assert immutable.startswith("AAkALg") and regular.startswith("AAMk")
    # Either form addresses the item; the answer speaks the form the request asked for.
    again = call(graph, "GET", f"/users/{ADELE}/events/{regular}", immutable=True)
    assert again.json()["id"] == immutable
    plain = call(graph, "GET", f"/users/{ADELE}/events/{regular}")
    assert "Preference-Applied" not in plain.headers


def lookup(graph: Graph, value: str) -> list[str]:
    return [
        e["id"]
        for e in call(
            graph,
            "GET",
            f"/users/{ADELE}/events",
            immutable=True,
            **{
                "$filter": f"singleValueExtendedProperties/any(ep: ep/id eq '{TASK_KEY}' "
                f"and ep/value eq '{value}')",
                "$select": "id",
            },
        ).json()["value"]
    ]


def test_a_moved_event_keeps_its_immutable_id_and_loses_its_regular_one(
    graph: Graph, control: SandboxClient
) -> None:
    body = event_body(singleValueExtendedProperties=[{"id": TASK_KEY, "value": "moved"}])
    immutable = call(graph, "POST", f"/users/{ADELE}/events", body, immutable=True).json()["id"]
    regular = call(graph, "GET", f"/users/{ADELE}/events/{immutable}").json()["id"]

    moved = control.move_event(ADELE, regular, calendar="Archive 2026")
    assert moved["id"] != regular and moved["immutable_id"] == immutable
    assert moved["calendar"] == "Archive 2026"
    stale = call(graph, "PATCH", f"/users/{ADELE}/events/{regular}", {"subject": "x"})
    assert (stale.status_code, stale.json()["error"]["code"]) == (404, "ErrorItemNotFound")
    patched = call(
        graph, "PATCH", f"/users/{ADELE}/events/{immutable}", {"subject": "y"}, immutable=True
    )
    assert (patched.status_code, patched.json()["id"]) == (200, immutable)
    # /users/{id}/events lists the default calendar only; the id still reaches the item.
    assert lookup(graph, "moved") == []
    assert call(graph, "DELETE", f"/users/{ADELE}/events/{immutable}").status_code == 204
    assert control.mailbox_events(ADELE) == []


def test_a_reimported_event_changes_both_ids_and_is_found_by_its_property(
    graph: Graph, control: SandboxClient
) -> None:
    body = event_body(singleValueExtendedProperties=[{"id": TASK_KEY, "value": "again"}])
    immutable = call(graph, "POST", f"/users/{ADELE}/events", body, immutable=True).json()["id"]
    moved = control.move_event(ADELE, immutable, reimport=True)
    assert moved["immutable_id"] != immutable and moved["calendar"] == "Calendar"
    gone = call(graph, "GET", f"/users/{ADELE}/events/{immutable}", immutable=True)
    assert gone.status_code == 404
    assert lookup(graph, "again") == [moved["immutable_id"]]


def test_batch_items_take_their_own_id_preference(
    sandbox: RunningSandbox, http: httpx.Client, graph: Graph
) -> None:
    item = {"method": "POST", "url": f"/users/{ADELE}/events", "body": event_body()}
    batch = http.post(
        f"{graph.base}/$batch",
        headers=graph.headers,
        json={
            "requests": [
                {**item, "id": "1", "headers": {"Content-Type": "application/json", **IMMUTABLE}},
                {**item, "id": "2", "headers": {"Content-Type": "application/json"}},
            ]
        },
    ).json()
    ids = {r["id"]: r["body"]["id"] for r in batch["responses"]}
    assert ids["1"].startswith("AAkALg") and ids["2"].startswith("AAMk")


def test_a_deleted_events_transaction_id_still_deduplicates(
    graph: Graph, control: SandboxClient
) -> None:
    """Graph remembers a transactionId past its event: a POST carrying it again answers with
    the deleted event (201, the old id) and creates nothing. ``transaction_id_window_s``
    bounds that memory as it bounds the live one."""
    first = call(graph, "POST", f"/users/{ADELE}/events", event_body(transactionId="life-1"))
    first_id = first.json()["id"]
    assert call(graph, "DELETE", f"/users/{ADELE}/events/{first_id}").status_code == 204
    again = call(graph, "POST", f"/users/{ADELE}/events", event_body(transactionId="life-1"))
    assert (again.status_code, again.json()["id"]) == (201, first_id)
    assert control.mailbox_events(ADELE) == []
    assert call(graph, "GET", f"/users/{ADELE}/events/{first_id}").status_code == 404
    control.config(transaction_id_window_s=0)
    call(graph, "POST", f"/users/{ADELE}/events", event_body(transactionId="life-1"))
    assert len(control.mailbox_events(ADELE)) == 1
