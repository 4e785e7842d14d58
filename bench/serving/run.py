#!/usr/bin/env python3
"""Benchmark: requests through a model-serving endpoint (the app proxy worker's inference
circuit) with 1 and 3 replicas, side by side with direct requests to one replica, in one run;
and the time from ``POST /services`` to the first successful request.

    .venv/bin/python bench/serving/run.py                       # 5 s per target, 16 connections
    .venv/bin/python bench/serving/run.py --duration 10 --connections 32 --keep

In one run, on this machine:

1. the embedded stack (``python -m backendai.stack``: daphne, Celery worker and beat, a local
   agent, a storage proxy and an app proxy worker) on a fresh data directory (SQLite, the queue
   under the data directory: nothing else needs to run), migrated and populated like
   ``scripts/run``;
2. a model folder (``usage_mode: model``) with tests/e2e/serving_model (``model-definition.yaml``,
   ``model.txt``) uploaded through the storage proxy;
3. ``POST /services`` of ``local/inference:1.0`` (agents/daemon/images/inference_server.py, a
   threaded stdlib HTTP/1.1 server) with 1 replica and an API token; the clock runs from the
   create call to the first ``200`` of ``/v1/predict`` through the endpoint's URL;
4. load: ``--connections`` keep-alive HTTP/1.1 connections from an asyncio client in this
   process, each sending ``GET /v1/predict`` back to back for ``--duration`` seconds (after
   ``--warmup``), against (a) one replica directly (its published port), (b) the endpoint with
   1 replica, then ``POST /services/<id>/scale`` to 3 and, once all three answer through the
   endpoint, (c) the endpoint with 3 replicas and (d) the same single replica directly again;
5. requests/s, p50 and p99 latency and errors of each, as a table.

Not a test: it prints figures and exits 0 (non-zero if the stack or the endpoint failed).
The figures depend on the machine: the client, the proxy worker and the replicas share its CPUs.
"""
from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.signed_api import Api  # noqa: E402  (pure Python, no Django)

MODEL_DIR = ROOT / "tests" / "e2e" / "serving_model"
IMAGE = "local/inference:1.0"
READY = r"""
from agents.models import Agent
from appproxy.models import Worker
agent = Agent.objects.filter(status="ALIVE", images__name="local/inference:1.0").exists()
worker = Worker.objects.filter(status="ALIVE").exists()
print("BENCH" + ("ready" if agent and worker else "waiting"))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, headers: dict | None = None, timeout: float = 2) -> tuple[int, bytes]:
    where = urlsplit(url)
    conn = http.client.HTTPConnection(where.netloc, timeout=timeout)
    try:
        conn.request("GET", where.path + (f"?{where.query}" if where.query else ""), headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"timed out waiting for {what}")


# --- the load ---------------------------------------------------------------------------------------

async def _read_response(reader: asyncio.StreamReader) -> int:
    """One HTTP/1.1 response (Content-Length or chunked): its status."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed")
    status = int(status_line.split()[1])
    length, chunked = 0, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readline()).split(b";")[0].strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def _connection(host, port, request: bytes, start: float, end: float, latencies: list, errors: list):
    reader = writer = None
    while time.perf_counter() < end:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            began = time.perf_counter()
            writer.write(request)
            status = await _read_response(reader)
            done = time.perf_counter()
            if began >= start:
                if status == 200:
                    latencies.append(done - began)
                else:
                    errors.append(status)
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            if time.perf_counter() >= start:
                errors.append(type(exc).__name__)
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


def load(url: str, token: str | None, connections: int, duration: float, warmup: float,
         path: str = "/v1/predict?bench=1") -> dict:
    """``connections`` keep-alive connections sending ``GET <path>`` back to back."""
    where = urlsplit(url)
    auth = f"Authorization: BackendAI {token}\r\n" if token else ""
    request = (f"GET {where.path.rstrip('/')}{path} HTTP/1.1\r\nHost: {where.netloc}\r\n{auth}"
               "Accept: application/json\r\n\r\n").encode()
    latencies: list[float] = []
    errors: list = []

    async def main():
        start = time.perf_counter() + warmup
        end = start + duration
        await asyncio.gather(*(_connection(where.hostname, where.port, request, start, end, latencies, errors)
                               for _ in range(connections)))

    asyncio.run(main())
    latencies.sort()

    def pct(p):
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000 if latencies else float("nan")

    return {"rps": len(latencies) / duration, "p50": pct(50), "p99": pct(99), "requests": len(latencies),
            "errors": len(errors), "error_kinds": sorted({str(e) for e in errors})[:5],
            "mean": statistics.fmean(latencies) * 1000 if latencies else float("nan")}


# --- the stack --------------------------------------------------------------------------------------

