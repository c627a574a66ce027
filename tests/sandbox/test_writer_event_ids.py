"""The writer's handler against the sandbox's Graph over HTTPS and the real Redis: events that
move under their owner, and second lives of an event, end up exactly once (issue 11, 3 and 4).

The handler runs in the test process with the real Graph transport and task store; each
request is sent on its own (no dispatcher), which is all these cases need.
"""

from __future__ import annotations

import ssl
import uuid
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from common.messages import Assignee, TaskChanged
from common.redis_store import Keys
from sandbox.client import SandboxClient
from services.event_writer.event_mapping import TASK_KEY_PROPERTY
from services.event_writer.graph import GraphTransport
from services.event_writer.handler import TaskChangedHandler
from services.event_writer.task_store import TaskStore
from tests.sandbox.conftest import RunningSandbox

pytestmark = pytest.mark.integration

ADELE = "adele.vance@contoso.onmicrosoft.com"
ALEX = "alex.wilber@contoso.onmicrosoft.com"
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
ADELE_ID, ALEX_ID = str(uuid.uuid4()), str(uuid.uuid4())
EVERYONE = [
    Assignee(resource_id=ADELE_ID, name="Adele", email=ADELE),
    Assignee(resource_id=ALEX_ID, name="Alex", email=ALEX),
]


class Token:
    def __init__(self, value: str) -> None:
        self.value = value

    def token(self) -> str:
        return self.value

    def invalidate(self) -> None:
        pass


class Writer:
    def __init__(self, sandbox, graph_token, redis_client, redis_url, scenario):
        context = ssl.create_default_context(cafile=sandbox.ca_file)
        self.http = httpx.Client(verify=context, timeout=30)
        self.transport = GraphTransport(
            self.http, sandbox.settings["PWASYNC_GRAPH_URL"], Token(graph_token)
        )
        self.store = TaskStore(redis_client, Keys(scenario), redis_url)
        self.scenario = scenario
        self.task_id = str(uuid.uuid4())
        self.handler = TaskChangedHandler(
            store=self.store, submit=self.submit, publish_transfer=lambda message: None
        )
        self.revision = T0

    def submit(self, request) -> Future:
        future: Future = Future()
        try:
            future.set_result(self.transport.send(request))
        except Exception as exc:  # noqa: BLE001 - the step gets it
            future.set_exception(exc)
        return future

    def handle(self, assignees, *, name="Task", change="upsert"):
        self.revision += timedelta(minutes=1)
        self.handler.handle(
            TaskChanged(
                scenario=self.scenario,
                project_id=str(uuid.UUID(int=1)),
                task_id=self.task_id,
                task_name=name,
                start=datetime(2026, 12, 1, 9),
                finish=datetime(2026, 12, 1, 17),
                timezone="Europe/Berlin",
                assignees=assignees,
                change=change,
                revision=self.revision,
                read_at=self.revision,
            )
        )

    def recorded_id(self, resource_id) -> str:
        return self.store.recorded(self.task_id)[resource_id].event_id


@pytest.fixture
def writer(sandbox: RunningSandbox, graph_token, redis_client, redis_url, scenario, control):
    made = Writer(sandbox, graph_token, redis_client, redis_url, scenario)
    yield made
    made.http.close()


def ours(control: SandboxClient, writer: Writer, mailbox: str) -> list[dict]:
    key = f"{writer.scenario}/{writer.task_id}"
    return [
        e
        for e in control.mailbox_events(mailbox)
        if e["extended_properties"].get(TASK_KEY_PROPERTY) == key
    ]


@pytest.mark.parametrize("how", ["calendar", "reimport"])
def test_a_moved_event_is_updated_and_deleted_without_a_duplicate_or_an_orphan(
    writer: Writer, control: SandboxClient, how: str
) -> None:
    writer.handle(EVERYONE)
    [created] = ours(control, writer, ALEX)
    moved = control.move_event(
        ALEX,
        created["id"],
        **({"calendar": "Projects"} if how == "calendar" else {"reimport": True}),
    )

    writer.handle(EVERYONE, name="Renamed")
    [event] = ours(control, writer, ALEX)
    assert event["immutable_id"] == moved["immutable_id"]  # the same item, updated
    assert event["subject"] == "Renamed"
    assert writer.recorded_id(ALEX_ID) == moved["immutable_id"]

    writer.handle([a for a in EVERYONE if a.resource_id != ALEX_ID])  # Alex leaves
    assert ours(control, writer, ALEX) == []
    writer.handle(EVERYONE, change="remove")
    assert ours(control, writer, ADELE) == []


def test_an_assignee_who_comes_back_gets_a_new_event(
    writer: Writer, control: SandboxClient
) -> None:
    writer.handle(EVERYONE)
    writer.handle([a for a in EVERYONE if a.resource_id != ALEX_ID])
    assert ours(control, writer, ALEX) == []
    writer.handle(EVERYONE)
    [event] = ours(control, writer, ALEX)
    assert writer.recorded_id(ALEX_ID) == event["immutable_id"]


def test_a_task_removed_and_brought_back_gets_its_events_again(
    writer: Writer, control: SandboxClient
) -> None:
    writer.handle(EVERYONE)
    writer.handle(EVERYONE, change="remove")
    assert ours(control, writer, ADELE) == ours(control, writer, ALEX) == []
    writer.handle(EVERYONE, name="Back")
    for mailbox, resource_id in ((ADELE, ADELE_ID), (ALEX, ALEX_ID)):
        [event] = ours(control, writer, mailbox)
        assert event["subject"] == "Back"
        assert writer.recorded_id(resource_id) == event["immutable_id"]
