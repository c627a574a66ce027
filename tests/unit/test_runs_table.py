from services.ops.runs_command import runs_table

RUN = {
    "started_at": "2026-11-24T10:00:00.123456Z",
    "trigger": "schedule",
    "status": "succeeded",
    "duration_seconds": 1.333,
    "full": False,
    "project_ids": [],
    "task_ids": [],
    "projects": {"listed": 100, "read": 1},
    "tasks": {
        "published": 3,
        "unchanged": 97,
        "removed": 1,
        "removals_held": 0,
        "skipped": {"not_flagged": 250, "summary_task": 4},
    },
    "errors": [],
}


def test_one_line_per_run_with_its_counts_and_reasons():
    lines = runs_table([RUN]).splitlines()
    assert len(lines) == 2
    row = lines[1]
    assert row.startswith("2026-11-24 10:00:00  schedule  succeeded")
    assert "1/100" in row and "not_flagged 250; summary_task 4" in row


def test_held_removals_and_errors_stand_out():
    failed = {**RUN, "status": "failed", "errors": ["Project Online answered 503"]}
    held = {**RUN, "tasks": {**RUN["tasks"], "removals_held": 40}}
    text = runs_table([failed, held])
    assert "error: Project Online answered 503" in text
    assert "REMOVALS HELD 40 (deletion guard)" in text


def test_no_runs():
    assert runs_table([]) == "no sync runs yet"
