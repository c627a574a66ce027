"""The control surface and the process lifecycle."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from sandbox.client import SandboxClient, SandboxError
from tests.sandbox.conftest import RunningSandbox, start_sandbox


def test_project_lifecycle_moves_modified_dates(control: SandboxClient) -> None:
    resources = {r["name"]: r["id"] for r in control.tenant()["resources"]}
    created = control.create_project(
        "Control test",
        [
            {"name": "Phase"},
            {
                "name": "Work",
                "parent": 0,
                "start": "2027-02-01T08:00:00",
                "finish": "2027-02-01T17:00:00",
                "assignees": [resources["Adele Vance"]],
            },
        ],
    )
    first_modified = created["modified"]
    phase, work = created["task_ids"]
    control.update_task(work, name="Renamed", assignees=[resources["Lee Gu"]])
    tenant = control.tenant()
    project = next(p for p in tenant["projects"] if p["id"] == created["project_id"])
    assert project["modified"] > first_modified
    removed = control.delete_task(phase)
    assert sorted(removed["removed_task_ids"]) == sorted([phase, work])
    control.delete_project(created["project_id"])
    assert created["project_id"] not in {p["id"] for p in control.tenant()["projects"]}


def test_errors_are_reported(control: SandboxClient) -> None:
    with pytest.raises(SandboxError) as unknown_task:
        control.update_task("00000000-0000-0000-0000-000000000000", name="x")
    assert unknown_task.value.status == 404
    with pytest.raises(SandboxError) as bad_setting:
        control.config(mailbox_concurency_limit=2)
    assert bad_setting.value.status == 400
    with pytest.raises(SandboxError) as not_yet:
        control.generate(flagged=True)
    assert not_yet.value.status == 409


def test_generate_and_stats(control: SandboxClient) -> None:
    generated = control.generate(
        projects=2,
        tasks_per_project=5,
        flagged=True,
        ensure_field=True,
        assignees_per_task=2,
        mailboxes=3,
    )
    assert len(generated["project_ids"]) == 2 and len(generated["task_ids"]) == 10
    assert len(generated["mailboxes"]) == 3
    assert control.config()["mailbox_concurrency_limit"] == 4
    assert control.stats()["graph"]["requests"] == 0


def test_sigterm_exits_cleanly(tmp_path: Path) -> None:
    running: RunningSandbox = start_sandbox(tmp_path, "--latency-ms", "5")
    with SandboxClient(running.url, running.ca_file) as client:
        assert client.health()["status"] == "ok"
    assert (tmp_path / "ca.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
    env = (tmp_path / "sandbox.env").read_text()
    assert f"PWASYNC_SANDBOX_URL={running.url}\n" in env
    running.process.send_signal(signal.SIGTERM)
    assert running.process.wait(timeout=10) == 0


def test_readme_lists_the_demo_tasks(control: SandboxClient) -> None:
    readme = (Path(__file__).parents[2] / "sandbox" / "README.md").read_text()
    assert all(task_id in readme for task_id in control.demo_flag_task_ids())
