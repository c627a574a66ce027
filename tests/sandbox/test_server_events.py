"""Project Server's server events in the sandbox, through the product's registration client:
the Published event found by name, one handler of ours whatever is run twice, other handlers
left alone, the permission it needs, and the call every publish makes."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from common.errors import PermanentApiError
from common.http import new_http_client
from sandbox.server_events import PUBLISHED_EVENT_ID
from services.poller.connection import open_pwa
from services.receiver.registration import ServerEvents, ours, register, unregister
from services.receiver.soap import parse_call
from tests.sandbox.conftest import settings_for

pytestmark = pytest.mark.integration


class Receiver:
    """A stand-in for the receiver: records each call's headers and body."""

    def __init__(self, status: int = 200) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                owner.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/project-server/events/s3cret"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def events(sandbox_se, control_se):
    with new_http_client(ca_bundle=sandbox_se.ca_file) as http:
        yield ServerEvents(open_pwa(settings_for(sandbox_se), http))


@pytest.fixture
def receiver():
    stand_in = Receiver()
    yield stand_in
    stand_in.close()


def wait(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_register_finds_published_by_name_and_is_idempotent(events):
    first = register(events, scenario="s1", url="https://sync.contoso.com/project-server/events/a")
    assert first.action == "added" and first.event.id == PUBLISHED_EVENT_ID
    again = register(events, scenario="s1", url="https://sync.contoso.com/project-server/events/a")
    assert (again.action, again.handler_id) == ("unchanged", first.handler_id)
    moved = register(events, scenario="s1", url="https://sync2.contoso.com/project-server/events/a")
    assert moved.action == "replaced"
    [handler] = ours(events, "s1")
    assert handler.endpoint_url.startswith("https://sync2.") and handler.event_id == 45


def test_unregister_removes_only_our_handler(events, control_se):
    register(events, scenario="s1", url="https://a.contoso.com/project-server/events/x")
    register(events, scenario="s2", url="https://b.contoso.com/project-server/events/y")
    published = events.published_event()
    events.add(name="Contoso audit", event=published, url="https://audit.contoso.com/", order=1)
    removed = unregister(events, "s1")
    assert [h.name for h in removed] == ["pwasync s1"]
    names = sorted(h.name for h in events.handlers())
    assert names == ["Contoso audit", "pwasync s2"]
    orders = sorted(h["order"] for h in control_se.server_events()["handlers"])
    assert len(set(orders)) == len(orders)  # every handler of the event has its own order


def test_managing_handlers_needs_manage_server_events(sandbox_se, control_se):
    settings = settings_for(
        sandbox_se,
        pwa_username="CONTOSO\\pwa-reader",
        pwa_password="Sandbox-Reader-2026!",
    )
    with new_http_client(ca_bundle=sandbox_se.ca_file) as http:
        events = ServerEvents(open_pwa(settings, http))
        with pytest.raises(PermanentApiError) as refused:
            events.handlers()
    assert refused.value.status == 403


def test_every_publish_calls_the_handler_once_with_the_soap_call(events, control_se, receiver):
    register(events, scenario="s1", url=receiver.url)
    created = control_se.create_project("Site survey", [{"name": "Walk the site"}], publish=False)
    assert not receiver.calls  # saving a draft is no publish
    control_se.publish_project(created["project_id"])
    control_se.publish_project(created["project_id"])
    assert wait(lambda: len(receiver.calls) == 2)
    headers, body = receiver.calls[0]
    assert headers["content-type"].startswith("text/xml")
    call = parse_call(body, headers["content-type"], headers.get("soapaction"))
    assert str(call.project_id) == created["project_id"]
    assert call.project_name == "Site survey" and call.site_id == events.site_id()
    assert [c["status"] for c in control_se.server_events()["calls"]] == [200, 200]


def test_a_call_that_fails_is_not_retried(events, control_se):
    down = Receiver()
    url = down.url
    down.close()  # nothing listens there any more
    register(events, scenario="s1", url=url)
    control_se.create_project("Site survey", [{"name": "Walk the site"}], publish=True)
    assert wait(lambda: control_se.server_events()["calls"])
    time.sleep(0.5)
    [call] = control_se.server_events()["calls"]
    assert "error" in call and "status" not in call
