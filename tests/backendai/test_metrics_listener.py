"""Where the manager's metrics are served: the internal listener (``manage.py serve_metrics``) with
``/metrics`` and ``/metrics/service_discovery`` (Prometheus HTTP SD from the database), the public
port's ``/metrics`` only with ``METRICS_PUBLIC``, and the daemons' metrics addresses."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.utils import timezone

from agents import services as agent_services
from agents.models import Agent, AgentStatus
from appproxy import services as proxy_services
from appproxy.models import Worker, WorkerStatus
from backendai.config import ConfigError, load
from backendai.metrics import MetricsServer, service_discovery
from helpers import slug

ROOT = Path(__file__).resolve().parents[2]


def make_agent(agent_id, status=AgentStatus.ALIVE, metrics_address="", **fields):
    group = agent_services.ensure_default_scaling_group()
    return Agent.objects.create(id=agent_id, scaling_group=group, status=status, metrics_address=metrics_address,
                                **fields)


def make_worker(name, status=WorkerStatus.ALIVE, metrics_address=""):
    return Worker.objects.create(authority=name, status=status, metrics_address=metrics_address,
                                 advertised_host="127.0.0.1", api_endpoint=f"http://{name}:6130", secret="s" * 40,
                                 port_range_start=40000, port_range_end=40009, last_heartbeat=timezone.now())


def request(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


# --- service discovery --------------------------------------------------------------------------

@pytest.mark.django_db
def test_service_discovery_lists_the_manager_and_every_live_agent_and_worker_but_no_lost_or_ended_one(settings):
    make_agent("node-a", metrics_address="10.0.0.5:6003", region="r1")
    make_agent("node-b", metrics_address="10.0.0.6:6003")
    make_agent("node-lost", status=AgentStatus.LOST, metrics_address="10.0.0.7:6003")
    make_agent("node-gone", status=AgentStatus.TERMINATED, metrics_address="10.0.0.8:6003")
    make_agent("node-silent")  # reported no metrics endpoint
    make_worker("proxy-1", metrics_address="10.0.1.5:6130")
    make_worker("proxy-lost", status=WorkerStatus.LOST, metrics_address="10.0.1.6:6130")
    make_worker("proxy-gone", status=WorkerStatus.TERMINATED, metrics_address="10.0.1.7:6130")

    groups = service_discovery("manager.internal:18080")

    assert all(set(g) == {"targets", "labels"} and len(g["targets"]) == 1 for g in groups)
    by_target = {g["targets"][0]: g["labels"] for g in groups}
    assert set(by_target) == {"manager.internal:18080", "10.0.0.5:6003", "10.0.0.6:6003", "10.0.1.5:6130"}
    assert by_target["manager.internal:18080"]["service"] == "manager"
    assert by_target["10.0.0.5:6003"] == {
        "service": "agent", "agent_id": "node-a", "__meta_backendai_service": "agent",
        "__meta_backendai_agent_id": "node-a", "__meta_backendai_scaling_group": "default",
        "__meta_backendai_region": "r1"}
    assert by_target["10.0.1.5:6130"]["service"] == "appproxy-worker"
    assert by_target["10.0.1.5:6130"]["worker"] == "proxy-1"
    assert all(isinstance(v, str) for labels in by_target.values() for v in labels.values())


@pytest.mark.django_db
def test_an_agents_sync_records_its_metrics_address_with_a_wildcard_host_replaced(client, defaults):
    token = agent_services.issue_token("nodes", scaling_group=agent_services.ensure_default_scaling_group())[1]
    body = {"agent_id": "node-m", "scaling_group": "default", "address": "10.0.0.9", "backend": "local",
            "capacity": {"cpu": "1", "mem": "1073741824"}, "slot_types": {"cpu": "count", "mem": "bytes"},
            "kernels": [], "metrics_address": "0.0.0.0:6003"}

    def sync(payload):
        return client.post("/agent-api/v1/sync", json.dumps(payload), content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {token}")

    assert sync(body).status_code == 200
    assert Agent.objects.get(pk="node-m").metrics_address == "10.0.0.9:6003"
    assert sync({**body, "metrics_address": "node-m.example:16003"}).status_code == 200
    assert Agent.objects.get(pk="node-m").metrics_address == "node-m.example:16003"
    assert service_discovery(None)[0]["targets"] == ["node-m.example:16003"]
    bad = sync({**body, "metrics_address": "http://evil/; rm -rf"})
    assert bad.status_code == 400 and slug(bad) == "invalid-api-params"
    assert Agent.objects.get(pk="node-m").metrics_address == "node-m.example:16003"


@pytest.mark.django_db
def test_a_proxy_workers_registration_records_its_metrics_address(client, defaults):
    raw = proxy_services.issue_token("tests")[1]
    body = {"frontend_mode": "port", "advertised_host": "proxy.example", "api_endpoint": "http://proxy.example:6130",
            "port_range": [40000, 40009], "metrics_address": "0.0.0.0:6130"}
    response = client.put("/appproxy-api/v1/workers/w-metrics", json.dumps(body), content_type="application/json",
                          HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 200, response.content
    assert Worker.objects.get(authority="w-metrics").metrics_address == "proxy.example:6130"
    assert service_discovery(None) == [{"targets": ["proxy.example:6130"], "labels": {
        "service": "appproxy-worker", "worker": "w-metrics", "__meta_backendai_service": "appproxy-worker",
        "__meta_backendai_worker": "w-metrics", "__meta_backendai_frontend_mode": "port"}}]


# --- the public port --------------------------------------------------------------------------------

@pytest.mark.django_db
def test_the_public_port_refuses_metrics_by_default_and_serves_them_when_configured(client, settings):
    settings.METRICS_PUBLIC = False
    refused = client.get("/metrics")
    assert refused.status_code == 404
    assert b"backendai_" not in refused.content
    settings.METRICS_PUBLIC = True
    served = client.get("/metrics")
    assert served.status_code == 200 and b"backendai_agent_count" in served.content


def test_the_metrics_settings_are_validated_naming_the_variable(tmp_path):
    env = {"BACKEND_DATA_DIR": str(tmp_path)}
    config = load(env)
    assert config.metrics_listen == ("127.0.0.1", 18080)
    assert config.metrics_advertise is None and config.metrics_public is False
    config = load({**env, "METRICS_LISTEN": "[::1]:9100", "METRICS_ADVERTISE": "mgr.example:9100",
                   "METRICS_PUBLIC": "true"})
    assert config.metrics_listen == ("::1", 9100)
    assert config.metrics_advertise == ("mgr.example", 9100) and config.metrics_public is True
    for name, value in (("METRICS_LISTEN", "18080"), ("METRICS_LISTEN", "host:99999"), ("METRICS_LISTEN", "h:0"),
                        ("METRICS_ADVERTISE", "bad host:80"), ("METRICS_PUBLIC", "maybe")):
        with pytest.raises(ConfigError) as caught:
            load({**env, name: value})
        assert caught.value.variable == name


# --- the listener -------------------------------------------------------------------------------

@pytest.fixture
def listener(transactional_db, settings):
    settings.METRICS_ADVERTISE = None
    server = MetricsServer(("127.0.0.1", 0))
    thread = server.start_in_thread()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_the_listener_serves_the_metric_families_and_the_service_discovery(listener):
    make_agent("node-l", metrics_address="10.0.0.5:6003")
    make_agent("node-lost", status=AgentStatus.LOST, metrics_address="10.0.0.7:6003")
    make_worker("proxy-l", metrics_address="10.0.1.5:6130")
    port = listener.server_address[1]

    status, headers, body = request(port, "GET", "/metrics")
    text = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    for family in ("backendai_agent_count", "backendai_session_count", "backendai_appproxy_worker_count",
                   "backendai_scheduler_operation_count"):
        assert f"# TYPE {family}" in text or f"# HELP {family}" in text, family
    assert 'backendai_agent_count{status="ALIVE"} 1.0' in text
    assert 'backendai_agent_count{status="LOST"} 1.0' in text

    status, headers, body = request(port, "GET", "/metrics/service_discovery")
    assert status == 200 and headers["Content-Type"] == "application/json"
    targets = {g["targets"][0]: g["labels"]["service"] for g in json.loads(body)}
    assert targets == {f"127.0.0.1:{port}": "manager", "10.0.0.5:6003": "agent", "10.0.1.5:6130": "appproxy-worker"}


def test_the_service_discovery_lists_the_advertised_address_when_one_is_set(transactional_db, settings):
    settings.METRICS_ADVERTISE = ("metrics.example", 18080)
    server = MetricsServer(("127.0.0.1", 0))
    try:
        assert server.advertised == "metrics.example:18080"
    finally:
        server.server_close()


@pytest.mark.parametrize("method, path, expected", [
    ("GET", "/", 404), ("GET", "/metricsx", 404), ("GET", "/metrics/../etc/passwd", 404),
    ("GET", "/%00", 404), ("GET", "/" + "a" * 5000, 404), ("GET", "/admin/", 404),
    ("POST", "/metrics", 405), ("DELETE", "/metrics/service_discovery", 405), ("PUT", "/metrics", 405),
    ("BREW", "/metrics", 405), ("POST", "/nowhere", 404), ("HEAD", "/metrics", 200),
    ("GET", "/metrics?format=json&x=%ff", 200),
])
def test_hostile_requests_to_the_listener_get_404_or_405_and_it_keeps_answering(listener, method, path, expected):
    port = listener.server_address[1]
    status, headers, _ = request(port, method, path, body=b"x" * 100 if method in ("POST", "PUT") else None)
    assert status == expected
    if expected == 405:
        assert headers["Allow"] == "GET, HEAD"
    assert request(port, "GET", "/metrics")[0] == 200


def test_a_garbage_request_line_does_not_stop_the_listener(listener):
    port = listener.server_address[1]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"\x00\xff garbage \r\n\r\n")
        sock.recv(100)  # a 400 or a closed connection
    assert request(port, "GET", "/metrics")[0] == 200


def test_manage_py_serve_metrics_runs_the_listener_on_the_given_address(transactional_db, tmp_path):
    make_agent("node-p", metrics_address="10.0.0.5:6003")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    from django.db import connection

    db = connection.settings_dict  # the test database, the one this test's rows are in
    url = f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path), DATABASE_URL=url)
    process = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "serve_metrics", "--listen",
                                f"127.0.0.1:{port}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _, body = request(port, "GET", "/metrics")
                break
            except OSError:
                assert process.poll() is None, process.stdout.read().decode()
                assert time.monotonic() < deadline, "the listener did not answer within 60 s"
                time.sleep(0.2)
        assert status == 200 and b"backendai_agent_count" in body
        status, _, body = request(port, "GET", "/metrics/service_discovery")
        assert status == 200
        assert [(g["targets"], g["labels"]["service"]) for g in json.loads(body)] == [
            ([f"127.0.0.1:{port}"], "manager"), (["10.0.0.5:6003"], "agent")]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0


def test_serve_metrics_names_a_bad_listen_address():
    done = subprocess.run([sys.executable, str(ROOT / "manage.py"), "serve_metrics", "--listen", "nowhere"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "--listen" in done.stderr


# --- the embedded stack ---------------------------------------------------------------------------

def test_the_embedded_stack_runs_the_listener_on_a_derived_checked_port_and_the_agents_metrics(tmp_path):
    import argparse

    from backendai import stack

    assert stack.metrics_port(8091) == 32600 and stack.metrics_port(8092) == 32601
    assert all(stack.METRICS_REGION[0] <= stack.metrics_port(p) <= stack.METRICS_REGION[1] < 32768
               for p in range(1024, 65536, 7))
    derived = {p for port in range(8091, 8091 + stack.BLOCKS) for p in [stack.metrics_port(port)]}
    assert len(derived) == stack.BLOCKS  # side-by-side stacks never share a metrics port
    args = argparse.Namespace(port=8091, host="127.0.0.1", data_dir=str(tmp_path), agent_id="local-agent",
                              agent_backend="local", agent_ports=None, proxy_ports=None, proxy_api_port=0)
    stack.resolve_ports(args)
    commands = stack.processes(args, euid=1000)
    assert commands["metrics"][1:] == [str(ROOT / "manage.py"), "serve_metrics", "--listen", "127.0.0.1:32600"]
    agent = commands["agent"]
    assert agent[agent.index("--metrics-listen") + 1] == "127.0.0.1:0"
    storage = commands["storage"]
    assert storage[storage.index("--metrics-listen") + 1] == "127.0.0.1:0"
    assert "metrics" in stack.START_ORDER and any("metrics" in group for group in stack.STOP_ORDER)
    claims = {c.option: c for c in stack.port_claims(args)}
    assert list(claims["--metrics-port"].ports) == [32600]
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "backendai.stack", "--port", "8091", "--data-dir", str(tmp_path),
                               "--metrics-port", str(taken), "--check-ports"], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
    assert done.returncode == 1
    assert f"port {taken} (the metrics listener) is already in use" in done.stderr and "--metrics-port" in done.stderr


# --- the storage proxies' /metrics ----------------------------------------------------------------

def _sd_storage(manager=None):
    return {g["targets"][0]: g["labels"] for g in service_discovery(manager)
            if g["labels"]["service"] == "storage-proxy"}


def test_a_storage_proxys_metrics_address_is_recorded_by_the_health_check_and_listed_until_it_is_lost(
        db, storage_proxy, settings):
    from vfolders import services as vfolder_services
    from vfolders.models import StorageProxy
    from vfolders.services.proxy import host_call

    vfolder_services.ensure_default_storage_host()
    assert vfolder_services.check_all_proxies()["alive"] >= 1
    proxy = StorageProxy.objects.get(name="local")
    assert proxy.metrics_address == f"127.0.0.1:{storage_proxy.metrics_port}"
    assert _sd_storage() == {proxy.metrics_address: {
        "service": "storage-proxy", "storage_proxy": "local", "__meta_backendai_service": "storage-proxy",
        "__meta_backendai_storage_proxy": "local"}}
    # what the service discovery names answers the proxy's families, after a volume operation through the manager
    host = vfolder_services.ensure_default_storage_host()
    host_call(host, "GET", "/volume/performance-metric", {})
    text = http_get_text(f"http://{proxy.metrics_address}/metrics")
    for family in ("backendai_storage_volume_stats_observe_total", "backendai_storage_volume_capacity_bytes",
                   "backendai_storage_volume_metric_last_updated_timestamp",
                   "backendai_storage_volume_stats_observe_duration_seconds_count"):
        assert family + "{" in text, family
    assert 'endpoint="/volume/performance-metric",method="GET",status_code="200"' in text

    StorageProxy.objects.filter(name="local").update(status="lost")
    assert _sd_storage() == {}
    StorageProxy.objects.filter(name="local").update(status="alive", metrics_address="")
    assert _sd_storage() == {}  # it reported none


def http_get_text(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return response.read().decode()


@pytest.mark.parametrize("reported, expected", [
    ("10.0.0.9:6023", "10.0.0.9:6023"), ("0.0.0.0:6023", "storage.internal:6023"),
    ("[::]:6023", "storage.internal:6023"), ("[fd00::1]:6023", "[fd00::1]:6023"), ("::1:6023", "[::1]:6023"),
    ("storage-2.example:0", ""), ("host:99999", ""), ("host", ""), ("ho st:1", ""), ("x<script>:1", ""),
    (12, ""), (None, ""), ("a" * 400 + ":1", ""),
])
def test_the_storage_proxys_reported_metrics_address_is_checked(reported, expected):
    from vfolders.models import StorageProxy
    from vfolders.services.proxy import metrics_address

    proxy = StorageProxy(name="p", manager_url="http://storage.internal:6022")
    assert metrics_address(proxy, reported) == expected


@pytest.mark.django_db
def test_the_admin_shows_the_metrics_address_of_agents_workers_and_storage_proxies_read_only(client, superadmin):
    from vfolders.models import StorageProxy

    make_agent("node-admin", metrics_address="10.0.0.5:6003")
    worker = make_worker("proxy-admin", metrics_address="10.0.1.5:6130")
    StorageProxy.objects.create(name="sp-admin", manager_url="http://10.0.2.5:6022", client_url="http://10.0.2.5:6021",
                                secret="s" * 20, metrics_address="10.0.2.5:6023")
    client.force_login(superadmin)
    for url, address in (("/admin/agents/agent/node-admin/change/", "10.0.0.5:6003"),
                         (f"/admin/appproxy/worker/{worker.pk}/change/", "10.0.1.5:6130"),
                         ("/admin/vfolders/storageproxy/sp-admin/change/", "10.0.2.5:6023")):
        page = client.get(url)
        assert page.status_code == 200, url
        assert address.encode() in page.content and b"Metrics address" in page.content, url
        assert b'name="metrics_address"' not in page.content, url  # shown, never editable
