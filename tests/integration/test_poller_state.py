"""The poller's Redis edge on the real Redis: state, run lease and coalescing, token cache."""

import json
import threading
import uuid
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from common.errors import ConfigError
from common.messages import SyncRequested
from common.redis_store import Keys
from common.token_cache import TokenCacheStore
from services.poller.changes import ProjectState
from services.poller.coordination import QueuedRequest, RunCoordinator
from services.poller.state import MAX_RUNS_KEPT, PollerState

BERLIN = ZoneInfo("Europe/Berlin")

pytestmark = pytest.mark.integration


def test_sync_start_is_set_once(redis_client, redis_url, scenario):
    state = PollerState(redis_client, Keys(scenario), redis_url)
    assert state.start() is None
    assert state.initialize_start(datetime(2026, 1, 1, 9, 30)) == datetime(2026, 1, 1, 9, 30)
    assert state.initialize_start(datetime(2027, 1, 1)) == datetime(2026, 1, 1, 9, 30)


def test_the_skeletons_watermark_becomes_the_sync_start(redis_client, redis_url, scenario):
    redis_client.set(Keys(scenario).watermark, "2025-05-05T10:00:00")
    state = PollerState(redis_client, Keys(scenario), redis_url)
    assert state.initialize_start(datetime(2026, 1, 1)) == datetime(2025, 5, 5, 10)


def test_projects_and_fingerprints_round_trip(redis_client, redis_url, scenario):
    state = PollerState(redis_client, Keys(scenario), redis_url)
    project, task = str(uuid.uuid4()), str(uuid.uuid4())
    saved = ProjectState(datetime(2026, 11, 1, 8, 0, 0, 123000), 0, datetime(2026, 11, 1, 9))
    state.save_project(project, saved)
    revision = datetime(2026, 11, 1, 7, 0, 0, 123000, tzinfo=UTC)
    state.record_published(project, [(task, "abc", revision.astimezone(BERLIN))])
    assert state.projects() == {project: saved}
    assert state.published_tasks(project) == {task: "abc"}
    assert state.published_revisions(project) == {task: revision}
    state.record_removed(project, [task])
    assert state.published_tasks(project) == {}
    # A fingerprint recorded before revisions were kept: its revision is unknown.
    redis_client.hset(f"pwasync:{{{scenario}}}:poller:tasks:{project}", str(task), "abc")
    assert state.published_tasks(project) == {task: "abc"}
    assert state.published_revisions(project) == {task: None}
    state.forget_project(project)
    assert state.projects() == {} and state.published_tasks(project) == {}
    assert redis_client.keys(f"pwasync:{{{scenario}}}:poller:tasks:*") == []


def test_run_summaries_are_kept_newest_first_and_capped(redis_client, redis_url, scenario):
    state = PollerState(redis_client, Keys(scenario), redis_url)
    for number in range(MAX_RUNS_KEPT + 5):
        state.record_run({"run_id": str(number)})
    assert redis_client.llen(f"pwasync:{{{scenario}}}:poller:runs") == MAX_RUNS_KEPT
    assert [r["run_id"] for r in state.runs(limit=2)] == [
        str(MAX_RUNS_KEPT + 4),
        str(MAX_RUNS_KEPT + 3),
    ]


def request(correlation_id, **fields):
    return QueuedRequest(SyncRequested(scenario="s", **fields), correlation_id)


def ids(batch):
    return [q.correlation_id for q in batch]


def test_one_run_at_a_time_and_overlapping_requests_coalesce(redis_client, redis_url, scenario):
    replica_a = RunCoordinator(redis_client, Keys(scenario), redis_url)
    replica_b = RunCoordinator(redis_client, Keys(scenario), redis_url)
    assert replica_a.has_work() is False
    replica_a.enqueue(request("first"))
    assert replica_a.has_work() is True
    owner = replica_a.try_lease()
    assert owner is not None
    assert replica_b.try_lease() is None
    assert ids(replica_a.take(owner)) == ["first"]
    replica_b.enqueue(request("second"))
    replica_b.enqueue(request("third", full=True))
    assert replica_a.finish(owner) is False  # requests are waiting: keep the lease
    assert ids(replica_a.take(owner)) == ["second", "third"]
    assert replica_a.finish(owner) is True
    assert replica_a.has_work() is False
    assert replica_b.try_lease() is not None  # free again


