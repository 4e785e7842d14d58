"""``python -m appproxy.worker --processes N`` (SO_REUSEPORT) and its event loop, as real processes
against a coordinator double that speaks the worker API over HTTP: the processes share the app
ports and all of them answer, one of them talks to the coordinator, the table reaches every one,
a dead follower comes back, and the loop is uvloop unless asked otherwise."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from worker_support import OWNER, SECRET, circuit, free_port, upstream_app

from appproxy import tokens
from appproxy.worker.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


class HTTPCoordinator:
    """The coordinator's worker API, recorded (a thread of this process)."""

    def __init__(self, circuits):
        self.circuits = list(circuits)
        self.revision = 1
        self.registrations: list[dict] = []
        self.heartbeats: list[dict] = []
        self.shutdowns = 0
        self.table_reads = 0
        coordinator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, data, status=200):
                body = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _read(self):
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length)) if length else {}

            def do_POST(self):
                body = self._read()
                if self.path == "/workers/register":
                    coordinator.registrations.append(body)
                    return self._send({"worker": {}, "secret": SECRET, "revision": coordinator.revision,
                                       "permit_ttl": 3600})
                if self.path.endswith("/shutdown"):
                    coordinator.shutdowns += 1
                    return self._send({}, 200)
                if self.path.endswith("/heartbeat"):
                    coordinator.heartbeats.append(body)
                    return self._send({"status": "ALIVE", "revision": coordinator.revision})
                return self._send({"type": "x/url-not-found"}, 404)

            def do_GET(self):
                coordinator.table_reads += 1
                self._send({"revision": coordinator.revision, "full": True, "removed": [],
                            "circuits": coordinator.circuits})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def set(self, circuits):
        self.circuits = list(circuits)
        self.revision += 1

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def wait_for(check, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _tcp_sockets():
    """(local port, remote port, state, inode) of every IPv4 TCP socket of this machine."""
    rows = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        rows.append((int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16), fields[3],
                     int(fields[9])))
    return rows


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


def listeners_by_pid(port: int, pids) -> dict[int, int]:
    """How many sockets listening on ``port`` each of ``pids`` holds."""
    listening = {inode for local, _, state, inode in _tcp_sockets() if local == port and state == "0A"}
    return {pid: len(listening & _socket_inodes(pid)) for pid in pids}


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def start_worker(coordinator, ports, api_port, log_path, *extra):
    mode = ["--mode", "port", "--port-range", f"{min(ports)}-{max(ports)}"] if ports else []
    argv = [sys.executable, "-m", "appproxy.worker", "--coordinator-url", coordinator.url, "--name", "multi",
            *mode, "--api-port", str(api_port),
            "--heartbeat-interval", "0.5", "--sync-interval", "60", "--full-sync-interval", "600",
            "--release-after", "60", "--shutdown-grace", "1", *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAI_PROXY_")}
    env["BAI_PROXY_TOKEN"] = "t"
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log_path.open("wb"),
                            start_new_session=True)


