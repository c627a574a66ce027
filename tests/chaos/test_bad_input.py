"""Fault 6: bad input. Every bad message gets a dead letter with its reason, every bad row or
assignee in Project Online a clear log line, and the services keep going: what is good syncs
exactly as if nothing had happened."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from common.messages import encode
from common.rabbit import Publisher, RabbitConnector
from common.topology import topology_for
from tests.chaos.end_state import Expectation
from tests.chaos.scenario import Volume
from tests.e2e.harness import wait_for
from tests.e2e.test_writer import tasks_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SEED = Volume("short", projects=0, tasks_per_project=1, assignees=0, mailboxes=0, latency_ms=0)
RELOCATION = "bdd9ba3c-6a37-5353-b794-b68ac4e6a39f"  # "Office Relocation Berlin"
ADELE = "adele.vance@contoso.onmicrosoft.com"
ALEX = "alex.wilber@contoso.onmicrosoft.com"
RESOURCE = {
    ADELE: "729a99a2-ee06-5f9b-b607-23b45186ff7a",
    ALEX: "34ce3f1d-cdff-561a-836f-b2012c00f9cc",
}
# The seed's demo tasks that sync (README of the sandbox): (mailbox, task id).
DEMO_EVENTS = {
    (ADELE, "7b0fb185-642a-5227-9a0e-0a0a4cc04f2e"),  # Kick-off meeting
    (ALEX, "b9bd0d68-ec3f-5bf1-8935-5046098cdc9e"),  # Site survey
    ("megan.bowen@contoso.onmicrosoft.com", "b9bd0d68-ec3f-5bf1-8935-5046098cdc9e"),
    ("nestor.wilke@contoso.onmicrosoft.com", "99d9e221-c6ff-52a3-aee8-23d16e9a1103"),  # Go-live
    (ADELE, "ed2fd030-8e42-5ad2-9558-70cb82d30069"),  # User training
    ("lee.gu@contoso.onmicrosoft.com", "ed2fd030-8e42-5ad2-9558-70cb82d30069"),
}
NETWORK_CABLING = "5b14e6d6-19af-5ee6-8b95-812f32dc7685"  # its assignee has no e-mail
FURNITURE_ORDER = "111c7832-4a64-54da-a588-1f575edd1a55"  # its assignee's mailbox is unknown
IT_HANDOVER = "470c6128-b193-50fd-8b06-6b90645aa3d6"  # its assignee's mailbox is unlicensed
MOVE_DAY = "792d2ad3-0d11-5a77-8a4a-710c5e2a572f"  # nobody is assigned
HOSTILE_NAME = """<b>Review</b> "Q1" & O'Brien's <script>alert('x')</script> 'quoted' ''"""


def _publish(amqp_url, scenario, queue, bodies):
    """Straight into the scenario's queue: ``sync.requested`` would reach every scenario's
    poller on the broker, other test runs' included."""
    connector = RabbitConnector(amqp_url, connection_name="chaos")
    publisher = Publisher(connector, topology_for(scenario))
    try:
        for body in bodies:
            publisher.publish(queue.name, body, exchange="")
    finally:
        publisher.close()


def _events(lines, event):
    return [line for line in lines if line["event"] == event]


def test_bad_messages_are_dead_lettered_with_their_reason_and_the_services_go_on(
    run_factory, amqp_url
):
    run = run_factory("bad messages on every queue", SEED)
    scenario = run.pipeline.scenario
    run.start()
    assert "created Task flag field" in run.pipeline.cli("fields", "create").stdout
    [good, backwards, _] = tasks_for(scenario, [ADELE], 3)
    backwards = json.loads(encode(backwards))
    backwards["finish"] = "2026-11-30T09:00:00"  # before its start
    year_one = json.loads(encode(good))
    year_one["start"] = "0001-01-01T00:00:00"
    wrong_version = {**json.loads(encode(good)), "v": 2}
    queues = topology_for(scenario)
    _publish(amqp_url, scenario, queues.sync_requests, [b"{not json", b'{"project_ids": "all"}'])
    _publish(
        amqp_url,
        scenario,
        queues.task_changes,
        [
            b"\xff\xfe not UTF-8",
            b'{"v": 1, "scenario": "x"}',
            json.dumps(backwards).encode(),
            json.dumps(year_one).encode(),
            json.dumps(wrong_version).encode(),
        ],
    )
    _publish(amqp_url, scenario, queues.transfers, [b"[]", b'{"v": 1}'])
    # Meanwhile the good work goes on: the demo tasks sync, through every service.
    run.pipeline.client.flag_tasks(run.pipeline.client.demo_flag_task_ids())
    run.sync()
    dead = {
        "not UTF-8 JSON": 2,
        "project_ids: Input should be a valid list": 1,
        "does not fit TaskChanged: project_id: Field required": 1,
        "the task finishes before it starts": 1,
        "start: Value error, is outside the dates Project can schedule": 1,
        "unsupported TaskChanged schema version 2": 1,
        "body must be a JSON object, not list": 1,
        "does not fit TransferSucceeded": 1,
    }
    assert wait_for(lambda: len(run.pipeline.cli("dlq", "list", "--json").stdout) > 2, timeout=60)
    assert all(process.alive() for process in run.pipeline.services.values())
    run.finish(
        Expectation(frozenset(DEMO_EVENTS), dead),
        "9 bad messages (not JSON, wrong schema, finish before start, year 1, v2) + a sync",
    )


