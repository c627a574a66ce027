"""Project Server Subscription Edition as a new user meets it: only on-premises settings (Windows
sign-in as DOMAIN\\user, the /pwa site, no API setting), no ProjectData anywhere. The product
finds the ProjectServer REST API by itself; fields, check, a sync, an idle poll, one changed
project and an update in place all work, and nothing ever asks for ProjectData again."""

from __future__ import annotations

import pytest

from tests.e2e.harness import Pipeline, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

ADELE = "adele.vance@contoso.onmicrosoft.com"


def finished_runs(pipeline: Pipeline) -> int:
    return sum(1 for run in pipeline.redis_json_list("poller:runs") if run["status"] == "succeeded")


def sync_and_wait(pipeline: Pipeline, *args: str) -> dict:
    before = finished_runs(pipeline)
    pipeline.cli("sync-now", *args)
    assert wait_for(lambda: finished_runs(pipeline) > before, timeout=60)
    return pipeline.redis_json_list("poller:runs")[0]


def test_a_psse_farm_is_read_through_the_rest_api_with_only_on_premises_settings(se):
    settings = se.env
    assert settings["PWASYNC_PWA_AUTH"] == "sharepoint_onprem"
    assert settings["PWASYNC_PWA_URL"].endswith("/pwa") and "\\" in settings["PWASYNC_PWA_USERNAME"]
    assert "PWASYNC_PWA_API" not in settings

    assert "created Task flag field" in se.cli("fields", "create").stdout
    assert se.cli("fields", "verify").returncode == 0
    check = se.cli("check", "--mailbox", ADELE)
    assert "FAIL" not in check.stdout, check.stdout
    assert "ProjectServer REST API: ProjectData is not there" in check.stdout
    assert "read enterprise resources" in check.stdout and "PWA time zone" in check.stdout

    for name in ("poller", "writer-1", "ledger"):
        se.start(name)
    se.client.flag_tasks(se.client.demo_flag_task_ids(), value=True, publish=True)
    sync_and_wait(se)
    assert wait_for(lambda: se.usage()["endpoints_in_use"] == 4, timeout=60)
    assert len(se.event_keys()) == 6 and set(se.event_keys().values()) == {1}

    # Idle: the project list, one page, and nothing else; never ProjectData.
    se.client.reset_stats()
    run = sync_and_wait(se)
    assert se.client.stats()["pwa"]["by_path"] == {"ProjectServer/Projects": 1}
    assert run["pwa_requests"] == 1 and run["tasks"]["published"] == 0

    # One changed project is read alone, and its event is updated in place.
    [before] = [e for e in se.client.events(ADELE) if e["subject"] == "Kick-off meeting"]
    task = _task_id_of(se, "Kick-off meeting")
    se.client.reset_stats()
    se.client.update_task(task, name="Kick-off meeting (moved room)")
    run = sync_and_wait(se)
    paths = se.client.stats()["pwa"]["by_path"]
    assert paths == {
        "ProjectServer/Projects": 1,
        "ProjectServer/Projects()/Tasks": 1,
        "ProjectServer/Projects()/Assignments": 1,
        # The seed's project has an assignee whose project resource has no e-mail address.
        "ProjectServer/EnterpriseResources": 1,
    }, paths
    assert run["projects"]["read"] == 1 and run["tasks"]["published"] == 1
    assert wait_for(
        lambda: (
            [e["subject"] for e in se.client.events(ADELE) if e["id"] == before["id"]]
            == ["Kick-off meeting (moved room)"]
        ),
        timeout=30,
    )
    assert len(se.event_keys()) == 6

    # --full re-reads everything and changes nothing.
    run = sync_and_wait(se, "--full")
    assert run["tasks"]["published"] == 0 and set(se.event_keys().values()) == {1}
    assert not any(path.startswith("ProjectData") for path in se.client.stats()["pwa"]["by_path"])
    poller_log = se.log_lines("poller")
    chosen = [line for line in poller_log if line["event"] == "PWA API chosen"]
    assert [line["api"] for line in chosen] == ["projectserver"]
    assert set(se.stop_all().values()) == {0}


def _task_id_of(pipeline: Pipeline, name: str) -> str:
    from tests.e2e.test_pipeline import _task_ids_by_name

    return _task_ids_by_name(pipeline)[name]
