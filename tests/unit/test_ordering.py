import uuid
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from common.messages import TaskChanged
from services.event_writer.ordering import is_stale, order_key

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def snapshot(revision, read_at):
    return TaskChanged(
        scenario="s",
        project_id=uuid.uuid4(),
        task_id=uuid.uuid4(),
        revision=revision,
        read_at=read_at,
    )


def test_the_publish_time_orders_first_and_the_read_time_breaks_ties():
    old = order_key(snapshot(T0, T0 + timedelta(hours=5)))
    new = order_key(snapshot(T0 + timedelta(microseconds=1), T0))
    reread = order_key(snapshot(T0 + timedelta(microseconds=1), T0 + timedelta(seconds=1)))
    assert old < new < reread
    assert is_stale(old, new) and not is_stale(new, new) and not is_stale(reread, new)
    assert not is_stale(old, None)


def test_offsets_do_not_change_the_order():
    plus_two = timezone(timedelta(hours=2))
    assert order_key(snapshot(T0, T0)) == order_key(
        snapshot(T0.astimezone(plus_two), T0.astimezone(plus_two))
    )


@given(
    st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30)),
    st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_keys_are_the_ones_already_stored(revision, read_at, offset_minutes):
    """Keys recorded in Redis were written with strftime; a new key must compare with them
    as the same instant would have."""
    zone = timezone(timedelta(minutes=offset_minutes))
    stored = "%Y-%m-%dT%H:%M:%S.%fZ"
    task = snapshot(revision.replace(tzinfo=zone), read_at.replace(tzinfo=UTC))
    expected = (
        f"{task.revision.astimezone(UTC).strftime(stored)}|"
        f"{task.read_at.astimezone(UTC).strftime(stored)}"
    )
    assert order_key(task) == expected