def fresh_get(port: int, cookie: str) -> tuple[int, bytes]:
    """One request on a new connection (so the kernel picks a listener each time)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET /page HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n"
                     "Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data[9:12]), data.partition(b"\r\n\r\n")[2]


@pytest.fixture
def stop_after():
    started = []
    yield started.append
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_two_processes_share_the_app_ports_and_one_talks_to_the_coordinator(tmp_path, stop_after):
    port, second_port, api_port = free_port(), free_port(), free_port()
    with upstream_app() as app_port:
        c = circuit(port=port, target_port=app_port)
        coordinator = HTTPCoordinator([c])
        log_path = tmp_path / "worker.log"
        worker = start_worker(coordinator, [port, second_port], api_port, log_path, "--processes", "2")
        stop_after(worker)
        try:
            health = wait_for(lambda: _health(api_port, processes=2), "the worker and its follower")
            assert health["event_loop"] == "uvloop"
            followers = wait_for(lambda: children_of(worker.pid), "the follower process")
            assert len(followers) == 1
            pids = [worker.pid, *followers]
            wait_for(lambda: all(listeners_by_pid(port, pids).values()), "both processes listening on the port")

            # requests on fresh connections land on both processes, and both admit the permit
            cookie = f"{tokens.permit_cookie_name(c['id'])}={tokens.make_permit(SECRET, c['id'], OWNER, 600)}"
            before = {pid: _socket_inodes(pid) for pid in pids}
            served_by: set[int] = set()
            for _ in range(40):
                status, body = fresh_get(port, cookie)
                assert status == 200 and b"bai-test http app at /page" in body
                upstream = {inode for _, remote, state, inode in _tcp_sockets() if remote == app_port
                            and state == "01"}
                served_by |= {pid for pid in pids if (_socket_inodes(pid) - before[pid]) & upstream}
            assert served_by == set(pids)
            assert fresh_get(port, "nothing=1")[0] == 403  # no permit, no page

            # one logical worker: one registration; the follower read the table itself
            assert len(coordinator.registrations) == 1
            assert coordinator.table_reads >= 2
            # the follower's traffic reaches the coordinator through the primary's heartbeats
            wait_for(lambda: any(c["id"] in hb.get("circuits", {}) for hb in coordinator.heartbeats),
                     "a heartbeat with the circuit's last access")

            # a change reaches the follower at once (a signed hint to the primary, which nudges it)
            d = circuit(port=second_port, target_port=app_port, public=True)
            coordinator.set([d])
            body = json.dumps({"revision": coordinator.revision}).encode()
            answer = httpx.post(f"http://127.0.0.1:{api_port}/v1/hint", content=body,
                                headers={"X-AppProxy-Signature": tokens.sign_hint(SECRET, body)})
            assert answer.status_code == 202
            wait_for(lambda: all(listeners_by_pid(second_port, pids).values()), "both processes on the new port",
                     timeout=10)
            # the removed circuit is gone in both processes (404 on its port while it is released)
            assert {fresh_get(port, cookie)[0] for _ in range(30)} == {404}
            assert {fresh_get(second_port, "")[0] for _ in range(30)} == {200}

            # a follower that dies is started again
            os.kill(followers[0], signal.SIGKILL)
            replacement = wait_for(lambda: [p for p in children_of(worker.pid) if p != followers[0]],
                                   "a new follower")
            wait_for(lambda: listeners_by_pid(second_port, replacement)[replacement[0]], "the new follower listening")

            # stopping the primary stops the follower, and the coordinator hears one goodbye
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(20) == 0
            wait_for(lambda: not Path(f"/proc/{replacement[0]}").exists() or
                     Path(f"/proc/{replacement[0]}/stat").read_text().split(")")[1].split()[0] == "Z",
                     "the follower gone")
            assert coordinator.shutdowns == 1
            assert len(coordinator.registrations) == 1
        finally:
            coordinator.close()
    log = log_path.read_text()
    assert "uvloop" in log and "primary process of 2" in log and "follower process" in log


def _health(api_port: int, processes: int):
    try:
        answer = httpx.get(f"http://127.0.0.1:{api_port}/health", timeout=1)
    except httpx.HTTPError:
        return None
    data = answer.json() if answer.status_code == 200 else {}
    return data if data.get("processes") == processes else None


def test_wildcard_mode_shares_its_one_port_between_the_processes(tmp_path, stop_after):
    port, api_port = free_port(), free_port()
    with upstream_app() as app_port:
        c = circuit(subdomain="app1", target_port=app_port, public=True)
        coordinator = HTTPCoordinator([c])
        try:
            worker = start_worker(coordinator, [], api_port, tmp_path / "worker.log", "--mode", "wildcard",
                                  "--wildcard-domain", "apps.test", "--wildcard-port", str(port), "--processes", "2")
            stop_after(worker)
            wait_for(lambda: _health(api_port, processes=2), "the worker and its follower")
            pids = [worker.pid, *wait_for(lambda: children_of(worker.pid), "the follower")]
            wait_for(lambda: all(listeners_by_pid(port, pids).values()), "both processes on the wildcard port")
            for _ in range(10):
                answer = httpx.get(f"http://127.0.0.1:{port}/w", headers={"Host": f"app1.apps.test:{port}"})
                assert answer.status_code == 200 and "bai-test http app at /w" in answer.text
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(20) == 0
            assert coordinator.shutdowns == 1 and len(coordinator.registrations) == 1
        finally:
            coordinator.close()


def test_an_endpoint_served_by_several_processes_reports_the_traffic_of_all(tmp_path, stop_after):
    from inference_support import inference_circuit, replicas, route

    port, api_port = free_port(), free_port()
    with replicas("r1") as (replica,):
        c = inference_circuit(port, [route(replica)], public=True)
        coordinator = HTTPCoordinator([c])
        try:
            worker = start_worker(coordinator, [port], api_port, tmp_path / "worker.log", "--processes", "2")
            stop_after(worker)
            wait_for(lambda: _health(api_port, processes=2), "the worker and its follower")
            pids = [worker.pid, *wait_for(lambda: children_of(worker.pid), "the follower")]
            wait_for(lambda: all(listeners_by_pid(port, pids).values()), "both processes on the endpoint's port")

            sent = 0

            def answered():  # both processes' health checks must have passed before they route
                nonlocal sent
                sent += 10
                return {fresh_get(port, "")[0] for _ in range(10)} == {200}
            wait_for(answered, "both processes routing to the healthy replica")
            for _ in range(40):
                assert fresh_get(port, "")[0] == 200
            sent += 40
            # the primary's heartbeats carry the sum of both processes' counters: every request
            wait_for(lambda: _requests_total(coordinator, c["id"]) >= sent, "every request counted")
            assert _requests_total(coordinator, c["id"]) == sent
        finally:
            coordinator.close()


def _requests_total(coordinator, circuit_id: str) -> int:
    for beat in reversed(coordinator.heartbeats):
        counters = (beat.get("inference") or {}).get(circuit_id, {}).get("counters")
        if counters:
            return counters["requests_total"]
    return 0


def test_the_event_loop_is_uvloop_unless_asyncio_is_asked_for(tmp_path, stop_after):
    port, api_port = free_port(), free_port()
    coordinator = HTTPCoordinator([])
    try:
        log_path = tmp_path / "worker.log"
        worker = start_worker(coordinator, [port], api_port, log_path, "--loop", "asyncio")
        stop_after(worker)
        health = wait_for(lambda: _health(api_port, processes=1), "the worker")
        assert health["event_loop"].startswith("asyncio")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0
        assert "(asyncio event loop, primary process of 1)" in log_path.read_text()
    finally:
        coordinator.close()


def test_processes_and_loop_options():
    base = ["--coordinator-url", "http://127.0.0.1:9", "--token", "t", "--port-range", "32000-32009"]
    config = load_config(base, env={})
    assert (config.processes, config.loop) == (1, "uvloop")
    assert load_config([*base, "--processes", "0"], env={}).processes == (os.cpu_count() or 1)
    assert load_config(base, env={"BAI_PROXY_PROCESSES": "3", "BAI_PROXY_LOOP": "asyncio"}).processes == 3
    assert load_config(base, env={"BAI_PROXY_LOOP": "asyncio"}).loop == "asyncio"
    for bad in (["--processes", "-1"], ["--processes", "many"], ["--loop", "trio"]):
        with pytest.raises(ConfigError):
            load_config([*base, *bad], env={})
