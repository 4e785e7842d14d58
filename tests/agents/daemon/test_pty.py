"""Terminals and TCP connections into kernels, in both backends, for real:
``docker exec`` with a TTY in ``bai-test/shell``/``bai-test/http`` containers,
and a shell on a pseudo-terminal in a local kernel's working directory."""
from __future__ import annotations

import os
import re
import shutil
import threading
import time
import uuid

import pytest

from agents.daemon.backends.base import BackendSettings, KernelError
from agents.daemon.backends.docker import LABEL_AGENT, DockerBackend
from agents.daemon.backends.local import LocalBackend, _group_members, _proc_stat
from agents.protocol import KernelSpec, ReportedStatus

AGENT_ID = f"pytest-pty-{os.getpid()}"
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else shutil.which("python3")
MiB = 1024**2


def spec(image: str, command: str | None = None, **extra) -> KernelSpec:
    data = {"kernel_id": str(uuid.uuid4()), "session_id": str(uuid.uuid4()), "image": image,
            "session_type": "interactive", "cluster_hostname": "main1",
            "slots": {"cpu": "0.5", "mem": str(64 * MiB)}, "environ": {"GREETING": "hi-there"},
            "startup_command": command}
    data.update(extra)
    return KernelSpec.from_wire(data)


class Collector:
    """Reads an endpoint in a thread, so a test waits with a deadline instead of blocking."""

    def __init__(self, endpoint):
        self.endpoint = endpoint
        self.data = b""
        self.ended = threading.Event()
        self._changed = threading.Condition()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            chunk = self.endpoint.read(4096)
            with self._changed:
                if not chunk:
                    self.ended.set()
                else:
                    self.data += chunk
                self._changed.notify_all()
            if not chunk:
                return

    def wait_for(self, needle: bytes, timeout: float = 10.0) -> bytes:
        """Everything read so far, once ``needle`` is in it."""
        with self._changed:
            ok = self._changed.wait_for(lambda: needle in self.data or self.ended.is_set(), timeout)
            assert ok and needle in self.data, f"{needle!r} never came; got {self.data!r}"
            return self.data

    def wait_end(self, timeout: float = 10.0) -> bytes:
        assert self.ended.wait(timeout), f"the stream never ended; got {self.data!r}"
        return self.data


def _alive(pid: int) -> bool:
    fields = _proc_stat(pid)
    return bool(fields) and fields[0] not in ("Z", "X")


# --- Docker -------------------------------------------------------------------------------------

@pytest.fixture
def docker_backend(docker_client, test_images, tmp_path):
    backend = DockerBackend(BackendSettings(agent_id=AGENT_ID, scratch_root=tmp_path, port_range=(31300, 31349),
                                            stop_timeout=2), client=docker_client)
    yield backend
    for container in docker_client.containers.list(all=True, filters={"label": f"{LABEL_AGENT}={AGENT_ID}"}):
        container.remove(force=True, v=True)


def test_a_docker_terminal_runs_echo_hello_resizes_and_reports_the_exit_code(docker_backend, test_images):
    kernel = docker_backend.create(spec(test_images["shell"]))
    assert kernel.status is ReportedStatus.RUNNING
    pty = docker_backend.open_pty(kernel.kernel_id, 24, 80, uuid.uuid4().hex)
    out = Collector(pty)
    try:
        pty.write(b"echo hello\n")
        out.wait_for(b"\nhello\r\n")
        pty.resize(40, 132)
        pty.write(b"stty size; pwd; echo $TERM $GREETING\n")
        seen = out.wait_for(b"xterm-256color hi-there")
        assert b"40 132" in seen and b"/home/work" in seen
        pty.write(b"exit 3\n")
        out.wait_end()
        assert pty.exit_code() == 3
    finally:
        pty.close()


def test_closing_a_docker_terminal_ends_its_processes(docker_backend, docker_client, test_images):
    kernel = docker_backend.create(spec(test_images["shell"]))
    tag = uuid.uuid4().hex
    one = docker_backend.open_pty(kernel.kernel_id, 24, 80, tag)
    two = docker_backend.open_pty(kernel.kernel_id, 24, 80, uuid.uuid4().hex)  # several terminals at once
    container = docker_client.containers.get(kernel.container_id)
    out_one, out_two = Collector(one), Collector(two)
    try:
        one.write(b"sleep 4321\n")
        two.write(b"echo sec\"\"ond\n")
        out_two.wait_for(b"\nsecond\r\n")
        deadline = time.monotonic() + 5
        while b"sleep 4321" not in container.exec_run(["ps"]).output:
            assert time.monotonic() < deadline, "the terminal's command never started"
            time.sleep(0.1)
        one.close()
        out_one.wait_end(3)
        deadline = time.monotonic() + 5
        while b"sleep 4321" in container.exec_run(["ps"]).output:
            assert time.monotonic() < deadline, "the closed terminal's processes survived"
            time.sleep(0.2)
        two.write(b"echo still-\"\"here\n")  # the other terminal is untouched
        out_two.wait_for(b"\nstill-here\r\n")
    finally:
        one.close()
        two.close()


