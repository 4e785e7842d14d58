"""Shared pieces of the model-serving end-to-end tests (tests/e2e/test_serving_*.py): a real app
proxy worker beside the live stack, the test model folder uploaded with the official client,
``service ...`` commands parsed from ``--output json``, requests through an endpoint's URL, a
bounded load loop and the local kernel of a route (to kill it).

Everything waits with a deadline and every loop is bounded in requests and in time."""
from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from proxy_worker_support import LiveProxyWorker

MODEL_DIR = Path(__file__).resolve().parent / "e2e" / "serving_model"
LOCAL_IMAGE = "local/inference:1.0"
DOCKER_IMAGE = "bai-test/inference:1.0"
SMALL = ("-r", "cpu=0.25", "-r", "mem=128m")


def start_proxy(live_stack) -> LiveProxyWorker:
    from appproxy import services as proxy_services

    token = proxy_services.issue_token("serving e2e proxy", authority="serving-proxy")[1]
    return LiveProxyWorker(live_stack, token, "serving-proxy", slots=20, log_level="INFO").start()


# --- the official client ----------------------------------------------------------------------------

def first_json(text: str) -> dict | None:
    """The first JSON object printed (the client indents it over several lines; warnings come first)."""
    decoder = json.JSONDecoder()
    at = text.find("{")
    while at != -1:
        try:
            value, _ = decoder.raw_decode(text, at)
            if isinstance(value, dict):
                return value
        except ValueError:
            pass
        at = text.find("{", at + 1)
    return None


def cli_json(client, keypair, *args, ok: bool = True) -> tuple[dict, str]:
    """``backend.ai --output json <args>``: (the first JSON object it printed, its whole output)."""
    done = client.cli(keypair, "--output", "json", *args)
    parsed = first_json(done.stdout)
    report = f"exit {done.returncode}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    if ok:
        assert done.returncode == 0 and "Traceback" not in done.stderr, report
        assert parsed is not None and "error" not in parsed, report
    else:
        assert done.returncode != 0, report
        assert "Traceback" not in done.stderr, report
    return parsed or {}, done.stdout + done.stderr


def cli_done(client, keypair, *args) -> str:
    """A command that answers ``Done.``-style text (``service scale``, ``rm``, ``update-traffic-ratio``)."""
    done = client.cli(keypair, *args)
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "Traceback" not in output and "✘" not in output, output[-3000:]
    return output


def upload_model_folder(client, keypair, name: str, scratch: Path, files: dict[str, str] | None = None,
                        usage_mode: str = "model") -> None:
    """``vfolder create <name> local:volume1 --usage-mode model`` and ``vfolder upload`` of the test
    model (``files``: other contents, {file name: text}), written under ``scratch`` first."""
    done = client.cli(keypair, "vfolder", "create", name, "local:volume1", "--usage-mode", usage_mode)
    assert done.returncode == 0, done.stdout + done.stderr
    source = scratch / f"model-{name}"
    if source.exists():
        shutil.rmtree(source)
    source.mkdir(parents=True)
    if files is None:
        for path in MODEL_DIR.iterdir():
            shutil.copy(path, source / path.name)
    else:
        for file_name, text in files.items():
            (source / file_name).write_text(text)
    paths = sorted(str(p) for p in source.iterdir())
    if paths:
        done = client.cli(keypair, "vfolder", "upload", name, *paths, "--base-dir", str(source))
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout + done.stderr


def make_model_folder(user, name: str, files: dict[str, str] | None = None):
    """A model folder made through the manager's services (no client round trips), with the test model
    or ``files`` ({file name: text}) uploaded through the storage proxy."""
    import io

    from vfolders import services as vfolder_services

    folder = vfolder_services.create_folder(user, name=name, usage_mode="model")
    contents = files if files is not None else {p.name: p.read_text() for p in MODEL_DIR.iterdir()}
    for file_name, text in contents.items():
        data = text.encode()
        vfolder_services.upload_file_object(user, str(folder.pk), ".", file_name, io.BytesIO(data), len(data))
    return folder