def test_bad_data_in_project_online_gets_a_clear_line_and_the_rest_syncs(run_factory):
    run = run_factory("bad data in Project Online", SEED)
    client = run.pipeline.client
    run.pipeline.cli("fields", "create")
    client.flag_tasks(client.demo_flag_task_ids())
    day = datetime(2026, 12, 7, 9)

    def add(name, mailbox=ADELE, **overrides):
        spec = {"name": name, "start": day.isoformat(), "finish": (day + timedelta(hours=2))}
        spec["finish"] = spec["finish"].isoformat()
        task = client.add_task(RELOCATION, assignees=[RESOURCE[mailbox]], flag=True, **spec)
        return task["task_id"]

    long_name = "Long " + "x" * 2495
    long_task, hostile = add(long_name), add(HOSTILE_NAME, ALEX)
    backwards, year_one, year_9999, malformed = (add(f"bad {n}") for n in range(4))
    client.config(
        task_row_overrides={
            backwards: {"TaskFinishDate": "/Date(1796029200000)/"},  # the day before its start
            year_one: {"TaskStartDate": "/Date(-62135596800000)/"},
            year_9999: {"TaskFinishDate": "/Date(253402297199000)/"},
            malformed: {"TaskStartDate": "31.12.2026"},
        }
    )
    run.start()
    run.sync()
    expected = DEMO_EVENTS | {(ADELE, long_task), (ALEX, hostile)}
    run.finish(
        Expectation(frozenset(expected)),
        "finish before start, year 1, year 9999, a malformed row, a 2,500-character name, "
        "HTML and quotes, no e-mail, unknown and unlicensed mailboxes",
    )

    events = {event["subject"][:20]: event for event in client.events()}
    assert events["Long " + "x" * 15]["subject"] == long_name[:2000]  # cut, never refused
    assert events[HOSTILE_NAME[:20]]["subject"] == HOSTILE_NAME  # a subject is plain text
    body = events[HOSTILE_NAME[:20]]["body"]
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in body and "<script>" not in body
    assert "&quot;Q1&quot; &amp; O&#x27;Brien" in body

    poller = run.pipeline.log_lines("poller")
    skipped = {line["task_id"]: line["reason"] for line in _events(poller, "task skipped")}
    assert skipped[backwards] == "finish_before_start"
    assert skipped[year_one] == skipped[year_9999] == "date_out_of_range"
    [unreadable] = _events(poller, "task row unreadable; the task is left as it was")
    assert unreadable["task_id"] == malformed and "31.12.2026" in unreadable["problem"]
    no_email = _events(
        poller, "flagged task has no assignee with a usable e-mail address; it gets no event"
    )
    assert {line["task_id"] for line in no_email} == {NETWORK_CABLING, MOVE_DAY}
    refused = [
        line
        for name in ("writer-1", "writer-2")
        for line in _events(
            run.pipeline.log_lines(name), "mailbox cannot take events; recorded for the assignee"
        )
    ]
    assert {(line["task_id"], line["mailbox"].split("@")[0]) for line in refused} == {
        (FURNITURE_ORDER, "johanna.lorenz"),  # ErrorInvalidUser
        (IT_HANDOVER, "irvin.sayers"),  # MailboxNotEnabledForRESTAPI
    }
