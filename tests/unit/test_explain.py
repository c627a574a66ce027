"""``pwasync explain``: finding the task and gathering its story over in-memory readers."""

import json
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pika
import pytest

from common.errors import PwasyncError, ServiceUnavailable
from common.mailboxes import ANY_MAILBOX, MailboxPolicy
from services.event_writer.planner import RecordedEvent
from services.ledger.endpoints import Endpoint, HeldTask
from services.ops.dead_letters import DeadLetter
from services.ops.explain import Readers, about, gather, last_run, look_up
from services.ops.explain_lookup import Ambiguous, Located, NotFound
from services.ops.explain_render import lookup_json, render_lookup, render_story
from services.poller.changes import ProjectState
from services.poller.source import TaskRow
from tests.unit.fakes import PUBLISHED, ListFeed

BERLIN = ZoneInfo("Europe/Berlin")
READ_AT = datetime(2026, 12, 1, 5, 10, 3)  # PWA wall clock: 04:10:03 UTC


class Poller:
    def __init__(self):
        self.states, self.published, self.kept_runs, self.sync_start = {}, {}, [], None

    def start(self):
        return self.sync_start

    def projects(self):
        return dict(self.states)

    def published_revisions(self, project_id):
        return dict(self.published.get(project_id, {}))

    def runs(self, limit=20):
        return self.kept_runs[:limit]


class Store:
    def __init__(self):
        self.maps, self.orders, self.failures = {}, {}, {}

    def recorded(self, task_id):
        return dict(self.maps.get(task_id, {}))

    def handling(self, task_id):
        return dict(self.orders.get(task_id, {}))

    def failures_of(self, task_id):
        return list(self.failures.get(task_id, []))


class Ledger:
    def __init__(self):
        self.endpoints, self.held = {}, {}

    def endpoint_of(self, task_id):
        return self.endpoints.get(task_id)

    def held_of(self, task_id):
        return self.held.get(task_id)


def flat(text):
    """The screen with runs of spaces as one (the tests check words, not alignment)."""
    return "\n".join(" ".join(line.split()) for line in text.splitlines())


def letter(body, letter_id="abc123"):
    return DeadLetter(
        id=letter_id,
        dead_queue="q.dead",
        source_queue="q",
        reason="body does not fit TaskChanged",
        dead_at="2026-12-01T04:20:00+00:00",
        attempts=1,
        message_id="m1",
        correlation_id="c1",
        headers={},
        body=body,
        properties=pika.BasicProperties(),
    )


@pytest.fixture
def world():
    feed = ListFeed()
    berlin = feed.project("Office Relocation Berlin")
    crm = feed.project("CRM Rollout")
    alex = feed.person("Alex Wilber", "alex@contoso.com")
    megan = feed.person("Megan Bowen", "megan@contoso.com")
    contractor = feed.person("External Contractor", None)
    tasks = {
        "survey": feed.task(berlin, "Site survey", people=[alex, megan]),
        "cabling": feed.task(berlin, "Network cabling", flagged=False, people=[contractor]),
        "training": feed.task(crm, "User training", people=[megan]),
        "training-2": feed.task(berlin, "user training", people=[alex]),
    }
    readers = Readers(
        feed=feed,
        poller=Poller(),
        task_store=Store(),
        ledger=Ledger(),
        dead_letters=list,
        mailboxes=ANY_MAILBOX,
        zone=BERLIN,
        flag="flag field 'Create event'",
    )
    return feed, readers, tasks, {"alex": alex, "megan": megan, "contractor": contractor}


# --- finding the task --------------------------------------------------------------------------


def test_an_id_reads_only_its_own_project(world):
    feed, readers, tasks, _ = world
    found = look_up(str(tasks["training"].task_id).upper(), readers)
    assert isinstance(found, Located) and found.row == tasks["training"]
    assert feed.tasks_read == [tasks["training"].project_id]


def test_a_name_is_found_whatever_its_case(world):
    _, readers, tasks, _ = world
    found = look_up("  site SURVEY ", readers)
    assert isinstance(found, Located) and found.row == tasks["survey"]
    assert found.project.name == "Office Relocation Berlin"


def test_a_name_of_several_tasks_lists_them_all(world):
    _, readers, tasks, _ = world
    found = look_up("User Training", readers)
    assert isinstance(found, Ambiguous)
    ids = {c.task_id for c in found.candidates}
    assert ids == {str(tasks["training"].task_id), str(tasks["training-2"].task_id)}
    text = render_lookup(found)
    assert text.startswith("2 tasks are named 'User Training'; explain one of them by its id")
    assert "(project CRM Rollout)" in text
    assert lookup_json(found)["found"] == "several"


