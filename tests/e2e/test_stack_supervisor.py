"""The embedded stack as ``scripts/run`` starts it (its own SQLite database and queue
under a fresh data directory, no Redis): kill -9 of the worker, the agent, the app
proxy or beat is followed by a restart and the stack keeps serving; a beat that
stops ticking is restarted; the console stays quiet; and a stopped stack leaves its
kernels running for the next start to re-adopt."""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import httpx
import pytest

from backendai import stack as embedded_stack
from backendai.signing import signed_headers

pytestmark = [pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 180  # a fresh data dir migrates first; a loaded 2-core machine is slow
SESSION = {"image": "local/python-http:1.0", "type": "interactive", "enqueueOnly": True,
           "config": {"resources": {"cpu": "0.1", "mem": "256m"}}}
# the child environment: the embedded defaults, not the test suite's database and Redis
DROPPED = ("DATABASE_URL", "REDIS_URL", "TEST_DATABASE_URL", "TEST_REDIS_URL", "BACKEND_DATA_DIR", "INTERNAL_WEB_URL",
           "PROMETHEUS_MULTIPROC_DIR")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def free_stack_port(data_dir: Path) -> int:
    """A web port whose whole derived block of ports is free right now."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        args = argparse.Namespace(port=port, host="127.0.0.1", data_dir=str(data_dir), agent_id="local-agent",
                                  agent_backend="local", agent_ports=None, proxy_ports=None, proxy_api_port=0)
        embedded_stack.resolve_ports(args)
        if not embedded_stack.busy_ports(args):
            return port
    raise AssertionError("no free block of ports")


class Embedded:
    """``scripts/run`` in the background; its console goes to ``<data>/console.log``."""

    def __init__(self, data_dir: Path, port: int):
        self.data_dir, self.port = data_dir, port
        self.url = f"http://127.0.0.1:{port}"
        self.console_file = data_dir.parent / "console.log"
        self.offset = 0
        self.process: subprocess.Popen | None = None
        self.env = {k: v for k, v in os.environ.items()
                    if k not in DROPPED and not k.startswith(("PYTEST", "DJANGO_", "BAI_"))}
        # the least the beat check allows, so a beat that stops ticking shows within seconds
        self.env["BEAT_MAX_AGE"] = "15"

    def start(self) -> None:
        self.offset = self.console_file.stat().st_size if self.console_file.exists() else 0
        with open(self.console_file, "ab") as console:
            self.process = subprocess.Popen(
                [str(ROOT / "scripts" / "run"), "--port", str(self.port), "--data-dir", str(self.data_dir),
                 "--health-interval", "1", "--beat-grace", "3", "--stop-grace", "20"],
                cwd=ROOT, env=self.env, stdout=console, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        self.wait_for(lambda: (self.data_dir / "credentials.json").exists() and answers(f"{self.url}/healthz"),
                      START_TIMEOUT, "the web server")
        self.credentials = json.loads((self.data_dir / "credentials.json").read_text())
        self.wait_for(lambda: len(re.findall(r"^\[stack \] \w+ started", self.console(), re.M)) >= 5,
                      START_TIMEOUT, "every process to start")

    def console(self) -> str:
        """This run's console (since the last start)."""
        with open(self.console_file, "rb") as console:
            console.seek(self.offset)
            return console.read().decode(errors="replace")

    def pids(self, name: str) -> list[int]:
        return [int(p) for p in re.findall(rf"^\[stack \] {name} started \(pid (\d+)\)", self.console(), re.M)]

    def wait_for(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"the stack exited ({self.process.returncode}) while waiting for {what}\n"
                                     f"{self.console()[-8000:]}")
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}\n{self.console()[-8000:]}")

    def api(self, method: str, target: str, body=None) -> httpx.Response:
        headers = signed_headers(self.credentials["access_key"], self.credentials["secret_key"], method, target,
                                 f"127.0.0.1:{self.port}")
        return httpx.request(method, self.url + target, headers=headers, timeout=60,
                             content=json.dumps(body) if body is not None else None)

    def status(self, name: str) -> str | None:
        response = self.api("GET", f"/session/{name}")
        return response.json()["status"] if response.status_code == 200 else None

    def run_session(self, name: str, timeout: float = 120) -> dict:
        def create():
            created = self.api("POST", "/session", {**SESSION, "name": name})
            if created.status_code == 404 and "Unknown image" in created.text:
                return None  # the agent has not reported its images yet (its first sync)
            assert created.status_code == 201, created.text
            return created

        self.wait_for(create, timeout, f"session {name} to be created")
        self.wait_for(lambda: self.status(name) == "RUNNING", timeout, f"session {name} to run")
        return self.api("GET", f"/session/{name}").json()

    def destroy(self, name: str) -> None:
        response = self.api("DELETE", f"/session/{name}")
        assert response.status_code == 200, response.text
        self.wait_for(lambda: self.status(name) in ("TERMINATED", None), 120, f"session {name} to end")

    def stop(self, timeout: float = 120) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            raise

    def kernels(self) -> dict[str, dict]:
        states = {}
        for path in (self.data_dir / "agent").glob("*/kernel.json"):
            try:
                states[path.parent.name] = json.loads(path.read_text())
            except (OSError, ValueError):
                pass
        return states


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("embedded") / "data"
    data_dir.mkdir()
    running = Embedded(data_dir, free_stack_port(data_dir))
    running.start()
    try:
        yield running
    finally:
        try:
            running.stop()
        finally:
            for state in running.kernels().values():  # what a failed test may have left running
                if state.get("pid") and alive(int(state["pid"])):
                    os.killpg(int(state["pid"]), signal.SIGKILL)