class Stack:
    def __init__(self, work: Path, python: Path):
        self.work, self.python = work, python
        self.data = work / "data"
        self.data.mkdir()
        self.env = {**os.environ, "BACKEND_DATA_DIR": str(self.data), "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "WARNING"}
        for name in ("DATABASE_URL", "REDIS_URL", "VFOLDER_ROOT", "STORAGE_PROXY_MANAGER_URL",
                     "STORAGE_PROXY_CLIENT_URL", "STORAGE_PROXY_SECRET", "APPPROXY_COORDINATOR_URL"):
            self.env.pop(name, None)  # a private SQLite database, queue and volume under the data directory
        self.process = None

    def stack_cmd(self, *extra) -> list[str]:
        return [str(self.python), "-m", "backendai.stack", "--port", str(self.port), "--data-dir", str(self.data),
                *extra]

    def start(self) -> None:
        for _ in range(20):  # a web port whose derived ports are free too
            self.port = free_port()
            if subprocess.run(self.stack_cmd("--check-ports"), cwd=ROOT, env=self.env,
                              capture_output=True).returncode == 0:
                break
        else:
            raise SystemExit("no free ports for the stack")
        self.url = f"http://127.0.0.1:{self.port}"
        storage = subprocess.run(self.stack_cmd("--storage-env"), cwd=ROOT, env=self.env, capture_output=True,
                                 text=True, check=True).stdout.strip()
        for assignment in storage.removeprefix("export ").split():
            name, _, value = assignment.partition("=")
            self.env[name] = value.strip("'\"")
        manage = [str(self.python), "manage.py"]
        subprocess.run([*manage, "migrate", "--noinput", "-v0"], cwd=ROOT, env=self.env, check=True)
        subprocess.run([*manage, "populate", "--credentials", str(self.data / "credentials.json"), "--url", self.url,
                        "--agent-token", str(self.data / "agent-token"), "--proxy-token",
                        str(self.data / "proxy-token")], cwd=ROOT, env=self.env, check=True, capture_output=True)
        credentials = json.loads((self.data / "credentials.json").read_text())
        self.api = Api(self.url, credentials["access_key"], credentials["secret_key"])
        self.log = open(self.work / "stack.log", "ab")
        self.process = subprocess.Popen(self.stack_cmd(), cwd=ROOT, env=self.env, stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        wait(lambda: http_get(self.url + "/healthz")[0] == 200, 120, "the manager")

        def ready():
            if self.process.poll() is not None:
                raise SystemExit(f"the stack exited ({self.process.returncode}); see {self.work / 'stack.log'}")
            out = subprocess.run([*manage, "shell", "-c", READY], cwd=ROOT, env=self.env, capture_output=True,
                                 text=True).stdout
            return "BENCHready" in out
        wait(ready, 120, "the local agent (with local/inference:1.0) and the app proxy worker", interval=1)

    def kernel_port(self, session_id: str) -> int:
        """The published port of a replica's local kernel (its state file under the agent's scratch root)."""
        for state_file in (self.data / "agent").glob("*/kernel.json"):
            state = json.loads(state_file.read_text())
            if state.get("session_id") == session_id and state.get("service_ports"):
                return int(state["service_ports"][0]["host_ports"][0])
        raise SystemExit(f"no local kernel for session {session_id}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        for state_file in (self.data / "agent").glob("*/kernel.json"):  # kernels outlive the embedded agent
            try:
                pid = int(json.loads(state_file.read_text()).get("pid") or 0)
                if pid and os.readlink(f"/proc/{pid}/cwd").startswith(str(state_file.parent)):
                    os.killpg(pid, signal.SIGKILL)
            except (OSError, ValueError):
                continue


def upload_model(api: Api) -> str:
    folder = api.call("POST", "/folders", {"name": "bench-model", "host": "local:volume1", "usage_mode": "model"})
    folder_id = folder["id"]
    for path in sorted(MODEL_DIR.iterdir()):
        data = path.read_bytes()
        ticket = api.call("POST", "/folders/bench-model/request-upload", {"path": path.name, "size": len(data)})
        where = urlsplit(ticket["url"])
        conn = http.client.HTTPConnection(where.netloc, timeout=60)
        conn.request("PATCH", where.path + "?token=" + ticket["token"], body=data, headers={
            "Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream",
            "Content-Length": str(len(data))})
        resp = conn.getresponse()
        resp.read()
        conn.close()
        if resp.status != 204:
            raise SystemExit(f"uploading {path.name} answered {resp.status}")
    return folder_id


def active_sessions(api: Api, endpoint_id: str) -> list[str]:
    info = api.call("GET", f"/services/{endpoint_id}")
    return [r["session_id"] for r in info.get("active_routes") or []]


def seen_replicas(url: str, token: str, tries: int) -> set[str]:
    seen = set()
    for _ in range(tries):
        status, body = http_get(url.rstrip("/") + "/v1/predict", {"Authorization": f"BackendAI {token}"})
        if status == 200:
            seen.add(json.loads(body)["replica"])
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per target (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring (default 1)")
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections (default 16)")
    parser.add_argument("--replicas", type=int, default=3, help="the larger replica count (default 3)")
    parser.add_argument("--path", default="/v1/predict?bench=1",
                        help="what each request asks for (default /v1/predict?bench=1; /v1/slow?ms=50 for a "
                             "replica that waits)")
    parser.add_argument("--dir", default=None, help="working directory (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (logs, data)")
    parser.add_argument("--short", action="store_true",
                        help="seconds of load, for CI (tests/test_bench_short_modes.py): 0.5 s per target, 4 connections, "
                             "1 and 2 replicas")
    args = parser.parse_args()
    if args.short:
        args.duration, args.warmup, args.connections, args.replicas = 0.5, 0.2, 4, 2

    work = Path(tempfile.mkdtemp(prefix="serving-bench-", dir=args.dir))
    python = ROOT / ".venv" / "bin" / "python"
    if not python.exists():
        python = Path(sys.executable)
    stack = Stack(work, python)
    rows: list[tuple[str, dict]] = []
    try:
        print(f"working directory {work}; starting the embedded stack ...", flush=True)
        stack.start()
        api = stack.api
        folder_id = upload_model(api)

        created_at = time.perf_counter()
        created = api.call("POST", "/services", {
            "name": "bench-svc", "desired_session_count": 1, "image": IMAGE, "group": "default",
            "domain": "default", "cluster_size": 1, "cluster_mode": "single-node", "open_to_public": False,
            "config": {"model": folder_id, "model_mount_destination": "/models", "scaling_group": "default",
                       "resources": {"cpu": "0.5", "mem": "256m"}}})
        endpoint_id = created["endpoint_id"]
        token = api.call("POST", f"/services/{endpoint_id}/token", {"duration": "1h"})["token"]
        url = wait(lambda: api.call("GET", f"/services/{endpoint_id}").get("service_endpoint"), 120,
                   "the endpoint's URL", interval=0.05)
        wait(lambda: http_get(url.rstrip("/") + "/v1/predict", {"Authorization": f"BackendAI {token}"})[0] == 200,
             120, "the first successful request", interval=0.05)
        first_request_s = time.perf_counter() - created_at
        print(f"service create -> first successful request: {first_request_s:.2f} s", flush=True)

        replica = wait(lambda: active_sessions(api, endpoint_id), 60, "the active route")[0]
        direct = f"http://127.0.0.1:{stack.kernel_port(replica)}"
        measure = [("direct to one replica", direct, None), ("endpoint, 1 replica", url, token)]
        for label, target, auth in measure:
            print(f"measuring {label} ...", flush=True)
            rows.append((label, load(target, auth, args.connections, args.duration, args.warmup, args.path)))

        scaled_at = time.perf_counter()
        api.call("POST", f"/services/{endpoint_id}/scale", {"to": args.replicas})
        wait(lambda: len(active_sessions(api, endpoint_id)) == args.replicas, 180, f"{args.replicas} healthy replicas",
             interval=0.2)
        wanted = set(active_sessions(api, endpoint_id))
        seen: set[str] = set()
        wait(lambda: seen.update(seen_replicas(url, token, 20)) or wanted <= seen, 120,
             "every replica answering through the endpoint", interval=0.1)
        scale_s = time.perf_counter() - scaled_at
        print(f"scale 1 -> {args.replicas}: all replicas answering after {scale_s:.2f} s", flush=True)
        for label, target, auth in ((f"endpoint, {args.replicas} replicas", url, token),
                                    ("direct to one replica (again)", direct, None)):
            print(f"measuring {label} ...", flush=True)
            rows.append((label, load(target, auth, args.connections, args.duration, args.warmup, args.path)))
        api.call("DELETE", f"/services/{endpoint_id}")

        print()
        print(f"{os.cpu_count()} CPUs; {args.connections} keep-alive connections; {args.duration:g} s per target "
              f"after {args.warmup:g} s warm-up; GET {args.path} (local/inference:1.0)")
        print(f"{'target':34} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'errors':>7}")
        for label, row in rows:
            print(f"{label:34} {row['rps']:9.0f} {row['p50']:8.2f} {row['p99']:8.2f} {row['mean']:8.2f} "
                  f"{row['errors']:7d}" + (f"  {', '.join(row['error_kinds'])}" if row["errors"] else ""))
        print(f"{'service create -> first 200':34} {first_request_s:9.2f} s")
        print(f"{f'scale 1 -> {args.replicas}, all answering':34} {scale_s:9.2f} s")
        return 0 if all(row["requests"] and not row["errors"] for _, row in rows) else 1
    finally:
        stack.stop()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