def test_no_match_says_so_and_lists_the_names_that_contain_it(world):
    _, readers, _, _ = world
    found = look_up("survey", readers)
    assert isinstance(found, NotFound) and [c.name for c in found.similar] == ["Site survey"]
    assert "tasks whose name contains it" in render_lookup(found)
    assert render_lookup(look_up("nothing like it", readers)) == (
        "no task named 'nothing like it' in the plans"
    )


def test_an_unknown_guid_is_not_searched_for_as_a_name(world):
    feed, readers, _, _ = world
    found = look_up(str(str(uuid.uuid4())), readers)
    assert isinstance(found, NotFound) and not found.searched_names
    assert feed.tasks_read == []
    assert "in the plans or in pwasync's records" in render_lookup(found)


def test_a_task_deleted_from_its_plan_is_explained_from_the_records(world):
    _, readers, _, people = world
    gone, project = str(uuid.uuid4()), str(uuid.uuid4())
    readers.ledger.endpoints[gone] = Endpoint(
        gone, project, datetime(2026, 11, 30, tzinfo=UTC), datetime(2026, 12, 30, tzinfo=UTC)
    )
    readers.task_store.maps[gone] = {
        people["alex"].resource_id: RecordedEvent(
            people["alex"].resource_id, "alex@contoso.com", "AAMk-1", "f"
        )
    }
    found = look_up(str(gone), readers)
    assert isinstance(found, Located) and found.row is None
    story = gather(found, readers)
    assert story["project_id"] == str(project)
    assert story["selection"]["why_not"] == "not_in_plan"
    assert story["events"][0]["state"] == "event" and story["events"][0]["assigned"] is False
    assert "not in the plans (deleted, or its project was)" in flat(render_story(story))


def test_without_the_plans_an_id_still_shows_the_records_and_a_name_cannot_be_found(world):
    feed, readers, tasks, _ = world
    feed.failing = ServiceUnavailable("PWA: sign-in refused")
    task_id = tasks["survey"].task_id
    found = look_up(str(task_id), readers)
    assert isinstance(found, Located) and found.row is None
    story = gather(found, readers)
    assert story["unreadable"] == {"plan": "PWA: sign-in refused"}
    assert story["plan"] is None and story["selection"] is None
    assert "NOT READ: plan: PWA: sign-in refused" in flat(render_story(story))
    with pytest.raises(PwasyncError, match="no task can be found by name"):
        look_up("Site survey", readers)


# --- the story ---------------------------------------------------------------------------------


def test_a_synced_task_tells_its_plan_run_events_endpoint_and_dead_letters(world):
    _, readers, tasks, people = world
    survey = tasks["survey"]
    alex, megan = people["alex"].resource_id, people["megan"].resource_id
    poller, store = readers.poller, readers.task_store
    poller.states[survey.project_id] = ProjectState(PUBLISHED, 0, READ_AT)
    poller.published[survey.project_id] = {survey.task_id: datetime(2026, 11, 20, 9, tzinfo=UTC)}
    poller.kept_runs = [
        {"run_id": "later", "started_at": "2026-12-01T05:00:00Z", "task_ids": []},
        {
            "run_id": "r1",
            "started_at": "2026-12-01T04:10:00Z",
            "finished_at": "2026-12-01T04:10:09Z",
            "trigger": "manual",
            "status": "succeeded",
            "correlation_id": "c-1",
            "task_ids": [],
            "project_ids": [],
        },
    ]
    store.maps[survey.task_id] = {alex: RecordedEvent(alex, "alex@contoso.com", "AAMk-1", "f")}
    store.failures[survey.task_id] = [
        {
            "resource_id": str(megan),
            "assignee": "Megan Bowen",
            "mailbox": "megan@contoso.com",
            "code": "ErrorInvalidUser",
            "reason": "the mailbox does not exist",
            "at": "2026-12-01T04:10:05+00:00",
        }
    ]
    store.orders[survey.task_id] = {
        "order": "2026-11-20T09:00:00.000000Z|2026-12-01T04:10:03.500000Z",
        "change": "upsert",
        "dirty": "0",
    }
    readers.ledger.endpoints[survey.task_id] = Endpoint(
        survey.task_id,
        survey.project_id,
        datetime(2026, 12, 1, 4, 10, 6, tzinfo=UTC),
        datetime(2026, 12, 31, 4, 10, 6, tzinfo=UTC),
    )
    body = json.dumps({"task_id": str(survey.task_id).upper(), "change": "upsert"}).encode()
    readers.dead_letters = lambda: [letter(body), letter(b'{"task_id": "other"}', "zzz")]

    story = gather(look_up("Site survey", readers), readers)

    assert story["selection"] == {
        "selected": True,
        "why_not": None,
        "detail": "every assignee with an accepted e-mail address gets an event",
    }
    assert story["plan"]["start"] == "2026-12-02T08:00:00" and story["plan"]["flagged"]
    assert story["poller"]["project_read_at"] == "2026-12-01T04:10:03Z"
    assert story["poller"]["has_events"] and story["poller"]["last_run"]["run_id"] == "r1"
    events = {e["assignee"]: e for e in story["events"]}
    assert events["Alex Wilber"]["state"] == "event"
    assert events["Alex Wilber"]["event_id"] == "AAMk-1"
    assert events["Megan Bowen"]["state"] == "failed"
    assert events["Megan Bowen"]["code"] == "ErrorInvalidUser"
    assert story["endpoint"]["expires_at"] == "2026-12-31T04:10:06Z"
    assert [d["id"] for d in story["dead_letters"]] == ["abc123"]
    assert story["unreadable"] == {}
    json.dumps(story)  # --json prints it as one object

    text = flat(render_story(story))
    assert text.splitlines()[0] == f"Site survey (task {survey.task_id})"
    assert "selected: yes: every assignee" in text
    assert "event alex@contoso.com Alex Wilber event id AAMk-1" in text
    assert "FAILED megan@contoso.com Megan Bowen ErrorInvalidUser: the mailbox does not" in text
    assert "last run: 2026-12-01 04:10:00 UTC manual, succeeded (run r1" in text
    assert "endpoint: allocated 2026-12-01 04:10:06 UTC, expires 2026-12-31 04:10:06 UTC" in text
    assert "abc123" in text and "zzz" not in text