def test_a_docker_tcp_stream_reaches_the_published_service_port(docker_backend, test_images):
    kernel = docker_backend.create(spec(test_images["http"], service_ports=[
        {"name": "echo", "protocol": "tcp", "container_ports": [9000]}]))
    deadline = time.monotonic() + 10
    while True:  # the echo server starts with the container
        try:
            tcp = docker_backend.open_tcp(kernel.kernel_id, 9000, timeout=2)
            tcp.write(b"ping\n")
            Collector(tcp).wait_for(b"ping\n", timeout=3)
            break
        except (KernelError, AssertionError):
            assert time.monotonic() < deadline, "the echo port never answered"
            time.sleep(0.2)
    tcp.close()
    with pytest.raises(KernelError, match="port-not-published"):
        docker_backend.open_tcp(kernel.kernel_id, 22)
    with pytest.raises(KernelError, match="kernel-not-running"):
        docker_backend.open_pty(str(uuid.uuid4()), 24, 80, "x")


# --- local --------------------------------------------------------------------------------------

@pytest.fixture
def local_backend(tmp_path):
    settings = BackendSettings(agent_id="local-pty", scratch_root=tmp_path / "scratch", port_range=(31350, 31399),
                               stop_timeout=2)
    backend = LocalBackend(settings)
    yield backend
    for state in backend.list_kernels():
        backend.stop(state.kernel_id, "test-cleanup")


def test_a_local_terminal_runs_in_the_kernels_directory_with_its_environment(local_backend):
    kernel = local_backend.create(spec("bai-test/shell:1.0"))
    pty = local_backend.open_pty(kernel.kernel_id, 30, 100, uuid.uuid4().hex)
    out = Collector(pty)
    try:
        pty.write(b"echo hel\"\"lo\n")  # the echoed command line says hel""lo, the output hello
        out.wait_for(b"hello\r\n")
        pty.write(b"stty size; pwd; echo $GREETING; tty\n")
        seen = out.wait_for(b"/dev/pts/")
        assert b"30 100" in seen and f"{kernel.kernel_id}/home/work".encode() in seen and b"hi-there" in seen
        pty.resize(50, 60)
        pty.write(b"stty size\n")
        out.wait_for(b"50 60")
        pty.write(b"exit 7\n")
        out.wait_end()
        assert pty.exit_code() == 7
    finally:
        pty.close()


def test_closing_a_local_terminal_kills_its_process_group(local_backend):
    kernel = local_backend.create(spec("bai-test/shell:1.0"))
    pty = local_backend.open_pty(kernel.kernel_id, 24, 80, uuid.uuid4().hex)
    out = Collector(pty)
    pty.write(b"sleep 4321 & nohup sleep 4322 >/dev/null 2>&1 & echo pids=$(jobs -p | tr '\\n' ,)end\n")
    pids = [int(p) for p in re.search(rb"pids=([0-9,]+),end", out.wait_for(b",end\r\n"))[1].split(b",")]
    group = pty.proc.pid
    assert len(pids) == 2 and all(_alive(pid) for pid in pids)
    pty.close()
    out.wait_end(3)
    deadline = time.monotonic() + 5
    while _group_members(group) or any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "the terminal's processes survived"
        time.sleep(0.05)
    assert local_backend.list_kernels()[0].status is ReportedStatus.RUNNING  # the kernel itself lives on


def test_a_local_tcp_stream_reaches_the_kernels_service_port(local_backend):
    command = f"exec {PYTHON} -m http.server $PORT --bind 127.0.0.1"
    kernel = local_backend.create(spec("x", command, service_ports=[
        {"name": "web", "protocol": "http", "container_ports": [8080]}]))
    deadline = time.monotonic() + 10
    while True:
        try:
            tcp = local_backend.open_tcp(kernel.kernel_id, 8080, timeout=1)
            break
        except KernelError:
            assert time.monotonic() < deadline, "the http server never listened"
            time.sleep(0.1)
    try:
        tcp.write(b"GET / HTTP/1.0\r\n\r\n")
        assert Collector(tcp).wait_end().startswith(b"HTTP/1.0 200")
    finally:
        tcp.close()
    with pytest.raises(KernelError, match="port-not-published"):
        local_backend.open_tcp(kernel.kernel_id, 9999)
