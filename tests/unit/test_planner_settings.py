"""The basic Planner settings: id lists, and one clear line when neither is given."""

from __future__ import annotations

import pytest

from common.errors import ConfigError
from common.settings import load_settings


def test_plan_and_group_ids_are_comma_separated_kept_in_order_once_and_case_sensitive():
    settings = load_settings(
        {"PWASYNC_PLANNER_PLANS": " aB-c_1 , Ab-c_1,aB-c_1,", "PWASYNC_PLANNER_GROUPS": "g1"}
    )
    assert settings.planner_plan_ids == ["aB-c_1", "Ab-c_1"]
    assert settings.planner_group_ids == ["g1"]


def test_reading_planner_needs_plans_or_groups_and_the_graph_app():
    with pytest.raises(ConfigError, match="PWASYNC_PLANNER_PLANS or PWASYNC_PLANNER_GROUPS"):
        load_settings({}).require_planner()
    with pytest.raises(ConfigError, match="PWASYNC_TENANT_ID.* to read basic Planner plans"):
        load_settings({"PWASYNC_PLANNER_GROUPS": "g1"}).require_planner()


def test_the_planner_source_selects_by_label_only_and_needs_no_pwa():
    from services.poller.sources import require_source

    graph = {
        "PWASYNC_SOURCE": "planner",
        "PWASYNC_PLANNER_PLANS": "xqQg5FS2LkCp935s-FIFm2QAFkHM",
        "PWASYNC_TENANT_ID": "contoso.onmicrosoft.com",
        "PWASYNC_GRAPH_CLIENT_ID": "app",
        "PWASYNC_GRAPH_CLIENT_SECRET": "secret",
    }
    require_source(load_settings(graph))  # no PWASYNC_PWA_URL needed
    with pytest.raises(ConfigError, match="PWASYNC_SELECT_BY=field: basic Planner"):
        require_source(load_settings({**graph, "PWASYNC_SELECT_BY": "field"}))
    with pytest.raises(ConfigError, match="PWASYNC_PLANNER_PLANS or PWASYNC_PLANNER_GROUPS"):
        require_source(load_settings({**graph, "PWASYNC_PLANNER_PLANS": " , "}))