def test_an_unflagged_task_says_why_in_the_syncs_words(world):
    _, readers, tasks, _ = world
    story = gather(look_up(str(tasks["cabling"].task_id), readers), readers)
    assert story["selection"]["why_not"] == "not_flagged"
    assert story["events"][0]["state"] == "no_email"
    text = flat(render_story(story))
    assert "selected: NO: its flag field 'Create event' is not set to Yes" in text
    assert "the writers were not told it has events" in text


def test_a_summary_task_and_a_master_project_are_not_selected(world):
    feed, readers, _, _ = world
    master = feed.project("Portfolio", kind=6)
    review = feed.task(master, "Quarterly review")
    summary = feed.task(feed.project_rows[0], "Preparation", summary=True)
    assert gather(look_up("Quarterly review", readers), readers)["selection"]["why_not"] == (
        "master_project"
    )
    assert gather(look_up(str(summary.task_id), readers), readers)["selection"]["detail"] == (
        "it is a summary task; only leaf tasks get events"
    )
    assert review.task_id != summary.task_id


def test_an_assignee_outside_the_allowed_domains_is_refused(world):
    _, readers, tasks, _ = world
    readers.mailboxes = MailboxPolicy(frozenset({"fabrikam.com"}))
    story = gather(look_up(str(tasks["training"].task_id), readers), readers)
    assert story["selection"]["selected"]
    assert story["selection"]["detail"].endswith("none has an accepted e-mail address")
    event = story["events"][0]
    assert event["state"] == "refused" and "PWASYNC_MAILBOX_DOMAINS" in event["reason"]


def test_a_held_task_says_it_waits_for_the_endpoint_limit(world):
    _, readers, tasks, _ = world
    task = tasks["training"]
    readers.ledger.held[task.task_id] = HeldTask(
        task.task_id, task.project_id, datetime(2026, 12, 1, 4, 11, tzinfo=UTC)
    )
    story = gather(look_up(str(task.task_id), readers), readers)
    assert story["endpoint"] == {
        "allocated_at": None,
        "expires_at": None,
        "held_since": "2026-12-01T04:11:00Z",
    }
    text = flat(render_story(story))
    assert "HELD since 2026-12-01 04:11:00 UTC: PWASYNC_ENDPOINT_LIMIT is reached" in text
    assert "waiting megan@contoso.com Megan Bowen held back by the endpoint limit" in text


def test_a_place_that_cannot_be_read_is_named_and_the_rest_is_told(world):
    _, readers, tasks, _ = world

    def broker_down():
        raise ServiceUnavailable("RabbitMQ 127.0.0.1:5672 is not reachable")

    readers.dead_letters = broker_down
    story = gather(look_up("Site survey", readers), readers)
    assert story["unreadable"] == {"dead_letters": "RabbitMQ 127.0.0.1:5672 is not reachable"}
    assert story["dead_letters"] is None and story["selection"]["selected"]
    assert "NOT READ: dead letters: RabbitMQ" in flat(render_story(story))
    assert tasks


