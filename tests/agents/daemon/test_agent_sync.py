"""The sync loop against a tiny fake manager (tests/agents/daemon/conftest.py), with the local backend."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from fake_nvml import TWO_GPUS, FakeNVML
from websockets.sync.server import serve

from agents.daemon.agent import Agent
from agents.daemon.backends.base import BackendSettings
from agents.daemon.backends.local import LocalBackend, _group_members
from agents.daemon.backoff import Backoff
from agents.daemon.client import ManagerClient
from agents.daemon.config import AgentConfig
from agents.daemon.discovery import GpuProbe, Resources
from agents.daemon.link import ManagerLink

ROOT = Path(__file__).resolve().parents[3]
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else shutil.which("python3")
TOKEN = "test-agent-token"


def desired_http(**extra) -> dict:
    kernel = {
        "kernel_id": str(uuid.uuid4()), "session_id": str(uuid.uuid4()), "session_name": "s1",
        "session_type": "interactive", "cluster_role": "main", "cluster_idx": 1, "cluster_hostname": "main1",
        "image": "bai-test/http:1.0", "architecture": "x86_64", "registry": None,
        "slots": {"cpu": "1", "mem": "268435456", "cuda.device": "0"}, "resource_opts": {"shmem": "67108864"},
        "environ": {}, "mounts": [], "service_ports": [{"name": "web", "protocol": "http", "container_ports": [8080]}],
        "startup_command": f"exec {PYTHON} -m http.server $PORT --bind 127.0.0.1", "bootstrap_script": None,
        "batch_timeout": None,
    }
    kernel.update(extra)
    return kernel


def fetch(port: int, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def make_agent(tmp_path, fake_manager):
    agents = []

    def make(**kwargs) -> Agent:
        config = AgentConfig(manager_url=fake_manager.url, token=TOKEN, agent_id=kwargs.pop("agent_id", "sync-test"),
                             backend="local", scratch_root=tmp_path / "scratch", port_range=(31300, 31399),
                             sync_interval=0.3, stop_timeout=2, region="test-region")
        cuda = kwargs.pop("cuda", None)  # a CudaInfo (from a GpuProbe over a fake NVML)
        backend = LocalBackend(BackendSettings.from_config(config, cuda.devices if cuda else ()))
        client = ManagerClient(fake_manager.url, kwargs.pop("token", TOKEN), timeout=2)
        agent = Agent(config, backend, client, Resources(cpu=Decimal(2), mem=1 << 30, cuda=cuda), watch_interval=0.1,
                      backoff=Backoff(base=0.1, cap=0.4), **kwargs)
        agents.append(agent)
        agent.start()
        return agent

    yield make
    for agent in agents:
        agent.request_stop()
        for state in agent.backend.list_kernels():
            agent.backend.stop(state.kernel_id, "test-cleanup")


def test_the_first_sync_registers_with_the_protocol_body(make_agent, fake_manager, wait_for):
    make_agent()
    body = wait_for(fake_manager.last_sync, what="a sync")
    assert body["agent_id"] == "sync-test"
    assert body["scaling_group"] == "default" and body["region"] == "test-region"
    assert body["backend"] == "local" and body["architecture"] in ("x86_64", "aarch64")
    assert body["version"] == "0.1.0"
    assert body["capacity"] == {"cpu": "2", "mem": str(1 << 30)}
    assert body["slot_types"] == {"cpu": "count", "mem": "bytes"}
    assert body["compute_plugins"] == {} and body["devices"] == []
    assert [i["name"] for i in body["images"]] == ["local/shell:1.0", "local/python-http:1.0", "local/inference:1.0"]
    assert set(body["stats"]) >= {"cpu_util", "mem_used"}
    assert all(isinstance(v, str) for v in body["stats"].values())
    assert body["kernels"] == []
    assert "address" not in body  # optional: the manager uses the peer address
    assert fake_manager.headers[0]["Authorization"] == f"Bearer {TOKEN}"
    assert fake_manager.headers[0]["Content-Type"] == "application/json"


def test_a_desired_kernel_runs_is_reported_and_a_stop_instruction_stops_it(make_agent, fake_manager, wait_for):
    kernel = desired_http()
    kernel_id = kernel["kernel_id"]
    fake_manager.desired = [kernel]
    agent = make_agent()

    running = wait_for(lambda: [e for e in fake_manager.kernel_events(kernel_id) if e["status"] == "RUNNING"],
                       what="a RUNNING event")[0]
    assert running["service_ports"][0]["name"] == "web"
    port = running["service_ports"][0]["host_ports"][0]
    assert 31300 <= port <= 31399 and running["timestamp"]
    assert [e["status"] for e in fake_manager.kernel_events(kernel_id)][:2] == ["PREPARING", "RUNNING"]
    assert "Directory listing" in fetch(port)

    since = len(fake_manager.syncs)
    entry = wait_for(lambda: fake_manager.synced_kernel(kernel_id, since), what="the kernel in a sync")
    assert entry["status"] == "RUNNING" and entry["session_id"] == kernel["session_id"]
    assert entry["host"] == "127.0.0.1" and entry["service_ports"][0]["host_ports"] == [port]
    assert set(entry["stats"]) == {"cpu_util", "mem_used"}
    time.sleep(0.7)  # more syncs with the same desired list start nothing new
    assert len(agent.backend.list_kernels()) == 1

    fake_manager.desired = []
    fake_manager.stop = [{"kernel_id": kernel_id, "reason": "user-requested"}]
    terminated = wait_for(lambda: [e for e in fake_manager.kernel_events(kernel_id) if e["status"] == "TERMINATED"],
                          what="a TERMINATED event")[0]
    assert terminated["exit_code"] == 143 and terminated["reason"] == "user-requested"
    assert isinstance(terminated["last_logs"], str)
    since = len(fake_manager.syncs)
    entry = wait_for(lambda: fake_manager.synced_kernel(kernel_id, since), what="the final state in a sync")
    assert entry["status"] == "TERMINATED" and entry["exit_code"] == 143
    # delivered once; then the kernel is simply absent, and never started again
    fake_manager.stop = []
    fake_manager.desired = [kernel]
    since = len(fake_manager.syncs)
    wait_for(lambda: len(fake_manager.syncs) > since + 2, what="more syncs")
    assert fake_manager.synced_kernel(kernel_id, len(fake_manager.syncs) - 1) is None
    assert agent.backend.list_kernels() == []


def test_a_kernel_bound_to_gpus_reports_their_mean_utilisation_and_used_memory(make_agent, fake_manager, wait_for):
    probe = GpuProbe(nvml=FakeNVML(TWO_GPUS))
    cuda = probe.discover()
    with_gpus = desired_http(slots={"cpu": "1", "mem": "268435456", "cuda.device": "2"})
    without = desired_http()
    fake_manager.desired = [with_gpus, without]
    make_agent(cuda=cuda, gpu_probe=probe)

    since = len(fake_manager.syncs)
    gpu_entry = wait_for(lambda: (e := fake_manager.synced_kernel(with_gpus["kernel_id"], since))
                         and e["status"] == "RUNNING" and e["stats"] and e, what="the GPU kernel running in a sync")
    assert gpu_entry["stats"]["cuda_util"] == "50"  # (3 + 97) / 2
    assert gpu_entry["stats"]["cuda_mem"] == str(1048576 + 2048)
    assert {"cpu_util", "mem_used"} <= set(gpu_entry["stats"])
    plain = wait_for(lambda: (e := fake_manager.synced_kernel(without["kernel_id"], since))
                     and e["status"] == "RUNNING" and e["stats"] and e, what="the CPU kernel running in a sync")
    assert set(plain["stats"]) == {"cpu_util", "mem_used"}  # no GPU: no GPU keys
    body = fake_manager.last_sync()
    assert body["capacity"]["cuda.device"] == "2"
    assert body["stats"]["devices"]["cuda.device"] == [{"id": "0", "util": "3", "mem_used": "1048576"},
                                                       {"id": "1", "util": "97", "mem_used": "2048"}]


def test_a_restart_is_applied_once_and_reported_with_its_restart_id(make_agent, fake_manager, wait_for):
    kernel = desired_http(startup_command=f"echo started-$$; exec {PYTHON} -m http.server $PORT --bind 127.0.0.1")
    kernel_id = kernel["kernel_id"]
    fake_manager.desired = [kernel]
    agent = make_agent()
    first = wait_for(lambda: [e for e in fake_manager.kernel_events(kernel_id) if e["status"] == "RUNNING"],
                     what="a RUNNING event")[0]
    port = first["service_ports"][0]["host_ports"][0]

    fake_manager.restart = [{"kernel_id": kernel_id, "restart_id": "r1"}]
    restarted = wait_for(lambda: [e for e in fake_manager.kernel_events(kernel_id) if e.get("restart_id") == "r1"],
                         what="the restart event")[0]
    assert restarted["status"] == "RUNNING" and restarted["container_id"] != first["container_id"]
    assert restarted["service_ports"][0]["host_ports"] == [port]
    assert not [e for e in fake_manager.kernel_events(kernel_id) if e["status"] == "TERMINATED"]
    assert "Directory listing" in fetch(port)
    since = len(fake_manager.syncs)
    entry = wait_for(lambda: fake_manager.synced_kernel(kernel_id, since + 2), what="later syncs")
    assert entry["restart_id"] == "r1" and entry["container_id"] == restarted["container_id"]  # applied once
    assert not [s for s in fake_manager.syncs if any(k["status"] == "TERMINATED" for k in s["kernels"])]

    fake_manager.restart = []
    fake_manager.want_logs = [kernel_id]
    with_logs = wait_for(lambda: [e for e in fake_manager.kernel_events(kernel_id) if e["last_logs"]],
                         what="an event with the logs")[0]
    assert with_logs["status"] == "RUNNING" and with_logs["last_logs"].count("started-") == 2
    assert agent.restarts.get(kernel_id) == "r1"


def test_the_manager_being_down_leaves_kernels_running_and_the_agent_retries(make_agent, fake_manager, wait_for):
    kernel = desired_http()
    fake_manager.desired = [kernel]
    agent = make_agent()
    event = wait_for(lambda: [e for e in fake_manager.kernel_events(kernel["kernel_id"]) if e["status"] == "RUNNING"],
                     what="a RUNNING event")[0]
    port = event["service_ports"][0]["host_ports"][0]

    fake_manager.shutdown_server()  # connection refused from now on
    wait_for(lambda: agent.failures >= 3, what="failed sync attempts")
    assert "Directory listing" in fetch(port)  # never stopped because the manager is unreachable
    assert [s.status.value for s in agent.backend.list_kernels()] == ["RUNNING"]

    count = len(fake_manager.syncs)
    fake_manager.start(fake_manager.port)
    wait_for(lambda: len(fake_manager.syncs) > count, what="a sync after the manager came back")
    # the fake manager records a sync when it arrives; the agent resets its count once the answer is back
    wait_for(lambda: agent.failures == 0, what="the failure count reset by the answered sync")
    assert fake_manager.synced_kernel(kernel["kernel_id"], count)["status"] == "RUNNING"


def test_a_refused_token_is_retried_slowly_and_nothing_is_applied(make_agent, fake_manager, wait_for):
    fake_manager.desired = [desired_http()]
    agent = make_agent(token="wrong", auth_retry=0.2)
    wait_for(lambda: agent.failures >= 2, what="refused syncs")
    assert agent.syncs == 0 and agent.backend.list_kernels() == []


def test_a_bad_desired_kernel_is_reported_as_an_error(make_agent, fake_manager, wait_for):
    bad = desired_http(slots={"cpu": "lots"})
    failing = desired_http(mounts=[{"host_path": "/tmp", "container_path": "/home/work/../x", "mode": "rw"}])
    fake_manager.desired = [bad, failing]
    make_agent()
    for kernel, reason in ((bad, "invalid-spec"), (failing, "invalid-mount")):
        error = wait_for(lambda k=kernel: [e for e in fake_manager.kernel_events(k["kernel_id"])
                                           if e["status"] == "ERROR"], what="an ERROR event")[0]
        assert error["reason"] == reason and error["last_logs"]


def test_a_poke_syncs_at_once(make_agent, fake_manager, wait_for):
    fake_manager.sync_interval = 30
    agent = make_agent()
    wait_for(lambda: agent.syncs >= 1, what="the first sync")
    time.sleep(0.2)
    count = len(fake_manager.syncs)
    agent.poke()
    wait_for(lambda: len(fake_manager.syncs) > count, timeout=2, what="a sync after the poke")
    assert agent.sync_interval == 30


def test_shutdown_tells_the_manager_and_leaves_kernels_running(make_agent, fake_manager, wait_for):
    kernel = desired_http()
    fake_manager.desired = [kernel]
    agent = make_agent()
    wait_for(lambda: [e for e in fake_manager.kernel_events(kernel["kernel_id"]) if e["status"] == "RUNNING"])
    agent.shutdown()
    assert fake_manager.shutdowns == [{"agent_id": "sync-test"}]
    assert [s.status.value for s in LocalBackend(agent.backend.settings).list_kernels()] == ["RUNNING"]


# -- the websocket link -------------------------------------------------------------------------

def test_the_link_sends_the_token_pokes_and_reconnects():
    seen_headers, pokes = [], []
    connections = threading.Semaphore(0)

    def handler(ws):
        seen_headers.append((ws.request.path, ws.request.headers.get("Authorization")))
        connections.release()
        ws.send(json.dumps({"type": "poke"}))
        ws.send(json.dumps({"type": "stream", "data": "ignored"}))
        time.sleep(0.2)
        ws.close()  # the link must come back

    stop = threading.Event()
    with serve(handler, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]
        link = ManagerLink(f"ws://127.0.0.1:{port}/agent-api/v1/link?agent_id=a1", f"Bearer {TOKEN}",
                           lambda: pokes.append(1), stop, backoff=Backoff(base=0.05, cap=0.1))
        link.start()
        assert connections.acquire(timeout=5) and connections.acquire(timeout=5)
        stop.set()
        link.join(timeout=3)
        server.shutdown()
    assert seen_headers[0] == ("/agent-api/v1/link?agent_id=a1", f"Bearer {TOKEN}")
    assert link.pokes >= 1 and link.attempts >= 2


def test_a_missing_link_endpoint_falls_back_to_polling(fake_manager, wait_for):
    stop = threading.Event()
    client = ManagerClient(fake_manager.url, TOKEN)
    link = ManagerLink(client.link_url("a1"), client.auth_header, lambda: None, stop, missing_retry=60)
    assert link.url == f"ws://127.0.0.1:{fake_manager.port}/agent-api/v1/link?agent_id=a1"
    link.start()
    wait_for(lambda: link.attempts >= 1 and link._reported_missing, what="the 404")
    time.sleep(0.3)
    assert link.attempts == 1  # waits a long while before trying again
    stop.set()
    link.join(timeout=2)


# -- the real daemon process --------------------------------------------------------------------

def daemon(fake_manager, scratch: Path, log_path: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAI_AGENT_")}
    env["BAI_AGENT_TOKEN"] = TOKEN
    return subprocess.Popen(
        [sys.executable, "-m", "agents.daemon", "--backend", "local", "--manager-url", fake_manager.url,
         "--agent-id", "proc-agent", "--scratch-root", str(scratch), "--sync-interval", "0.3",
         "--port-range", "31400-31499", "--stop-timeout", "2", "--log-level", "DEBUG", "--local-allow-root"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log_path.open("ab"))


def test_the_daemon_process_runs_kernels_shuts_down_on_sigterm_and_re_adopts(fake_manager, tmp_path, wait_for):
    scratch, log_path = tmp_path / "scratch", tmp_path / "daemon.log"
    kernel = desired_http()
    kernel_id = kernel["kernel_id"]
    fake_manager.desired = [kernel]
    proc = daemon(fake_manager, scratch, log_path)
    try:
        event = wait_for(lambda: [e for e in fake_manager.kernel_events(kernel_id) if e["status"] == "RUNNING"],
                         timeout=15, what="a RUNNING event")[0]
        port = event["service_ports"][0]["host_ports"][0]
        assert "Directory listing" in fetch(port)
        assert fake_manager.syncs[0]["agent_id"] == "proc-agent"
        assert "WARNING" in log_path.read_text() and "no isolation" in log_path.read_text()

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=8) == 0
        assert fake_manager.shutdowns == [{"agent_id": "proc-agent"}]
        assert "Directory listing" in fetch(port)  # the kernel outlives the daemon

        count = len(fake_manager.syncs)
        proc = daemon(fake_manager, scratch, log_path)  # restarted: re-adopts the kernel
        entry = wait_for(lambda: fake_manager.synced_kernel(kernel_id, count), timeout=15, what="re-adoption")
        assert entry["status"] == "RUNNING" and entry["service_ports"][0]["host_ports"] == [port]
        pid = int(entry["container_id"])

        fake_manager.desired = []
        fake_manager.stop = [{"kernel_id": kernel_id, "reason": "user-requested"}]
        done = wait_for(lambda: [e for e in fake_manager.kernel_events(kernel_id) if e["status"] == "TERMINATED"],
                        timeout=15, what="a TERMINATED event")[0]
        assert done["exit_code"] == 143
        assert _group_members(pid) == []
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=8) == 0
        assert len(fake_manager.shutdowns) == 2
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for state_file in scratch.glob("*/kernel.json"):
            pid = json.loads(state_file.read_text()).get("pid")
            if pid:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
