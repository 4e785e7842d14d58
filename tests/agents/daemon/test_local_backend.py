"""The local backend end to end, with real process groups on this host."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
import uuid

import pytest

from agents.daemon.backends.base import BackendSettings, KernelError
from agents.daemon.backends.local import LocalBackend, _group_members
from agents.protocol import KernelSpec, ReportedStatus

PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else shutil.which("python3")
PORTS = (31100, 31199)


def spec(command: str | None, **extra) -> KernelSpec:
    data = {"kernel_id": str(uuid.uuid4()), "session_id": str(uuid.uuid4()), "image": "bai-test/shell:1.0",
            "session_type": "interactive", "cluster_hostname": "main1", "slots": {"cpu": "1", "mem": "268435456"},
            "startup_command": command}
    data.update(extra)
    return KernelSpec.from_wire(data)


def http_spec(**extra) -> KernelSpec:
    command = f"env > env.txt; exec {PYTHON} -m http.server $PORT --bind 127.0.0.1"
    return spec(command, service_ports=[{"name": "web", "protocol": "http", "container_ports": [8080]}], **extra)


@pytest.fixture
def backend_settings(tmp_path):
    return BackendSettings(agent_id="local-test", scratch_root=tmp_path / "scratch", port_range=PORTS, stop_timeout=2)


@pytest.fixture
def backend(backend_settings):
    backend = LocalBackend(backend_settings)
    yield backend
    for state in LocalBackend(backend_settings).list_kernels():  # never leave processes behind
        backend.stop(state.kernel_id, "test-cleanup")


def fetch(port: int, path: str = "/", timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def wait_status(backend, kernel_id, status, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        states = {s.kernel_id: s for s in backend.list_kernels()}
        if kernel_id in states and states[kernel_id].status is status:
            return states[kernel_id]
        assert time.monotonic() < deadline, f"kernel never became {status}: {states.get(kernel_id)}"
        time.sleep(0.05)


def test_an_http_kernel_runs_serves_on_its_port_and_stops_with_an_exit_code(backend, backend_settings, tmp_path):
    data = tmp_path / "vfolder"
    data.mkdir()
    (data / "hello.txt").write_text("from the vfolder")
    emitted = []
    kernel = http_spec(environ={"FOO": "bar"},
                       mounts=[{"host_path": str(data), "container_path": "/home/work/data", "mode": "rw"}])
    state = backend.create(kernel, emit=emitted.append)
    assert [s.status for s in emitted] == [ReportedStatus.PREPARING, ReportedStatus.RUNNING]
    assert state.status is ReportedStatus.RUNNING
    port = state.service_ports[0].host_ports[0]
    assert PORTS[0] <= port <= PORTS[1]
    assert state.service_ports[0].container_ports == [8080]
    assert state.host == "127.0.0.1" and state.container_id

    assert "from the vfolder" in fetch(port, "/data/hello.txt")
    env = dict(line.split("=", 1) for line in fetch(port, "/env.txt").splitlines() if "=" in line)
    assert env["BACKENDAI_KERNEL_ID"] == kernel.kernel_id
    assert env["BACKENDAI_SESSION_ID"] == kernel.session_id
    assert env["BACKENDAI_PORT_WEB"] == env["PORT"] == str(port)
    assert env["FOO"] == "bar"
    assert env["HOME"].endswith(f"{kernel.kernel_id}/home/work")
    assert not any(k.startswith("BAI_AGENT_") for k in env)

    # idempotent: the same kernel id is not started twice
    assert backend.create(kernel).container_id == state.container_id
    stats = backend.stats()
    assert int(stats[kernel.kernel_id]["mem_used"]) > 0

    final = backend.stop(kernel.kernel_id, "user-requested")
    assert final.status is ReportedStatus.TERMINATED
    assert final.exit_code == 128 + signal.SIGTERM
    assert final.reason == "user-requested"
    assert "GET /env.txt" in (final.last_logs or "")
    assert not (backend_settings.scratch_root / kernel.kernel_id).exists()
    assert data.exists() and (data / "hello.txt").exists()  # the mount target survives the clean-up
    assert backend.list_kernels() == []
    assert port not in backend.ports.held
    assert backend.stop(kernel.kernel_id, "again") is None


def test_a_batch_command_that_exits_3_is_reported_with_its_logs(backend):
    kernel = spec("echo batch-start; echo oops >&2; exit 3", session_type="batch")
    backend.create(kernel)
    state = wait_status(backend, kernel.kernel_id, ReportedStatus.TERMINATED)
    assert state.exit_code == 3
    assert state.reason == "task-failed"
    assert "batch-start" in state.last_logs and "oops" in state.last_logs
    final = backend.stop(kernel.kernel_id, "user-requested")
    assert final.exit_code == 3 and final.reason == "task-failed"  # it had already ended on its own


def test_a_restarted_backend_re_adopts_the_live_process(backend_settings):
    first = LocalBackend(backend_settings)
    kernel = spec(None, service_ports=[{"name": "ssh", "protocol": "tcp", "container_ports": [22]}])
    state = first.create(kernel)
    pid = int(state.container_id)
    # the idle loop is running (wrapper, its shell, sleep): a TERM sent between the shell's fork and
    # its exec is caught by the wrapper's trap in the child and never reaches the loop
    deadline = time.monotonic() + 30
    while len(_group_members(pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)

    second = LocalBackend(backend_settings)  # the daemon restarted
    adopted = {s.kernel_id: s for s in second.adopt()}
    assert adopted[kernel.kernel_id].status is ReportedStatus.RUNNING
    assert adopted[kernel.kernel_id].container_id == str(pid)
    assert adopted[kernel.kernel_id].service_ports[0].host_ports == state.service_ports[0].host_ports
    assert set(state.service_ports[0].host_ports) <= second.ports.held
    final = second.stop(kernel.kernel_id, "user-requested")
    assert final.exit_code == 128 + signal.SIGTERM  # the idle loop, recorded by the wrapper
    assert _group_members(pid) == []  # nothing of the group is left (but a zombie for this test process)


def test_a_stop_during_the_bootstrap_never_starts_the_command(backend):
    """The group is signalled once: a stop before the command is forked must keep it from starting
    (it used to start after the bootstrap and run until the SIGKILL of the grace)."""
    kernel = spec(None, bootstrap_script="touch bootstrap-began; sleep 30")
    backend.create(kernel)
    home = backend.settings.scratch_root / kernel.kernel_id / "home" / "work"
    deadline = time.monotonic() + 30
    while not (home / "bootstrap-began").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    final = backend.stop(kernel.kernel_id, "user-requested")
    assert final.exit_code == 128 + signal.SIGTERM  # ended by the TERM, not by the grace's SIGKILL


def test_a_restart_runs_the_same_command_again_on_the_same_ports(backend):
    kernel = http_spec()
    state = backend.create(kernel)
    port = state.service_ports[0].host_ports[0]
    fetch(port)
    again = backend.restart(kernel.kernel_id)
    assert again.status is ReportedStatus.RUNNING and again.container_id != state.container_id
    assert again.service_ports == state.service_ports
    assert "env.txt" in fetch(port)
    assert backend.restart(str(uuid.uuid4())) is None
    batch = spec("echo run; exit 4")
    backend.create(batch)
    wait_status(backend, batch.kernel_id, ReportedStatus.TERMINATED)
    backend.restart(batch.kernel_id)  # an ended kernel starts again
    final = wait_status(backend, batch.kernel_id, ReportedStatus.TERMINATED)
    assert final.exit_code == 4 and final.last_logs.count("run") == 2


def test_a_kernel_that_finished_while_the_daemon_was_down_reports_its_exit_code(backend_settings):
    first = LocalBackend(backend_settings)
    kernel = spec("sleep 0.3; echo done; exit 5")
    first.create(kernel)
    del first
    time.sleep(0.8)
    second = LocalBackend(backend_settings)
    adopted = {s.kernel_id: s for s in second.adopt()}
    assert adopted[kernel.kernel_id].status is ReportedStatus.TERMINATED
    assert adopted[kernel.kernel_id].exit_code == 5
    assert adopted[kernel.kernel_id].reason == "self-terminated"
    assert "done" in adopted[kernel.kernel_id].last_logs
    state_file = json.loads((backend_settings.scratch_root / kernel.kernel_id / "kernel.json").read_text())
    assert state_file["status"] == "TERMINATED" and state_file["exit_code"] == 5
    second.stop(kernel.kernel_id, "user-requested")


def test_a_vanished_process_without_an_exit_code_is_reported_lost(backend_settings):
    backend = LocalBackend(backend_settings)
    kernel_id = str(uuid.uuid4())
    dead = subprocess.Popen(["true"])
    dead.wait()
    kdir = backend_settings.scratch_root / kernel_id
    kdir.mkdir(parents=True)
    (kdir / "kernel.json").write_text(json.dumps({
        "kernel_id": kernel_id, "session_id": None, "status": "RUNNING", "pid": dead.pid, "start_time": 1,
        "service_ports": [], "exit_code": None, "reason": None}))
    state = {s.kernel_id: s for s in backend.adopt()}[kernel_id]
    assert state.status is ReportedStatus.TERMINATED and state.exit_code is None and state.reason == "process-lost"
    backend.stop(kernel_id, "user-requested")


def test_a_kernel_ignoring_sigterm_is_killed_after_the_grace_period(backend_settings):
    backend_settings.stop_timeout = 0.5
    backend = LocalBackend(backend_settings)
    kernel = spec("trap '' TERM; sleep 30")
    backend.create(kernel)
    time.sleep(0.2)
    started = time.monotonic()
    final = backend.stop(kernel.kernel_id, "user-requested")
    assert time.monotonic() - started < 3
    assert final.exit_code == 128 + signal.SIGKILL


def test_a_batch_kernel_past_its_timeout_is_killed_with_reason_task_timeout(backend):
    kernel = spec("sleep 30", session_type="batch", batch_timeout=0.3)
    backend.create(kernel)
    time.sleep(0.5)
    ended = backend.check_timeouts()
    assert [s.kernel_id for s in ended] == [kernel.kernel_id]
    state = wait_status(backend, kernel.kernel_id, ReportedStatus.TERMINATED)
    assert state.reason == "task-timeout" and state.exit_code == 128 + signal.SIGTERM


def test_a_failed_creation_raises_and_leaves_nothing_behind(backend, backend_settings):
    kernel = spec("true", mounts=[{"host_path": "/tmp", "container_path": "/home/work/../../etc", "mode": "rw"}])
    with pytest.raises(KernelError) as info:
        backend.create(kernel)
    assert info.value.reason == "invalid-mount"
    assert not (backend_settings.scratch_root / kernel.kernel_id).exists()
    assert backend.ports.held == frozenset()
    with pytest.raises(KernelError, match="insufficient-cuda-devices"):
        backend.create(spec("true", slots={"cuda.device": "1"}))


def _connects(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def test_kernel_services_listen_only_on_the_configured_address_whatever_the_session_says(tmp_path):
    """Issue 9: a service port is not a back door around the app proxy's permit."""
    settings = BackendSettings(agent_id="local-bind", scratch_root=tmp_path / "scratch", port_range=PORTS,
                               stop_timeout=2, host_address="127.0.0.2", kernel_host="127.0.0.2")
    backend = LocalBackend(settings)
    kernel = spec(None, image="local/python-http:1.0", environ={"BACKENDAI_HOST": "0.0.0.0"},
                  service_ports=[{"name": "web", "protocol": "http", "container_ports": [8080]}])
    try:
        state = backend.create(kernel)
        port = state.service_ports[0].host_ports[0]
        deadline = time.monotonic() + 10
        while not _connects("127.0.0.2", port):
            assert time.monotonic() < deadline, "the service never listened on 127.0.0.2"
            time.sleep(0.05)
        assert state.host == "127.0.0.2"
        assert not _connects("127.0.0.1", port), "the session's BACKENDAI_HOST=0.0.0.0 must not widen the bind"
    finally:
        backend.stop(kernel.kernel_id, "test-cleanup")


def test_a_kernel_started_just_before_the_daemon_died_is_ended_when_its_creation_is_discarded(backend_settings):
    """kill -9 of the daemon between starting a kernel's process and recording its pid left the state
    PREPARING with no pid: the next start discarded the kernel but its processes ran on, untracked."""
    first = LocalBackend(backend_settings)
    kernel = spec(None)
    pid = int(first.create(kernel).container_id)
    deadline = time.monotonic() + 30
    while len(_group_members(pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    state_file = backend_settings.scratch_root / kernel.kernel_id / "kernel.json"
    state = json.loads(state_file.read_text())
    state.update(status="PREPARING", pid=None, start_time=None, service_ports=[])  # as the crash left it
    state_file.write_text(json.dumps(state))

    second = LocalBackend(backend_settings)  # the daemon restarted
    assert kernel.kernel_id not in {s.kernel_id for s in second.adopt()}
    deadline = time.monotonic() + 10
    while _group_members(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _group_members(pid) == [] and not (backend_settings.scratch_root / kernel.kernel_id).exists()
