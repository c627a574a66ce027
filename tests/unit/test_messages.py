import json
import uuid
from datetime import UTC, datetime

import pytest

from common.errors import BadMessage
from common.messages import (
    SyncRequested,
    TaskChanged,
    TransferSucceeded,
    decode,
    decode_transfers,
    encode,
    transfers_message,
)


def test_an_empty_sync_request_means_default_scenario_incremental():
    request = decode(b"{}", SyncRequested)
    assert request == SyncRequested(scenario="default", project_ids=[], task_ids=[], full=False)


def test_the_interface_pages_example_is_accepted():
    body = b'{"scenario": "default", "project_ids": [], "task_ids": [], "full": false}'
    assert decode(body, SyncRequested).scenario == "default"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not UTF-8 JSON"),
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"projects_ids": []}', "projects_ids: Extra inputs are not permitted"),
        (b'{"project_ids": ["two words"]}', "project_ids.0"),
        (b'{"task_ids": [""]}', "task_ids.0"),
        (b'{"task_ids": [42]}', "task_ids.0"),
        (b'{"full": "maybe"}', "full"),
    ],
)
def test_bad_sync_requests_are_bad_messages_with_a_reason(body, reason):
    with pytest.raises(BadMessage, match=reason):
        decode(body, SyncRequested)


def _task(**overrides):
    values = dict(
        scenario="s",
        project_id=uuid.uuid4(),
        task_id=uuid.uuid4(),
        task_name="Pack",
        start=datetime(2026, 12, 1, 8),
        finish=datetime(2026, 12, 1, 17),
        timezone="Europe/Berlin",
        revision=datetime(2026, 11, 24, tzinfo=UTC),
    )
    values.update(overrides)
    return TaskChanged(**values)


def test_task_changed_round_trips():
    message = _task()
    assert decode(encode(message), TaskChanged) == message


def test_an_unknown_schema_version_is_refused_not_guessed():
    data = json.loads(encode(_task()))
    data["v"] = 2
    with pytest.raises(BadMessage, match="unsupported TaskChanged schema version 2"):
        decode(json.dumps(data).encode(), TaskChanged)


def test_unknown_fields_of_internal_messages_are_ignored_for_forward_compatibility():
    data = json.loads(encode(_task()))
    data["added_later"] = True
    assert decode(json.dumps(data).encode(), TaskChanged).task_name == "Pack"


def test_task_times_must_be_wall_clock_and_zone_must_exist():
    with pytest.raises(ValueError):
        _task(start=datetime(2026, 12, 1, 8, tzinfo=UTC))
    with pytest.raises(ValueError):
        _task(timezone="Nowhere/Town")


@pytest.mark.parametrize("start", [datetime(1, 1, 1), datetime(1983, 12, 31), datetime(9999, 1, 1)])
def test_a_task_outside_the_dates_project_can_schedule_is_a_bad_message(start):
    data = json.loads(encode(_task()))
    data["start"] = start.isoformat()
    with pytest.raises(BadMessage, match="start: .*outside the dates Project can schedule"):
        decode(json.dumps(data).encode(), TaskChanged)


def test_transfer_needs_an_aware_time():
    with pytest.raises(ValueError):
        TransferSucceeded(
            scenario="s",
            project_id=uuid.uuid4(),
            task_id=uuid.uuid4(),
            transferred_at=datetime(2026, 1, 1),
        )


def test_both_versions_of_transfer_succeeded_are_read_as_their_transfers():
    at = datetime(2026, 12, 1, 9, tzinfo=UTC)
    one = TransferSucceeded(scenario="s", project_id="p", task_id="a", transferred_at=at)
    other = one.model_copy(update={"task_id": "b", "mailboxes": ["adele@contoso.com"]})
    batch = encode(transfers_message([(one, "run-1"), (other, None)]))
    assert json.loads(batch)["v"] == 2
    assert decode_transfers(batch) == [(one, "run-1"), (other, None)]
    assert decode_transfers(encode(one)) == [(one, None)]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"v": 3, "scenario": "s", "transfers": []}', "schema version 3"),
        (b'{"v": 2, "scenario": "s", "transfers": []}', "transfers: List should have at least"),
        (b'{"v": 2, "transfers": [{"task_id": "a"}]}', "scenario: Field required"),
    ],
)
def test_a_transfer_batch_that_cannot_be_read_is_a_bad_message(body, reason):
    with pytest.raises(BadMessage, match=reason):
        decode_transfers(body)