def test_a_project_published_before_the_sync_start_was_never_read(world):
    _, readers, tasks, _ = world
    readers.poller.sync_start = datetime(2026, 12, 1)
    story = gather(look_up(str(tasks["training"].task_id), readers), readers)
    assert story["poller"]["before_sync_start"] and story["poller"]["project_read_at"] is None
    assert "last published before the sync start" in flat(render_story(story))


def test_the_last_run_is_the_newest_that_read_the_task():
    task, project = str(uuid.uuid4()), str(uuid.uuid4())
    at = datetime(2026, 12, 1, 4, 10, 3, tzinfo=UTC)
    runs = [
        {"run_id": "other task", "started_at": "2026-12-01T04:00:00Z", "task_ids": ["x"]},
        {"run_id": "scoped", "started_at": "2026-12-01T03:00:00Z", "project_ids": [str(project)]},
        {"run_id": "window", "started_at": "2026-12-01T04:10:00Z", "finished_at": None},
    ]
    assert last_run(runs, task, project, [])["run_id"] == "scoped"
    assert last_run(runs[2:], task, project, [at])["run_id"] == "window"
    assert last_run(runs[2:], task, project, [at - timedelta(hours=1)]) is None


def test_a_dead_letter_is_about_the_task_when_its_body_names_it():
    task = str(uuid.uuid4())
    assert about(letter(json.dumps({"task_ids": [str(task)]}).encode()), task)
    assert about(letter(f"not json {task}".encode()), task)
    assert not about(letter(b'{"task_id": "someone else"}'), task)
    assert not about(letter(b"[1, 2]"), task)


def test_a_task_that_left_the_selection_says_its_events_were_removed(world):
    _, readers, tasks, _ = world
    cabling = tasks["cabling"]
    readers.task_store.orders[cabling.task_id] = {
        "order": "2026-11-21T09:00:00.000000Z|2026-12-01T04:10:03.000000Z",
        "change": "remove",
        "dirty": "1",
    }
    story = gather(look_up("Network cabling", readers), readers)
    assert story["written_from"] == {
        "change": "remove",
        "published": "2026-11-21T09:00:00.000000Z",
        "read_at": "2026-12-01T04:10:03.000000Z",
        "unfinished": True,
    }
    text = flat(render_story(story))
    assert (
        "events: removed: its events were deleted (snapshot read 2026-12-01 04:10:03 UTC)" in text
    )
    assert "its last handling is running or did not finish" in text


def test_an_opaque_id_is_tried_as_a_name_first_then_as_an_id(world):
    feed, readers, tasks, _ = world
    survey = tasks["survey"]
    planner = TaskRow(survey.project_id, "Xm3kPl4nn3rT4sk", "Planner task", None, None, False,
                      False, True)  # fmt: skip
    feed.task_rows[survey.project_id].append(planner)
    found = look_up("Xm3kPl4nn3rT4sk", readers)
    assert isinstance(found, Located) and found.row == planner
    assert look_up("Go-live", readers).similar == []  # an id nobody has, no name like it


def test_a_source_that_refuses_the_ids_form_is_not_an_error(world):
    feed, readers, _, _ = world

    def guid_only(task_ids):
        raise ValueError("badly formed hexadecimal UUID string")

    feed.task_projects = guid_only
    found = look_up("Cabling", readers)  # not a GUID: names first, then the id is refused
    assert isinstance(found, NotFound) and [c.name for c in found.similar] == ["Network cabling"]


def test_without_the_plans_only_an_id_pwasync_recorded_or_a_guid_is_explained(world):
    feed, readers, _, _ = world
    feed.failing = ServiceUnavailable("PWA down")
    with pytest.raises(PwasyncError, match="no task can be found by name"):
        look_up("Xm3kPl4nn3rT4sk", readers)
    readers.ledger.held["Xm3kPl4nn3rT4sk"] = HeldTask(
        "Xm3kPl4nn3rT4sk", "plan-1", datetime.now(UTC)
    )
    assert look_up("Xm3kPl4nn3rT4sk", readers) == Located("Xm3kPl4nn3rT4sk", None, None)


def test_every_reason_the_sync_skips_a_task_for_has_words():
    from services.ops.explain import WHY_NOT
    from services.poller.selection import SkipReason
    from services.poller.sync import NEVER_PUBLISHED, UNREADABLE

    assert {str(r) for r in SkipReason} | {NEVER_PUBLISHED, UNREADABLE} <= WHY_NOT.keys()
