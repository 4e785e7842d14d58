"""The agent's own /metrics (--metrics-listen): stat collections, lifecycle syncs and the kernels'
utilization, served on a small listener whose address each sync reports."""
from __future__ import annotations

import http.client
import os
import shutil
import uuid
from decimal import Decimal

import pytest

from agents.daemon.agent import Agent
from agents.daemon.backends.base import BackendSettings
from agents.daemon.backends.local import LocalBackend
from agents.daemon.backoff import Backoff
from agents.daemon.client import ManagerClient
from agents.daemon.config import AgentConfig, ConfigError, load_config
from agents.daemon.discovery import Resources

PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else shutil.which("python3")
TOKEN = "test-agent-token"


def get(address: str, method: str = "GET", path: str = "/metrics") -> tuple[int, dict, str]:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        conn.close()


def sample(text: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


@pytest.fixture
def agent(tmp_path, fake_manager):
    config = AgentConfig(manager_url=fake_manager.url, token=TOKEN, agent_id="metrics-test", backend="local",
                         scratch_root=tmp_path / "scratch", port_range=(31400, 31499), sync_interval=0.3,
                         stop_timeout=2, metrics_listen=("127.0.0.1", 0))
    backend = LocalBackend(BackendSettings.from_config(config))
    client = ManagerClient(fake_manager.url, TOKEN, timeout=2)
    made = Agent(config, backend, client, Resources(cpu=Decimal(2), mem=1 << 30), watch_interval=0.1,
                 backoff=Backoff(base=0.1, cap=0.4))
    made.start()
    yield made
    made.request_stop()
    for state in made.backend.list_kernels():
        made.backend.stop(state.kernel_id, "test-cleanup")
    if made.metrics_server is not None:
        made.metrics_server.shutdown()
        made.metrics_server.server_close()


def running_kernel() -> dict:
    return {"kernel_id": str(uuid.uuid4()), "session_id": str(uuid.uuid4()), "session_name": "m1",
            "session_type": "interactive", "cluster_role": "main", "cluster_idx": 1, "cluster_hostname": "main1",
            "image": "local/shell:1.0", "architecture": "x86_64", "registry": None,
            "slots": {"cpu": "1", "mem": "268435456"}, "resource_opts": {}, "environ": {}, "mounts": [],
            "service_ports": [], "startup_command": f"exec {PYTHON} -c 'import time; time.sleep(600)'",
            "bootstrap_script": None, "batch_timeout": None}


def test_the_agent_serves_its_metrics_and_reports_where_in_each_sync(agent, fake_manager, wait_for):
    kernel = running_kernel()
    fake_manager.desired = [kernel]
    address = agent.metrics_server.address
    assert address.startswith("127.0.0.1:") and not address.endswith(":0")
    body = wait_for(fake_manager.last_sync, what="a sync")
    assert body["metrics_address"] == address

    def utilization():
        text = get(address)[2]
        return text if f'kernel_id="{kernel["kernel_id"]}"' in text else None

    text = wait_for(utilization, timeout=20, what="the kernel's utilization on /metrics")
    status, headers, _ = get(address)
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert sample(text, 'backendai_stat_task_trigger_count_total{stat_scope="container"}') >= 1
    assert sample(text, 'backendai_stat_task_success_count_total{stat_scope="node"}') >= 1
    assert sample(text, 'backendai_stat_task_duration_sec_count{stat_scope="container"}') >= 1
    assert sample(text, "backendai_sync_container_lifecycle_trigger_count_total") >= 2
    assert sample(text, "backendai_sync_container_lifecycle_success_count_total") >= 1
    assert "# TYPE backendai_sync_container_lifecycle_failure_count_total counter" in text
    line = next(line for line in text.splitlines() if line.startswith("backendai_container_utilization{")
                and 'container_metric_name="mem"' in line and kernel["kernel_id"] in line)
    assert 'agent_id="metrics-test"' in line and f'session_id="{kernel["session_id"]}"' in line
    assert 'value_type="current"' in line and float(line.rsplit(" ", 1)[1]) > 0


def test_failed_syncs_are_counted_by_reason(agent, fake_manager, wait_for):
    fake_manager.fail_with = 503
    address = agent.metrics_server.address
    wait_for(lambda: sample(get(address)[2], 'backendai_sync_container_lifecycle_failure_count_total'
                                             '{exception="ManagerUnavailable"}') >= 1,
             timeout=15, what="a counted failure")


@pytest.mark.parametrize("method, path, expected", [
    ("GET", "/", 404), ("GET", "/metrics/../x", 404), ("GET", "/" + "z" * 4000, 404),
    ("POST", "/metrics", 405), ("DELETE", "/metrics", 405), ("BREW", "/metrics", 405), ("POST", "/x", 404),
    ("HEAD", "/metrics", 200),
])
def test_hostile_requests_to_the_agents_listener_get_404_or_405(agent, method, path, expected):
    address = agent.metrics_server.address
    assert get(address, method, path)[0] == expected
    assert get(address)[0] == 200


def test_the_metrics_listen_option_defaults_to_port_6003_and_can_be_turned_off(tmp_path):
    config, _ = load_config([], {"BAI_AGENT_SCRATCH_ROOT": str(tmp_path)})
    assert config.metrics_listen == ("127.0.0.1", 6003)
    config, _ = load_config(["--metrics-listen", "off"], {"BAI_AGENT_SCRATCH_ROOT": str(tmp_path)})
    assert config.metrics_listen is None
    config, _ = load_config([], {"BAI_AGENT_SCRATCH_ROOT": str(tmp_path), "BAI_AGENT_METRICS_LISTEN": "[::1]:7003"})
    assert config.metrics_listen == ("::1", 7003)
    with pytest.raises(ConfigError, match="--metrics-listen"):
        load_config(["--metrics-listen", "6003"], {"BAI_AGENT_SCRATCH_ROOT": str(tmp_path)})


def test_an_agent_whose_metrics_port_is_taken_runs_on_without_reporting_one(tmp_path, fake_manager, wait_for):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = AgentConfig(manager_url=fake_manager.url, token=TOKEN, agent_id="busy-metrics", backend="local",
                             scratch_root=tmp_path / "scratch", port_range=(31500, 31599), sync_interval=0.3,
                             metrics_listen=taken.getsockname())
        made = Agent(config, LocalBackend(BackendSettings.from_config(config)),
                     ManagerClient(fake_manager.url, TOKEN, timeout=2), Resources(cpu=Decimal(1), mem=1 << 30))
        made.start()
        try:
            body = wait_for(fake_manager.last_sync, what="a sync")
            assert made.metrics_server is None and "metrics_address" not in body
        finally:
            made.request_stop()


def test_the_daemon_process_never_writes_into_a_managers_multiprocess_directory(tmp_path, fake_manager, wait_for):
    """A PROMETHEUS_MULTIPROC_DIR inherited from a manager's environment would make the manager's
    listener count the agent's metrics as its own: the daemon drops it and keeps its own registry."""
    import subprocess
    import sys

    from helpers import stop_process

    shared = tmp_path / "manager-multiproc"
    shared.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAI_AGENT_")}
    env.update(BAI_AGENT_TOKEN=TOKEN, PROMETHEUS_MULTIPROC_DIR=str(shared))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    proc = subprocess.Popen(
        [sys.executable, "-m", "agents.daemon", "--backend", "local", "--manager-url", fake_manager.url,
         "--agent-id", "multiproc-agent", "--scratch-root", str(tmp_path / "scratch"), "--sync-interval", "0.3",
         "--port-range", "31400-31499", "--local-allow-root", "--metrics-listen", "127.0.0.1:0"],
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        synced = wait_for(lambda: [s for s in fake_manager.syncs if s.get("metrics_address")], timeout=20,
                          what="a sync that reports the agent's metrics address")[0]
        status, _, text = get(synced["metrics_address"])
        assert status == 200 and "backendai_sync_container_lifecycle_trigger_count" in text
        assert list(shared.iterdir()) == []
    finally:
        stop_process(proc, grace=10)
