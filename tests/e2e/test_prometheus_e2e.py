"""Issue 17's "done when", with a real Prometheus (Debian's ``prometheus``): an operator points it at
the manager's ``/metrics/service_discovery`` and loads ``docs/prometheus/alerts.yml``; it finds and
scrapes the manager's metrics listener, a local agent, an app-proxy worker and the storage proxy; the
families the workload produced come back from its query API with route-pattern labels; every panel of
``docs/grafana/backendai.json`` is valid PromQL against that data; and the alert rules evaluate."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

import httpx
import pytest

from backendai.signing import signed_headers
from proxy_worker_support import LiveProxyWorker

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana" / "backendai.json"
ALERTS = ROOT / "docs" / "prometheus" / "alerts.yml"
AGENT = "prom-e2e"
SERVICES = {"manager", "agent", "appproxy-worker", "storage-proxy"}
# Grafana's variables, as Grafana would fill them in for a short range with a 1 s scrape interval
GRAFANA_VARIABLES = {"$__rate_interval": "15s", "$__interval": "5s", "$interval": "5s", "$__range": "5m",
                     "${__rate_interval}": "15s", "${__interval}": "5s", "${__range}": "5m"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def panel_expressions(panels: list[dict]) -> list[tuple[str, str]]:
    """(panel title, expression) of every query target, rows' nested panels included."""
    found = []
    for panel in panels:
        for target in panel.get("targets", []):
            if target.get("expr"):
                found.append((panel.get("title", ""), target["expr"]))
        found.extend(panel_expressions(panel.get("panels", [])))
    return found


def concrete(expr: str) -> str:
    for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
    return expr


class Prometheus:
    def __init__(self, binary: str, tmp_path: Path, sd_url: str):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = tmp_path / "prometheus.yml"
        self.config.write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [{"job_name": "backendai",
                                "http_sd_configs": [{"url": sd_url, "refresh_interval": "1s"}]}],
        }))
        self.log = tmp_path / "prometheus.log"
        self.argv = [binary, f"--config.file={self.config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                     f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=info"]
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Self:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.argv, cwd=self.config.parent, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def __exit__(self, *exc) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def api(self, path: str, **params) -> dict:
        answer = httpx.get(self.url + path, params=params, timeout=10)
        assert answer.status_code == 200, f"{path} {params}: {answer.status_code} {answer.text}"
        body = answer.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("/api/v1/query", query=expr)["result"]

    def wait_for(self, predicate, what: str, timeout: float = 45):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"prometheus exited\n{self.log.read_text(errors='replace')[-4000:]}"
            try:
                last = predicate()
            except (httpx.HTTPError, AssertionError) as exc:
                last = exc
            if last and not isinstance(last, Exception):
                return last
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what} (last: {last!r})\n"
                             f"{self.log.read_text(errors='replace')[-4000:]}")


def signed(live_stack, keypair, method, target, body=None):
    headers = signed_headers(keypair.access_key, keypair.secret_key, method, target, live_stack.host,
                             content_type="application/json" if body is not None else "text/plain")
    return httpx.request(method, live_stack.url + target, headers=headers, timeout=60,
                         content=json.dumps(body) if body is not None else None)


def start_metrics_listener(live_stack) -> str:
    """``manage.py serve_metrics --listen 127.0.0.1:0`` on the stack's database and multiprocess
    directory (``live_stack`` runs daphne and Celery only); answers its ``host:port``."""
    live_stack.start("metrics", [sys.executable, str(ROOT / "manage.py"), "serve_metrics", "--listen", "127.0.0.1:0"])
    found = live_stack.wait_for(lambda: re.search(r"metrics listener on http://([\d.]+:\d+)/metrics",
                                                  live_stack.full_log("metrics")), timeout=30,
                                what="the metrics listener")
    return found.group(1)


@pytest.fixture
def prometheus_binary(require) -> str:
    """Debian's ``prometheus`` server (before the stack starts): skipped locally, a failure under CI."""
    binary = shutil.which("prometheus")
    require(binary is not None, "Debian's prometheus (apt-get install prometheus; scripts/test installs it)")
    return binary


