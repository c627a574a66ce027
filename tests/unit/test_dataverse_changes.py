"""Planner premium change detection's deciding logic: which projects a table's read says
changed, what is kept of each row, and how stamps move."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.poller.dataverse_changes import (
    ASSIGNMENTS,
    LABELS,
    LINKS,
    STAMP_STEP,
    TASKS,
    Entry,
    Fold,
    Observed,
    fold_table,
    next_stamp,
    watched_tables,
    watermark_after,
)

P1, P2 = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
T1, T2 = "aaaaaaaa-0000-0000-0000-000000000001", "aaaaaaaa-0000-0000-0000-000000000002"
L1 = "bbbbbbbb-0000-0000-0000-000000000001"
NOW = datetime(2026, 12, 2, 10, tzinfo=UTC)


def task(task_id, project, modified="2026-12-02T09:00:00Z", version="7"):
    return {
        "msdyn_projecttaskid": task_id,
        "_msdyn_project_value": project,
        "modifiedon": modified,
        "versionnumber": version,
    }


def test_a_new_row_changes_its_project_at_its_modifiedon():
    fold = Fold()
    fold_table(TASKS, Observed([task(T1, P1)]), {}, {}, fold)
    assert fold.changed == {P1: datetime(2026, 12, 2, 9, tzinfo=UTC)}
    assert fold.keep[TASKS.entity_set][T1] == Entry(P1, "2026-12-02T09:00:00Z", "7")


def test_a_row_seen_again_unchanged_changes_nothing_but_a_delta_row_always_does():
    known = {T1: Entry(P1, "2026-12-02T09:00:00Z", "7")}
    fold = Fold()
    fold_table(TASKS, Observed([task(T1, P1)]), known, {}, fold)
    assert fold.changed == {} and fold.keep[TASKS.entity_set] == {}
    fold = Fold()
    fold_table(TASKS, Observed([task(T1, P1)], changes_only=True), known, {}, fold)
    assert set(fold.changed) == {P1}


def test_a_second_save_within_the_same_second_is_a_change():
    known = {T1: Entry(P1, "2026-12-02T09:00:00Z", "7")}
    fold = Fold()
    fold_table(TASKS, Observed([task(T1, P1, version="8")]), known, {}, fold)
    assert set(fold.changed) == {P1}


def test_deletions_name_the_project_they_were_kept_under():
    known = {T1: Entry(P1, "x", "1"), T2: Entry(P2, "x", "2")}
    fold = Fold()
    fold_table(TASKS, Observed([], deleted=[T1]), known, {}, fold)
    assert fold.changed == {P1: None} and fold.drop[TASKS.entity_set] == {T1}
    # A complete listing: what it does not list is gone.
    fold = Fold()
    fold_table(TASKS, Observed([task(T1, P1, "x", "1")], complete=True), known, {}, fold)
    assert fold.changed == {P2: None} and fold.drop[TASKS.entity_set] == {T2}


def test_a_link_finds_its_project_through_its_label_or_else_its_task():
    link = {
        "msdyn_projecttasktolabelid": "cccccccc-0000-0000-0000-000000000001",
        "_msdyn_projectlabelid_value": L1,
        "_msdyn_projecttaskid_value": T2,
        "modifiedon": "2026-12-02T09:30:00Z",
        "versionnumber": "3",
    }
    fold = Fold()
    fold_table(LINKS, Observed([link]), {}, {LABELS.entity_set: {L1: Entry(P1, "x")}}, fold)
    assert set(fold.changed) == {P1}
    fold = Fold()
    fold_table(LINKS, Observed([link]), {}, {TASKS.entity_set: {T2: Entry(P2, "x")}}, fold)
    assert set(fold.changed) == {P2}
    fold = Fold()
    fold_table(LINKS, Observed([link]), {}, {}, fold)
    assert fold.changed == {} and fold.unresolved == 1


def test_a_row_moved_to_another_project_changes_both():
    known = {T1: Entry(P1, "x", "1")}
    fold = Fold()
    fold_table(TASKS, Observed([task(T1, P2)]), known, {}, fold)
    assert set(fold.changed) == {P1, P2}


def test_stamps_only_move_forward():
    earlier = datetime(2026, 12, 1, tzinfo=UTC)
    later = datetime(2026, 12, 2, 9, tzinfo=UTC)
    assert next_stamp(None, later, NOW) == later
    assert next_stamp(None, None, NOW) == NOW  # a deletion alone
    assert next_stamp(later, earlier, NOW) == later + STAMP_STEP  # a late row
    assert next_stamp(earlier, None, NOW) == earlier + STAMP_STEP
    assert next_stamp(earlier, later, NOW) == later


def test_watermarks_and_the_tables_watched():
    rows = [{"modifiedon": "2026-12-02T09:00:00Z"}, {"modifiedon": "2026-12-02T08:00:00Z"}]
    assert watermark_after(None, rows) == datetime(2026, 12, 2, 9, tzinfo=UTC)
    assert watermark_after(NOW, rows) == NOW
    assert watermark_after(None, []) is None
    assert watched_tables("label") == (TASKS, ASSIGNMENTS, LABELS, LINKS)
    assert watched_tables("field") == (TASKS, ASSIGNMENTS)
    assert "versionnumber" in TASKS.columns and "_msdyn_project_value" in TASKS.columns
    assert timedelta(0) < STAMP_STEP