def test_the_stack_runs_a_session_and_its_console_keeps_only_what_matters(embedded):
    info = embedded.run_session("first")
    embedded.destroy("first")
    access_log = embedded.data_dir / "logs" / "access.log"
    embedded.wait_for(lambda: '"POST /session"' in access_log.read_text(), 30, "the access log")
    console = embedded.console()
    assert info["status"] == "RUNNING"
    assert "Sending due task" not in console
    assert "Task sessions.tasks.schedule_pending[" not in console
    assert "Task agents.tasks.mark_lost_agents[" not in console
    assert '"POST /session"' not in console and '"GET /session/first"' not in console  # in the access log instead


@pytest.mark.parametrize("name", ["worker", "agent", "proxy", "beat"])
def test_a_killed_process_is_restarted_and_a_session_created_afterwards_runs(embedded, name):
    before = embedded.pids(name)[-1]
    os.kill(before, signal.SIGKILL)
    embedded.wait_for(lambda: re.search(rf"^\[stack \] {name} exited with status -9; restarting in [\d.]+ s "
                                        rf"\(restart \d+\)$", embedded.console(), re.M), 60, f"{name} to exit")
    after = embedded.wait_for(lambda: embedded.pids(name)[-1] != before and embedded.pids(name)[-1], 60,
                              f"{name} to restart")
    assert alive(after) and not alive(before)
    if name == "proxy":
        api_port = embedded_stack.derived_ports(embedded.port).proxy_api_port
        embedded.wait_for(lambda: answers(f"http://127.0.0.1:{api_port}/health"), 60, "the proxy to register")
    if name == "beat":
        embedded.wait_for(lambda: beat_ok(embedded), 60, "the new beat to tick")
    embedded.run_session(f"after-{name}")
    embedded.destroy(f"after-{name}")
    assert embedded.process.poll() is None


def beat_ok(embedded) -> bool:
    try:
        with urllib.request.urlopen(f"{embedded.url}/readyz", timeout=5) as response:
            return json.loads(response.read())["checks"]["beat"]["ok"] is True
    except OSError:
        return False


def test_a_beat_that_stops_ticking_is_restarted(embedded):
    embedded.wait_for(lambda: beat_ok(embedded), 60, "the beat to tick")
    frozen = embedded.pids("beat")[-1]
    os.kill(frozen, signal.SIGSTOP)  # alive, but it never ticks again
    embedded.wait_for(lambda: re.search(r"^\[stack \] beat is not ticking \(last tick \d+ s ago; /readyz says "
                                        r"unhealthy\); restarting it \(restart \d+\)$", embedded.console(), re.M),
                      120, "the supervisor to notice")
    embedded.wait_for(lambda: embedded.pids("beat")[-1] != frozen, 60, "a new beat")
    embedded.wait_for(lambda: not alive(frozen), 60, "the frozen beat to be gone")
    embedded.wait_for(lambda: beat_ok(embedded), 60, "the new beat to tick")


def test_a_stopped_stack_leaves_its_kernels_running_and_the_next_start_readopts_them(embedded):
    info = embedded.run_session("kept")
    (kernel_id, state), = [(k, s) for k, s in embedded.kernels().items()
                           if s.get("session_id") == info["sessionId"]]
    pid, port = int(state["pid"]), state["service_ports"][0]["host_ports"][0]
    embedded.wait_for(lambda: answers(f"http://127.0.0.1:{port}/"), 60, "the kernel's web server")

    assert embedded.stop() == 0
    assert "[stack ] stopped (kernels keep running; the next start re-adopts them)" in embedded.console()
    assert alive(pid) and answers(f"http://127.0.0.1:{port}/")  # its port is busy, and the next start allows it

    embedded.start()
    embedded.wait_for(lambda: f"re-adopted kernel {kernel_id}" in embedded.console(), 120, "the re-adoption")
    assert embedded.status("kept") == "RUNNING" and alive(pid)
    embedded.destroy("kept")
    embedded.wait_for(lambda: not alive(pid), 60, "the re-adopted kernel to stop")
