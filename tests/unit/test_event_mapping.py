import uuid
from datetime import UTC, datetime

import pytest

from common.errors import BadMessage
from common.messages import TaskChanged
from services.event_writer import event_mapping

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
    )
    values.update(overrides)
    return TaskChanged(**values)


def test_times_are_the_same_instants_in_utc_across_a_dst_change():
    content = event_mapping.event_content(task())
    # 09:00 CET (UTC+1) on the 28th, 17:00 CEST (UTC+2) on the 30th.
    assert content["start"] == {"dateTime": "2026-03-28T08:00:00", "timeZone": "UTC"}
    assert content["end"] == {"dateTime": "2026-03-30T15:00:00", "timeZone": "UTC"}


def test_subject_is_the_task_name_and_the_body_is_plain_text():
    content = event_mapping.event_content(task())
    assert content["subject"] == "Pack & label"
    assert content["body"]["contentType"] == "text"
    assert "Project: Office <Move>" in content["body"]["content"]


def test_identity_fields_are_deterministic_per_scenario_task_and_assignee():
    resource = uuid.uuid4()
    first = event_mapping.new_event(task(), resource)
    again = event_mapping.new_event(task(task_name="renamed"), resource)
    other = event_mapping.new_event(task(), uuid.uuid4())
    other_scenario = event_mapping.new_event(task(scenario="beta"), resource)
    assert first["transactionId"] == again["transactionId"]
    assert first["transactionId"] != other["transactionId"] != other_scenario["transactionId"]
    assert first["singleValueExtendedProperties"] == [
        {"id": event_mapping.TASK_KEY_PROPERTY, "value": f"acme/{TASK}"}
    ]


def test_fingerprint_changes_only_with_the_owned_content():
    base = event_mapping.fingerprint(event_mapping.event_content(task()))
    assert base == event_mapping.fingerprint(
        event_mapping.event_content(task(read_at=datetime.now(UTC)))
    )
    assert base != event_mapping.fingerprint(
        event_mapping.event_content(task(finish=datetime(2026, 3, 31, 17)))
    )


def test_tasks_without_sane_dates_have_no_event():
    with pytest.raises(BadMessage):
        event_mapping.event_content(task(start=None))
    with pytest.raises(BadMessage):
        event_mapping.event_content(task(finish=datetime(2026, 3, 1)))