def service_info(client, keypair, name: str) -> dict:
    """``service info`` as the client prints it: the endpoint with ``routings`` [{routing_id, session,
    status, traffic_ratio}]."""
    parsed, _ = cli_json(client, keypair, "service", "info", name)
    return parsed["items"][0]


def route_statuses(info: dict) -> list[str]:
    return sorted(str(r["status"]).lower() for r in info.get("routings") or [])


# --- requests through the endpoint ------------------------------------------------------------------

def predict(http: httpx.Client, url: str, token: str | None, payload=None) -> httpx.Response:
    headers = {"Authorization": f"BackendAI {token}"} if token else {}
    return http.post(url.rstrip("/") + "/v1/predict", json=payload if payload is not None else {"q": 1},
                     headers=headers)


def spread(http: httpx.Client, url: str, token: str, count: int) -> Counter:
    """``count`` requests in a row: how many each replica (session id) answered; every one must be 200."""
    seen: Counter = Counter()
    for i in range(count):
        response = predict(http, url, token, {"i": i})
        assert response.status_code == 200, (i, response.status_code, response.text[:500])
        seen[response.json()["replica"]] += 1
    return seen


@dataclass
class LoadLoop:
    """Requests through the endpoint from ``threads`` threads until stopped, at most ``max_requests``
    and ``max_seconds``: each is recorded as (when it was sent, its status, the answering replica or
    the error)."""

    url: str
    token: str | None
    threads: int = 2
    max_requests: int = 20_000
    max_seconds: float = 90.0
    pause: float = 0.005
    results: list = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(self.threads)]

    def _run(self, n: int) -> None:
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(timeout=10) as http:
            while not self._stop.is_set() and time.monotonic() < deadline:
                with self._lock:
                    if len(self.results) >= self.max_requests:
                        return
                sent = time.monotonic()
                try:
                    response = predict(http, self.url, self.token, {"thread": n})
                    entry = (sent, response.status_code,
                             response.json().get("replica") if response.status_code == 200 else response.text[:300])
                except (httpx.HTTPError, ValueError) as exc:
                    entry = (sent, 0, repr(exc))
                with self._lock:
                    self.results.append(entry)
                time.sleep(self.pause)

    def __enter__(self):
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(15)

    def snapshot(self) -> list:
        with self._lock:
            return list(self.results)

    def failures(self) -> list:
        return [r for r in self.snapshot() if r[1] != 200]

    def replicas_since(self, since: float) -> Counter:
        """Who answered the requests sent after ``since``."""
        return Counter(r[2] for r in self.snapshot() if r[0] >= since and r[1] == 200)


# --- replicas ---------------------------------------------------------------------------------------

def kernel_process_group(live_stack, session) -> int:
    """The process group of a session's local kernel (its state file under the agent's scratch root)."""
    kernel = session.kernels.get()
    for state_file in live_stack.data_dir.glob(f"scratch-*/{kernel.pk}/kernel.json"):
        pid = int(json.loads(state_file.read_text()).get("pid") or 0)
        if pid:
            return pid
    raise AssertionError(f"no local kernel state for {kernel.pk}")


def replica_url(session) -> str:
    """``http://host:port`` of a replica's inference port (its kernel's first published service port)."""
    kernel = session.kernels.get()
    port = next(p for p in kernel.service_ports if p.get("host_ports"))
    return f"http://{kernel.kernel_host or '127.0.0.1'}:{port['host_ports'][0]}"


def kill_replica(live_stack, session) -> int:
    """kill -9 the whole process group of a session's local kernel (the wrapper and the server)."""
    pgid = kernel_process_group(live_stack, session)
    os.killpg(pgid, signal.SIGKILL)
    return pgid


def binomial_bound(n: int, p: float, sigmas: float = 5.0) -> tuple[float, float]:
    """The range ``n * p ± sigmas * sd`` of a Binomial(n, p) count: outside it by chance about once in
    3.5 million runs at 5 sigma."""
    sd = (n * p * (1 - p)) ** 0.5
    return n * p - sigmas * sd, n * p + sigmas * sd
