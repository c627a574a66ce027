import uuid

from common.messages import SyncRequested
from services.poller.coordination import QueuedRequest, merge_requests


def queued(correlation_id, **request):
    return QueuedRequest(SyncRequested(scenario="s", **request), correlation_id)


def test_nothing_queued_means_no_run():
    assert merge_requests([]) == []


def test_unscoped_requests_coalesce_into_one_run_full_if_any_asked_for_it():
    runs = merge_requests([queued("a"), queued("b", full=True), queued("c", trigger="schedule")])
    assert runs == [(SyncRequested(scenario="s", full=True), ["a", "b", "c"])]


def test_only_scheduled_requests_keep_the_schedule_trigger():
    [(request, _)] = merge_requests([queued("a", trigger="schedule")])
    assert request.trigger == "schedule"


def test_scoped_requests_coalesce_into_one_run_over_the_union_of_their_ids():
    p1, p2, t1 = uuid.UUID(int=1), uuid.UUID(int=2), uuid.UUID(int=3)
    runs = merge_requests(
        [queued("a", project_ids=[p2]), queued(None), queued("b", project_ids=[p1], task_ids=[t1])]
    )
    assert runs == [
        (SyncRequested(scenario="s"), []),
        (SyncRequested(scenario="s", project_ids=[p1, p2], task_ids=[t1]), ["a", "b"]),
    ]


def test_queued_requests_survive_their_json_form():
    original = queued("c", project_ids=[uuid.UUID(int=5)], full=True)
    assert QueuedRequest.from_json(original.to_json()) == original


def test_the_tick_key_names_the_instant_to_the_second():
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from common.redis_store import Keys
    from services.poller.state import PollerKeys

    keys = PollerKeys(Keys("s"))
    due = datetime(2026, 11, 24, 10, 15, tzinfo=ZoneInfo("Europe/Berlin"))
    same_instant = datetime(2026, 11, 24, 9, 15, 0, 123456, tzinfo=UTC)
    assert (
        keys.tick(due) == keys.tick(same_instant) == "pwasync:{s}:poller:tick:2026-11-24T09:15:00Z"
    )