def test_a_dead_holders_taken_requests_are_resumed_by_the_next_holder(
    redis_client, redis_url, scenario
):
    dead = RunCoordinator(redis_client, Keys(scenario), redis_url)
    dead.enqueue(request("scoped", project_ids=[str(uuid.uuid4())], allow_deletions=True))
    owner = dead.try_lease()
    assert ids(dead.take(owner)) == ["scoped"]
    redis_client.delete(f"pwasync:{{{scenario}}}:poller:lock")  # SIGKILL; the lease expired

    nxt = RunCoordinator(redis_client, Keys(scenario), redis_url)
    nxt.enqueue(request("later"))
    assert nxt.has_work() is True
    heir = nxt.try_lease()
    assert heir is not None
    assert dead.take(owner) is None  # the stalled holder cannot take any more
    assert ids(nxt.take(heir)) == ["scoped", "later"]
    assert dead.finish(owner) is True  # ...nor clear what the heir runs
    assert ids(nxt.take(heir)) == ["scoped", "later"]
    assert nxt.finish(heir) is True
    assert nxt.has_work() is False
    assert redis_client.exists(f"pwasync:{{{scenario}}}:poller:lock") == 0


def test_a_lease_is_renewed_only_by_its_owner(redis_client, redis_url, scenario):
    coordinator = RunCoordinator(redis_client, Keys(scenario), redis_url)
    owner = coordinator.try_lease()
    assert coordinator.renew(owner) and not coordinator.renew("someone-else")
    redis_client.delete(f"pwasync:{{{scenario}}}:poller:lock")  # the owner died; lease expired
    assert coordinator.renew(owner) is False


def test_a_lost_lease_is_reported_to_the_run(redis_client, redis_url, scenario, monkeypatch):
    monkeypatch.setattr("services.poller.coordination.RENEW_EVERY_SECONDS", 0.05)
    coordinator = RunCoordinator(redis_client, Keys(scenario), redis_url)
    owner = coordinator.try_lease()
    lost = threading.Event()
    with coordinator.kept_alive(owner, lost):
        redis_client.set(f"pwasync:{{{scenario}}}:poller:lock", "another replica")
        assert lost.wait(5)


def test_each_scheduled_tick_is_claimed_once(redis_client, redis_url, scenario):
    coordinator = RunCoordinator(redis_client, Keys(scenario), redis_url)
    due = datetime(2026, 11, 24, 6, 0)
    assert coordinator.claim_tick(due, "a") is True
    assert coordinator.claim_tick(due, "b") is False
    # Asking again (a lost answer) is safe; the same instant in another zone is the same tick.
    assert coordinator.claim_tick(due, "a") is True
    assert coordinator.claim_tick(due.replace(tzinfo=UTC).astimezone(BERLIN), "b") is False


def test_the_token_cache_is_stored_encrypted(redis_client, redis_url, scenario):
    store = TokenCacheStore(redis_client, Keys(scenario), redis_url, "correct horse battery")
    assert store.load() is None
    secret = json.dumps({"RefreshToken": {"x": {"secret": "refresh-token-value"}}})
    store.save(secret)
    raw = redis_client.get(store.key)
    assert "refresh-token-value" not in raw and json.loads(raw)["kdf"] == "scrypt"
    assert store.load() == secret
    other = TokenCacheStore(redis_client, Keys(scenario), redis_url, "another key")
    with pytest.raises(ConfigError, match="PWASYNC_SECRET_KEY does not decrypt"):
        other.load()
    envelope = json.loads(raw)
    envelope["token"] = envelope["token"][:-4] + "AAAA"
    redis_client.set(store.key, json.dumps(envelope))
    with pytest.raises(ConfigError, match="tampered"):
        store.load()
