"""The alert rules and the dashboard: valid PromQL (promtool), alerts that fire when they should
(promtool's rule tests), and only metrics and labels that common/metrics.py defines."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from common import metrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "pwasync-alerts.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "pwasync-alerts.test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "pwasync.json"

#: What issue 15 asks the alerts to tell a human.
EXPECTED_ALERTS = {
    "PwasyncWriterNoProgress",  # a writer making no progress while its queue has work
    "PwasyncWritersAbsent",
    "PwasyncDeadLetters",
    "PwasyncDeletionGuardAlarm",
    "PwasyncSyncFailing",
    "PwasyncSyncOverdue",  # not run when its schedule says it should
    "PwasyncPwaSignInRequired",  # needs `pwasync connect`
    "PwasyncThrottledSustained",
    "PwasyncEndpointsNearLimit",
    "PwasyncEndpointLimitReached",
}
AGGREGATION_BY = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"\b(pwasync_[a-z0-9_]+)\s*(\{[^}]*\})?")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def _promtool() -> str:
    found = shutil.which("promtool")
    assert found, (
        "promtool is needed to check the alert rules: apt-get install prometheus (Debian's "
        "package has it; .ci/run installs it)"
    )
    return found


def _defined() -> dict[str, set[str]]:
    """Every sample name the code exports -> the labels it carries."""
    samples: dict[str, set[str]] = {}
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        labels = set(value._labelnames)
        suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_sum", "_count"]}
        for suffix in suffixes[value._type]:
            samples[value._name + suffix] = labels
        if value._type == "histogram":
            samples[value._name + "_bucket"] = labels | {"le"}
    return samples


def _rule_expressions() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _dashboard_expressions() -> dict[str, str]:
    return {
        f"{panel['title']} {target['refId']}": target["expr"]
        for panel in _dashboard()["panels"]
        for target in panel.get("targets", [])
    }


def test_the_rules_pass_promtool_check():
    result = subprocess.run(
        [_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_alert_fires_when_it_should_and_only_then():
    result = subprocess.run(
        [_promtool(), "test", "rules", RULE_TESTS.name],
        capture_output=True,
        text=True,
        cwd=RULE_TESTS.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_the_issue_asks_for_exists_and_is_tested():
    assert set(_rule_expressions()) == EXPECTED_ALERTS
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert tested == EXPECTED_ALERTS


def _check_names(expressions: dict[str, str]) -> list[str]:
    """Problems: a metric the code does not define, or a label it does not carry."""
    defined, problems = _defined(), []
    for where, expr in expressions.items():
        used = SELECTOR.findall(expr)
        assert used, f"{where}: names no pwasync metric"
        labels_here: set[str] = set()
        for name, selector in used:
            if name not in defined:
                problems.append(f"{where}: {name} is not defined in common/metrics.py")
                continue
            labels_here |= defined[name]
            for label in MATCHER.findall(selector or ""):
                if label not in defined[name]:
                    problems.append(f"{where}: {name} has no label {label}")
        for group in AGGREGATION_BY.findall(expr):
            for label in filter(None, (part.strip() for part in group.split(","))):
                if label not in labels_here:
                    problems.append(f"{where}: no metric here has the label {label}")
    return problems


def test_the_rules_name_only_defined_metrics_and_labels():
    assert _check_names(_rule_expressions()) == []


def test_the_dashboard_names_only_defined_metrics_and_labels():
    assert _check_names(_dashboard_expressions()) == []


def test_the_name_check_catches_a_missing_metric_and_label():
    problems = _check_names({"x": 'sum by (mailbox) (pwasync_nothing{queue="q"})'})
    assert problems == [
        "x: pwasync_nothing is not defined in common/metrics.py",
        "x: no metric here has the label mailbox",
    ]
    assert _check_names({"y": 'pwasync_throttled_total{queue="q"}'}) == [
        "y: pwasync_throttled_total has no label queue"
    ]


def test_the_dashboard_queries_are_valid_promql(tmp_path):
    # promtool parses PromQL only inside rules: each query becomes a recording rule.
    rules = [
        {"record": f"pwasync:dashboard:{i}", "expr": expr.replace("$scenario", "default")}
        for i, expr in enumerate(_dashboard_expressions().values())
    ]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([_promtool(), "check", "rules", str(path)], capture_output=True)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_the_dashboard_is_well_formed():
    dashboard = _dashboard()
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "scenario"}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
            assert panel["targets"], panel["title"]
    titles = " ".join(p["title"] for p in panels).lower()
    for topic in ("throughput", "backlog", "retries", "dead letters", "throttling", "sync run",
                  "duration", "endpoints in use against"):  # fmt: skip
        assert topic in titles, topic


@pytest.mark.parametrize("path", [RULES, RULE_TESTS])
def test_the_rule_files_are_yaml(path):
    assert yaml.safe_load(path.read_text())
