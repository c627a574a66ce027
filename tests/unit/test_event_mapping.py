import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import BadMessage
from common.messages import TaskChanged
from services.event_writer import event_mapping
from services.event_writer.event_mapping import EventRules

TASK = uuid.UUID("00000000-0000-4000-8000-0000000000aa")


def task(**overrides):
    values = dict(
        scenario="acme",
        project_id=uuid.uuid4(),
        project_name="Office <Move>",
        task_id=TASK,
        task_name="Pack & label",
        start=datetime(2026, 3, 28, 9),
        finish=datetime(2026, 3, 30, 17),
        timezone="Europe/Berlin",
        revision=datetime(2026, 3, 1, tzinfo=UTC),
        read_at=datetime(2026, 3, 1, 0, 5, tzinfo=UTC),
    )
    values.update(overrides)
    return TaskChanged(**values)


def test_times_are_the_pwa_wall_clock_in_the_windows_zone_graph_accepts():
    content = event_mapping.event_content(task())
    assert content["start"] == {
        "dateTime": "2026-03-28T09:00:00",
        "timeZone": "W. Europe Standard Time",
    }
    assert content["end"] == {
        "dateTime": "2026-03-30T17:00:00",
        "timeZone": "W. Europe Standard Time",
    }


def test_a_zone_without_a_windows_name_is_sent_as_utc_instants():
    content = event_mapping.event_content(task(timezone="UTC"))
    assert content["start"] == {"dateTime": "2026-03-28T09:00:00", "timeZone": "UTC"}
    assert event_mapping.graph_zone_name("Antarctica/Troll") is None
    # 09:00 CET (UTC+1) on the 28th, 17:00 CEST (UTC+2) on the 30th.
    times = event_mapping.task_times(task())
    assert times.start_utc == datetime(2026, 3, 28, 8, tzinfo=UTC)
    assert times.finish_utc == datetime(2026, 3, 30, 15, tzinfo=UTC)


def test_the_pollers_utc_instants_win_over_the_wall_clock():
    # 02:30 on 29 March does not exist in Berlin; the poller resolved it to 03:30 CEST.
    content = event_mapping.event_content(
        task(
            start=datetime(2026, 3, 29, 2, 30),
            start_utc=datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
        )
    )
    assert content["start"]["dateTime"] == "2026-03-29T03:30:00"


def test_subject_is_the_task_name_and_the_body_is_escaped_html_with_the_link():
    content = event_mapping.event_content(
        task(
            task_name='<script>alert("x")</script>',
            task_url='https://contoso.sharepoint.com/sites/pwa/project.aspx?projuid=1&x="y"',
        )
    )
    assert content["subject"] == '<script>alert("x")</script>'
    body = content["body"]
    assert body["contentType"] == "HTML"
    assert "<script>" not in body["content"]
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in body["content"]
    assert "Office &lt;Move&gt;" in body["content"]
    assert (
        'href="https://contoso.sharepoint.com/sites/pwa/project.aspx?projuid=1&amp;x=&quot;y&quot;"'
        in body["content"]
    )
    assert "Sat 28 Mar 2026 09:00 (Europe/Berlin)" in body["content"]


def test_only_http_links_reach_the_body():
    content = event_mapping.event_content(task(task_url="javascript:alert(1)"))
    assert "href" not in content["body"]["content"]


def test_show_as_auto_frees_multi_day_tasks_and_milestones_and_books_a_day_slot():
    multi_day = event_mapping.event_content(task())
    same_day = event_mapping.event_content(task(finish=datetime(2026, 3, 28, 12)))
    milestone = event_mapping.event_content(task(finish=datetime(2026, 3, 28, 9)))
    assert (multi_day["showAs"], same_day["showAs"], milestone["showAs"]) == (
        "free",
        "busy",
        "free",
    )
    fixed = event_mapping.event_content(task(), EventRules(show_as="tentative"))
    assert fixed["showAs"] == "tentative"


def test_all_day_events_are_opt_in_and_span_the_tasks_dates():
    assert event_mapping.event_content(task())["isAllDay"] is False
    content = event_mapping.event_content(task(), EventRules(all_day="multi_day"))
    assert content["isAllDay"] is True
    assert content["start"] == {
        "dateTime": "2026-03-28T00:00:00",
        "timeZone": "W. Europe Standard Time",
    }
    assert content["end"] == {
        "dateTime": "2026-03-31T00:00:00",
        "timeZone": "W. Europe Standard Time",
    }
    assert content["showAs"] == "free"
    one_day = task(finish=datetime(2026, 3, 28, 17))
    assert (
        event_mapping.event_content(one_day, EventRules(all_day="multi_day"))["isAllDay"] is False
    )
    assert event_mapping.event_content(one_day, EventRules(all_day="true"))["end"]["dateTime"] == (
        "2026-03-29T00:00:00"
    )