def test_prometheus_follows_the_service_discovery_and_runs_the_shipped_dashboard_and_alerts(
        prometheus_binary, live_stack, cluster, owner, storage_host):
    from sessions.models import Session
    from vfolders.models import StorageProxy
    from vfolders.services import proxy as storage_proxies

    listener = start_metrics_listener(live_stack)

    # every kind of target the service discovery lists: a local agent, an app-proxy worker, the storage proxy
    live_stack.start_local_agent(AGENT, cluster[1])
    from appproxy import services as proxy_services

    LiveProxyWorker(live_stack, proxy_services.issue_token("prom e2e", authority="prom-e2e")[1], "prom-e2e",
                    log_level="INFO").start()
    storage_proxies.check_all_proxies()  # what beat's health check does: records its metrics address
    assert StorageProxy.objects.exclude(metrics_address="").filter(status="alive").exists()

    sd = httpx.get(f"http://{listener}/metrics/service_discovery", timeout=10).json()
    assert {group["labels"]["service"] for group in sd} == SERVICES, sd

    # a workload: a session that runs on the agent, lookups, a GraphQL query, a refused request
    keypair = owner.main_keypair
    created = signed(live_stack, keypair, "POST", "/session", {
        "image": "local/shell:1.0", "name": "prom-one", "config": {"resources": {"cpu": "0.25", "mem": "256m"}}})
    assert created.status_code in (200, 201), created.text
    live_stack.wait_for(lambda: Session.objects.filter(name="prom-one", status="RUNNING").exists(),
                        what="the session running")
    assert signed(live_stack, keypair, "GET", "/session/prom-one").status_code == 200
    assert signed(live_stack, keypair, "GET", "/session/no-such-session").status_code == 404
    gql = signed(live_stack, keypair, "POST", "/admin/gql", {"query": "query { keypair { access_key } }"})
    assert gql.status_code == 200, gql.text

    with Prometheus(prometheus_binary, live_stack.data_dir.parent, f"http://{listener}/metrics/service_discovery") as prom:
        def all_up():
            targets = prom.api("/api/v1/targets", state="active")["activeTargets"]
            up = {t["labels"].get("service") for t in targets if t["health"] == "up"}
            return targets if up >= SERVICES and all(t["health"] == "up" for t in targets) else None

        targets = prom.wait_for(all_up, what="every discovered target up")
        by_service = {t["labels"]["service"]: t for t in targets}
        assert by_service["manager"]["labels"]["instance"] == listener
        assert by_service["agent"]["labels"]["agent_id"] == AGENT
        assert by_service["appproxy-worker"]["labels"]["worker"] == "prom-e2e"
        assert by_service["storage-proxy"]["labels"]["storage_proxy"]
        assert all(t["scrapeUrl"].startswith("http://127.0.0.1:") for t in targets)

        # the workload's families, as Prometheus stored them
        requests = prom.wait_for(lambda: prom.query(
            'sum by (method, endpoint, status_code) (backendai_api_request_count_total)'), what="API requests")
        seen = {(r["metric"]["method"], r["metric"]["endpoint"], r["metric"]["status_code"]) for r in requests}
        assert {("POST", "session", "201"), ("GET", "session/<str:name>", "200"),
                ("GET", "session/<str:name>", "404")} <= seen, seen
        assert not any("prom-one" in endpoint or "no-such" in endpoint for _, endpoint, _ in seen), seen
        assert prom.query('backendai_graphql_request_count_total{field_name="keypair"}')
        assert prom.query('backendai_agent_count{status="ALIVE"} >= 1')
        assert prom.query('backendai_session_count{status="RUNNING"} >= 1')
        assert prom.query('backendai_action_count_total{domain="session", operation="create"}')
        assert prom.query(f'backendai_sync_container_lifecycle_success_count_total{{agent_id="{AGENT}"}} > 0')
        prom.wait_for(lambda: prom.query(
            f'backendai_container_utilization{{agent_id="{AGENT}", container_metric_name="cpu_util"}}'),
            what="the running kernel's utilization from the agent", timeout=20)
        # each family comes from the process that owns it, once: the agent's and the worker's own metrics
        # are not also summed into the manager listener's multiprocess scrape (which would count them twice)
        assert prom.query('backendai_sync_container_lifecycle_trigger_count_total{service="agent"}')
        assert prom.query('appproxy_alive_circuits{service="appproxy-worker"}')
        leaked = prom.query('count by (__name__) ({service="manager", __name__=~"backendai_(stat_task|sync_container'
                            '|container_utilization|storage_volume|storage_api).*|appproxy_.*"})')
        assert leaked == [], leaked
        assert prom.query('up{service="appproxy-worker"} == 1')
        assert prom.query('up{service="storage-proxy"} == 1')

        # every panel of the shipped dashboard is PromQL that Prometheus runs against this data
        expressions = panel_expressions(json.loads(DASHBOARD.read_text())["panels"])
        assert len(expressions) >= 20
        for title, expr in expressions:
            answer = httpx.get(prom.url + "/api/v1/query", params={"query": concrete(expr)}, timeout=10)
            assert answer.status_code == 200 and answer.json()["status"] == "success", (title, expr, answer.text)
        # the dashboard's API rate panel draws the workload once two scrapes are in
        api_rate = next(expr for _, expr in expressions if "rate(backendai_api_request_count_total[" in expr)
        rates = prom.wait_for(lambda: prom.query(concrete(api_rate)), what="the API rate panel's data")
        assert {"session", "session/<str:name>"} <= {r["metric"]["endpoint"] for r in rates}, rates
        assert prom.query("sum by (status) (backendai_agent_count)")

        # the shipped alert rules are loaded and evaluate
        def rules_ok():
            groups = prom.api("/api/v1/rules", type="alert")["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            return rules if rules and all(rule["health"] == "ok" for rule in rules) else None

        rules = prom.wait_for(rules_ok, what="the alert rules evaluated", timeout=20)
        names = {rule["name"] for rule in rules}
        assert {"BackendAIAgentLost", "BackendAIManagerMetricsDown", "BackendAIProxyWorkerDown",
                "BackendAIHighAPI5xxRate"} <= names, names
        # nothing is down or lost here: the target-down and lost alerts stay inactive
        states = {rule["name"]: rule["state"] for rule in rules}
        for name in ("BackendAIAgentLost", "BackendAIManagerMetricsDown", "BackendAIProxyWorkerDown",
                     "BackendAIAgentMetricsDown", "BackendAIStorageProxyDown"):
            assert states.get(name) == "inactive", states
