import uuid

from services.event_writer.planner import (
    Create,
    Delete,
    DesiredEvent,
    Keep,
    Move,
    RecordedEvent,
    Update,
    plan,
)

A, B, C = (uuid.uuid4() for _ in range(3))


def desired(resource, mailbox="a@x.com", fp="f1"):
    return DesiredEvent(resource, mailbox, {"subject": "t"}, fp)


def recorded(resource, mailbox="a@x.com", fp="f1", event_id="e1"):
    return RecordedEvent(resource, mailbox, event_id, fp)


def test_new_assignees_get_created():
    assert plan([desired(A)], {}) == [Create(desired(A))]


def test_unchanged_events_are_kept_and_changed_ones_updated_in_place():
    actions = plan(
        [desired(A), desired(B, "b@x.com", fp="new")],
        {A: recorded(A), B: recorded(B, "b@x.com", fp="old", event_id="e2")},
    )
    assert actions == [
        Keep(recorded(A)),
        Update(desired(B, "b@x.com", fp="new"), recorded(B, "b@x.com", fp="old", event_id="e2")),
    ]


def test_removed_assignees_lose_their_event():
    assert plan([desired(A)], {A: recorded(A), C: recorded(C, "c@x.com")}) == [
        Keep(recorded(A)),
        Delete(recorded(C, "c@x.com")),
    ]


def test_a_removal_deletes_everything_recorded():
    assert plan([], {A: recorded(A)}) == [Delete(recorded(A))]


def test_a_changed_mailbox_moves_the_event():
    actions = plan([desired(A, "new@x.com")], {A: recorded(A, "old@x.com")})
    assert actions == [Move(desired(A, "new@x.com"), recorded(A, "old@x.com"))]


def test_mailbox_case_does_not_count_as_a_change():
    assert plan([desired(A, "a@x.com")], {A: recorded(A, "A@X.com")}) == [
        Keep(recorded(A, "A@X.com"))
    ]