def test_reminder_and_category_follow_the_rules():
    default = event_mapping.event_content(task())
    assert default["isReminderOn"] is True
    assert default["reminderMinutesBeforeStart"] == 15
    assert default["categories"] == ["Project task"]
    bare = event_mapping.event_content(task(), EventRules(reminder_minutes=None, category=""))
    assert bare["isReminderOn"] is False
    assert "reminderMinutesBeforeStart" not in bare
    assert bare["categories"] == []


def test_each_life_of_an_event_has_its_own_transaction_id():
    """A retried POST of one snapshot carries the same id (Graph drops the repeat); a create
    of a later snapshot (after a removal, or an assignee leaving and coming back) is another
    life and must not be answered with the event of an earlier one, which Graph may still
    remember after it was deleted."""
    resource = uuid.uuid4()
    first = task()
    retry = task(task_name="same snapshot, another rule")
    later = task(revision=first.revision + timedelta(hours=1))
    reread = task(read_at=first.read_at + timedelta(seconds=1))
    ids = [event_mapping.new_event(t, resource)["transactionId"] for t in (first, retry)]
    assert ids[0] == ids[1]
    others = {event_mapping.new_event(t, resource)["transactionId"] for t in (later, reread)}
    assert len(others | {ids[0]}) == 3


def test_identity_fields_are_deterministic_per_scenario_task_and_assignee():
    resource = uuid.uuid4()
    first = event_mapping.new_event(task(), resource)
    again = event_mapping.new_event(task(task_name="renamed"), resource)
    other = event_mapping.new_event(task(), uuid.uuid4())
    other_scenario = event_mapping.new_event(task(scenario="beta"), resource)
    rewritten = event_mapping.new_event(task(), resource, replaces="AAMk-deleted")
    assert first["transactionId"] == again["transactionId"]
    assert (
        len(
            {
                first["transactionId"],
                other["transactionId"],
                other_scenario["transactionId"],
                rewritten["transactionId"],
            }
        )
        == 4
    )
    assert first["singleValueExtendedProperties"] == [
        {"id": event_mapping.TASK_KEY_PROPERTY, "value": f"acme/{TASK}"},
        {"id": event_mapping.SCENARIO_PROPERTY, "value": "acme"},
    ]


def test_fingerprint_covers_every_mapped_field_and_nothing_else():
    base = event_mapping.fingerprint(event_mapping.event_content(task()))
    assert base == event_mapping.fingerprint(
        event_mapping.event_content(task(read_at=datetime.now(UTC)))
    )
    changed = [
        event_mapping.event_content(task(finish=datetime(2026, 3, 31, 17))),
        event_mapping.event_content(task(project_name="Other")),
        event_mapping.event_content(task(task_url="https://pwa/x")),
        event_mapping.event_content(task(), EventRules(show_as="busy")),
        event_mapping.event_content(task(), EventRules(reminder_minutes=30)),
        event_mapping.event_content(task(), EventRules(category="Work")),
        event_mapping.event_content(task(), EventRules(all_day="true")),
    ]
    assert base not in {event_mapping.fingerprint(c) for c in changed}


def _stored_digest(content: dict) -> str:
    """How the digests in Redis were written before orjson: std json, sorted and compact."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


_TEXT = st.text(st.characters(exclude_categories=("Cs",)))  # lone surrogates cannot be UTF-8
_FIELDS = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_TEXT, _FIELDS, max_size=6))
def test_fingerprint_keeps_the_digests_already_stored(content):
    # A changed digest would PATCH every event of every task once after an upgrade.
    assert event_mapping.fingerprint(content) == _stored_digest(content)


def test_fingerprint_keeps_stored_digests_for_every_character_a_title_can_hold():
    content = event_mapping.event_content(task())
    content["subject"] = "".join(chr(c) for c in range(0x3000)) + "\u2028\ufeff😀\U0010ffff"
    content["categories"] = ["é", "e", "😀", "\uffff", ""]
    assert event_mapping.fingerprint(content) == _stored_digest(content)


def test_tasks_without_sane_dates_have_no_event():
    with pytest.raises(BadMessage):
        event_mapping.event_content(task(start=None))
    with pytest.raises(BadMessage):
        event_mapping.event_content(task(finish=datetime(2026, 3, 1)))
