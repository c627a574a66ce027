"""Basic Planner plans (``PWASYNC_SOURCE=planner``) through the whole pipeline, with only this
source's settings: the Project checks (exact events, usage, no change on a resync, an idle
poll's cost, an update in place, every removal path, a plan of 700 tasks over two pages).

One pipeline serves the module (starting it is most of the time): the tests are the steps of
one story and run in file order, each on the state the previous one left.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from sandbox.planner_client import PlannerControl
from services.launcher import delete_scenario
from tests.e2e.harness import Pipeline, wait_for

# One xdist group: the module's steps run in file order on one worker (pytest -n, docs/tests.md).
pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.xdist_group("planner")]

ADELE, ALEX = "adele.vance@contoso.onmicrosoft.com", "alex.wilber@contoso.onmicrosoft.com"
MEGAN, LEE = "megan.bowen@contoso.onmicrosoft.com", "lee.gu@contoso.onmicrosoft.com"
NESTOR = "nestor.wilke@contoso.onmicrosoft.com"
BERLIN = "W. Europe Standard Time"


class PlannerPipeline:
    def __init__(self, pipe: Pipeline) -> None:
        self.pipe = pipe
        self.planner = PlannerControl(pipe.client)
        self.launch = self.planner.plan("Product launch")
        self.website = self.planner.plan("Website refresh")
        self.office = self.planner.plan("Office move")

    def runs(self) -> list[dict]:
        return self.pipe.redis_json_list("poller:runs")

    def sync(self, *args: str) -> dict:
        before = len(self.runs())
        self.pipe.cli("sync-now", *args)
        assert wait_for(lambda: len(self.runs()) > before, timeout=60)
        run = self.runs()[0]
        assert run["status"] == "succeeded", run
        return run

    def events(self) -> dict[tuple[str, str], dict]:
        """(mailbox, subject) -> event, of every event pwasync wrote."""
        return {
            (e["mailbox"].lower(), e["subject"]): e
            for e in self.pipe.client.events()
            if e["extended_properties"]
        }

    def settle(self, expected: set[tuple[str, str]]) -> dict[tuple[str, str], dict]:
        assert wait_for(lambda: set(self.events()) == expected, timeout=30), sorted(self.events())
        return self.events()


@pytest.fixture(scope="module")
def planner(tmp_path_factory, amqp_url, redis_url) -> Iterator[PlannerPipeline]:
    scenario = f"t-{uuid.uuid4().hex[:10]}"
    pipe = Pipeline(
        tmp_path_factory.mktemp("planner"),
        amqp_url=amqp_url,
        redis_url=redis_url,
        scenario=scenario,
    )
    try:
        story = PlannerPipeline(pipe)
        marketing = story.launch["group_id"]
        pipe.env.update(
            {
                "PWASYNC_SOURCE": "planner",
                # Every plan of the marketing group, and one plan of another group by its id.
                "PWASYNC_PLANNER_GROUPS": marketing,
                "PWASYNC_PLANNER_PLANS": story.office["id"],
            }
        )
        for name in ("poller", "writer-1", "ledger"):
            pipe.start(name)
        yield story
    finally:
        pipe.close()
        delete_scenario(amqp_url, redis_url, scenario)


def test_check_reports_the_token_each_plan_and_its_label(planner):
    out = planner.pipe.cli("check", "--mailbox", ADELE).stdout
    assert "FAIL" not in out, out
    assert "Planner: Graph token (Tasks.Read.All): obtained, with" in out
    assert f"Planner group {planner.launch['group_id']}: 2 plan(s)" in out
    assert "Planner plan 'Website refresh'" in out and "label 'Create event' is category4" in out
    assert "Planner plan 'Office move'" in out
    assert f"Planner: assignees' addresses (User.Read.All): read {ADELE}" in out
    assert "PWA" not in out.replace("PWASYNC_PWA_TIMEZONE", "")
    bare = planner.pipe.cli("check").stdout  # the mailbox of an assignee found in the plans
    assert "FAIL" not in bare and "ok    test mailbox: " in bare, bare


def test_labelled_tasks_become_all_day_events_over_their_days(planner):
    run = planner.sync()
    events = planner.settle(
        {
            (ADELE, "Launch webinar"),
            (ALEX, "Launch webinar"),
            (MEGAN, "Press kit"),
            (LEE, "Social campaign"),
            (ADELE, "Design review"),
            (NESTOR, "Design review"),
            (MEGAN, "Movers on site"),
        }
    )
    press = events[(MEGAN, "Press kit")]
    # Dec 9 to 11 in Berlin: midnight of the 9th to midnight after the 11th.
    assert press["is_all_day"] is True and press["show_as"] == "free"
    assert (press["start"], press["end"]) == (
        "2026-12-08T23:00:00+00:00",
        "2026-12-11T23:00:00+00:00",
    )
    assert press["start_time_zone"] == BERLIN == press["end_time_zone"]
    assert "Open the task in Planner" in press["body"] and "Fri 11 Dec 2026" in press["body"]
    # No start: the due day alone.
    social = events[(LEE, "Social campaign")]
    assert (social["start"], social["end"]) == (
        "2026-12-13T23:00:00+00:00",
        "2026-12-14T23:00:00+00:00",
    )
    assert run["projects"]["read"] == 3 and run["tasks"]["published"] == 5
    assert run["tasks"]["skipped"]["no_due_date"] == 1  # Venue booking
    skipped = [
        line
        for line in planner.pipe.log_lines("poller")
        if line["event"] == "task skipped" and line.get("reason") == "no_due_date"
    ]
    assert [line["task"] for line in skipped] == ["Venue booking"]
    [dates] = [
        line
        for line in planner.pipe.log_lines("poller")
        if line["event"] == "Planner dates as Graph writes them"
    ]
    assert dates["due"].endswith("Z") and dates["zone"] == "Europe/Berlin"
    assert wait_for(lambda: planner.pipe.usage()["endpoints_in_use"] == 5, timeout=30)
    task_ids = {t["task_id"] for t in planner.pipe.usage()["tasks"]}
    assert planner.launch["tasks"]["Press kit"] in task_ids  # Planner's own ids, not GUIDs
    # explain by a Planner id, and a task left out, in the sync's words.
    story = json.loads(
        planner.pipe.cli("explain", planner.launch["tasks"]["Press kit"], "--json").stdout
    )
    assert story["name"] == "Press kit" and story["selection"]["selected"]
    assert [(e["mailbox"], e["state"]) for e in story["events"]] == [(MEGAN, "event")]
    venue = planner.pipe.cli("explain", "venue booking").stdout
    assert "NO: it has no due date" in venue, venue


def test_an_idle_poll_reads_each_plan_once_and_changes_nothing(planner):
    planner.planner.reset_requests()
    planner.planner.config(throttle_next=1, retry_after_s=0.2)  # one 429, waited out
    run = planner.sync()
    assert run["tasks"]["published"] == 0 and run["projects"]["unchanged"] == 3
    # The group's plans 1 (and its retry after the 429), the plan outside it 1, labels 3 and
    # task pages 3: no user lookups (kept an hour), nothing per task.
    assert run["pwa_requests"] == 9
    assert planner.planner.requests() == {
        "group_plans": 2,
        "plan": 1,
        "plan_details": 3,
        "plan_tasks": 3,
    }
    assert len(planner.events()) == 7


def test_an_edited_task_is_read_alone_and_updated_in_place(planner):
    before = planner.events()[(MEGAN, "Press kit")]
    planner.planner.update_task(
        planner.launch["tasks"]["Press kit"], title="Press kit (final)", due="2026-12-12"
    )
    dry = planner.pipe.cli("sync-now", "--dry-run").stdout
    assert f"update  {MEGAN:40} Press kit (final) [{planner.launch['tasks']['Press kit']}]" in dry
    assert "dry run: 0 to create, 1 to update, 0 to delete" in dry
    run = planner.sync()
    assert run["projects"]["read"] == 1 and run["tasks"]["published"] == 1
    after = planner.settle(
        set(planner.events()) - {(MEGAN, "Press kit")} | {(MEGAN, "Press kit (final)")}
    )[(MEGAN, "Press kit (final)")]
    assert after["id"] == before["id"] and after["end"] == "2026-12-12T23:00:00+00:00"
    assert planner.sync("--full")["tasks"]["published"] == 0

    # A run scoped to one task by its Planner id reads that task's plan only.
    webinar = planner.launch["tasks"]["Launch webinar"]
    planner.planner.update_task(webinar, title="Launch webinar (live)")
    run = planner.sync("--task", webinar)
    assert run["task_ids"] == [webinar] and run["projects"]["read"] == 1
    assert run["tasks"]["published"] == 1
    planner.planner.update_task(webinar, title="Launch webinar")
    assert planner.sync()["tasks"]["published"] == 1


def test_every_way_out_of_the_selection_removes_the_events(planner):
    launch = planner.launch["tasks"]
    planner.planner.update_task(launch["Launch webinar"], labels=["Urgent"])  # label off
    planner.planner.delete_task(launch["Social campaign"])  # deleted
    planner.planner.update_task(launch["Press kit"], due=None)  # loses its due date
    planner.planner.delete_plan(planner.website["id"])  # plan deleted in Planner
    run = planner.sync()
    assert run["tasks"]["removed"] == 4 and run["projects"]["deleted"] == 1
    planner.settle({(MEGAN, "Movers on site")})

    # The plan outside the group leaves the settings: its task's event goes too.
    planner.pipe.stop_all()
    del planner.pipe.env["PWASYNC_PLANNER_PLANS"]
    for name in ("poller", "writer-1", "ledger"):
        planner.pipe.start(name)
    run = planner.sync()
    assert run["tasks"]["removed"] == 1 and run["projects"]["deleted"] == 1
    planner.settle(set())
    assert planner.pipe.usage()["endpoints_in_use"] == 5  # allocated for 30 days


def test_a_plan_of_700_tasks_is_read_over_two_pages(planner):
    group = planner.launch["group_id"]
    plan = planner.planner.create_plan(group, "Big plan", categories={"category2": "Create event"})
    planner.planner.generate(
        plan["id"], 700, label_every=100, assignees=[ADELE], label="Create event"
    )
    planner.planner.reset_requests()
    run = planner.sync()
    assert run["tasks"]["published"] == 7 and run["tasks"]["skipped"]["not_flagged"] >= 693
    assert planner.planner.requests()["plan_tasks"] == 1 + 2  # Product launch's page, and two
    subjects = {
        subject
        for _, subject in planner.settle(
            {(ADELE, f"Generated task {n}") for n in range(1, 701, 100)}
        )
    }
    assert len(subjects) == 7
    planner.planner.reset_requests()
    assert planner.sync()["tasks"]["published"] == 0
    assert planner.planner.requests()["plan_tasks"] == 3
