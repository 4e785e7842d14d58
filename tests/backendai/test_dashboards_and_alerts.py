"""The shipped Grafana dashboard (docs/grafana/backendai.json) and Prometheus alert rules
(docs/prometheus/alerts.yml): promtool checks and unit-tests the rules, the dashboard is a valid
Grafana document, and every metric either uses is one the code exports."""
from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry

from helpers import require

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana" / "backendai.json"
RULES = ROOT / "docs" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "docs" / "prometheus" / "alerts_test.yml"
METRIC_NAME = re.compile(r"\b((?:backendai|appproxy|django)_[a-z0-9_]+|up)\b(?!\s*\()")
PROMQL_WORDS = {"up"}  # series Prometheus makes itself for every scrape target


@pytest.fixture
def promtool():
    path = shutil.which("promtool")
    require(path is not None, "promtool (Debian's prometheus)")
    return path


def test_the_alert_rules_pass_promtool_check(promtool):
    done = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_alert_rules_pass_their_promtool_unit_tests(promtool):
    done = subprocess.run([promtool, "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rules_cover_lost_agents_stuck_sessions_5xx_and_proxy_workers():
    rules = {r["alert"]: r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert {"BackendAIAgentLost", "BackendAISessionsStuckPending", "BackendAISessionsStuckStarting",
            "BackendAIHighAPI5xxRate", "BackendAIProxyWorkerDown", "BackendAIProxyWorkerLost"} <= set(rules)
    tested = {t["alertname"] for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for t in case["alert_rule_test"] if t.get("exp_alerts")}
    assert tested >= set(rules) - {"BackendAIAgentMetricsDown", "BackendAIManagerMetricsDown"}
    assert all(r["labels"]["severity"] in ("warning", "critical") and r["annotations"]["summary"]
               for r in rules.values())


def test_the_dashboard_is_a_grafana_dashboard_with_the_promised_panels():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        if panel["type"] != "row":
            assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"])
            assert panel["datasource"]["uid"] == "${datasource}"
    titles = " | ".join(p["title"].lower() for p in panels)
    for topic in ("api requests", "p95", "5xx", "scheduler decisions", "pass time", "pending queue",
                  "agents by status", "proxy requests", "proxy request latency", "background task"):
        assert topic in titles, topic


def exported_names() -> set[str]:
    """Every series name the code exports: the manager's registry (all metric modules loaded),
    the database's gauges, an app-proxy worker's, an agent's and a storage proxy's own registries."""
    for module in ("backendai.urls", "backendai.telemetry", "sessions.scheduler.metrics"):
        importlib.import_module(module)  # every view, middleware and metric module of the manager
    from agents.daemon.metrics import AgentMetrics
    from appproxy.worker.metrics import Metrics
    from backendai.metrics import DatabaseCollector
    from serving.metrics import EndpointCollector
    from storageproxy.prometheus import ProxyMetrics

    local = CollectorRegistry()
    local.register(DatabaseCollector())
    local.register(EndpointCollector())
    names: set[str] = set()
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("_sum", "_count", "_created"), "gauge": ("",), "info": ("_info",), "unknown": ("",)}
    for registry in (REGISTRY, local, Metrics().registry, AgentMetrics("a").registry, ProxyMetrics().registry):
        for family in registry.collect():
            names.add(family.name)
            names.update(family.name + s for s in suffixes.get(family.type, ("",)))
            names.update(sample.name for sample in family.samples)
    return names


def used_names() -> dict[str, set[str]]:
    """{metric name: where it is used} over the dashboard's and the rules' expressions."""
    used: dict[str, set[str]] = {}
    exprs = [(f"panel {p['title']!r}", t["expr"]) for p in json.loads(DASHBOARD.read_text())["panels"]
             for t in p.get("targets", [])]
    exprs += [(f"alert {r['alert']}", r["expr"]) for g in yaml.safe_load(RULES.read_text())["groups"]
              for r in g["rules"]]
    for where, expr in exprs:
        for name in METRIC_NAME.findall(re.sub(r'"[^"]*"', '""', expr)):  # not label values
            used.setdefault(name, set()).add(where)
    return used


@pytest.mark.django_db
def test_every_metric_the_dashboard_and_the_alerts_use_is_exported_by_the_code():
    exported = exported_names()
    used = used_names()
    assert len(used) >= 15  # the expressions were read
    missing = {name: sorted(where) for name, where in used.items() if name not in exported | PROMQL_WORDS}
    assert not missing, f"not exported by the code: {missing}"


@pytest.mark.django_db
def test_the_metric_name_check_notices_a_name_the_code_does_not_export():
    names = METRIC_NAME.findall(re.sub(r'"[^"]*"', '""', 'rate(backendai_no_such_metric_total{x="backendai_y"}[5m])'))
    assert names == ["backendai_no_such_metric_total"]
    exported = exported_names()
    assert "backendai_no_such_metric_total" not in exported
    assert {"backendai_api_request_count_total", "backendai_agent_count", "appproxy_requests_received_http_total",
            "backendai_stat_task_duration_sec_bucket"} <= exported
