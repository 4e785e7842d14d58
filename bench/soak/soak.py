#!/usr/bin/env python3
"""Soak: the embedded stack under a steady mix of user work, checked for the faults that hide in long runs.

    bench/soak/run                      # 10 minutes, 4 actors
    bench/soak/run --minutes 60         # the long mode (one hour)
    bench/soak/run --minutes 1 --check-every 0.5 --keep

It starts the stack exactly as a user does (``scripts/run --port P --data-dir D``
with no ``DATABASE_URL``/``REDIS_URL``: SQLite, the filesystem broker, the
in-memory layers) on free ports and a fresh data directory, uses the
superadmin keypair ``populate`` wrote to ``credentials.json`` to issue one
keypair per actor (``POST /keypairs``: rate limits are per keypair), and runs
``--actors`` threads until ``--minutes`` have passed.  Each actor owns its sessions and a
folder and repeats: create a session (``local/shell:1.0`` or
``local/python-http:1.0``, waited for RUNNING); open a terminal on it and echo
a line (or, for the http image, open its app through the app proxy and fetch
a page); upload a random file to its folder (tus ``PATCH``), download it,
compare and delete it; destroy its oldest session past ``--sessions-per-actor``
and wait for TERMINATED.  Every request and every operation is recorded with
its outcome and latency.

Every ``--check-every`` minutes and at the end the actors pause and the run
waits (bounded) for the stack to settle, then checks through the API and the
process table:

* no process of the stack exited or was restarted (the supervisor's
  ``[stack ]`` console lines, and the supervisor's child processes compared
  with those it had once started);
* no session stuck in a transitional status past its reconciler timeout, and
  none that the reconciler had to force or fail;
* every agent's occupied slots equal the sum of its live kernels, and the
  local agent runs exactly the live kernels' processes (nothing orphaned);
* no duplicated session (one session per requested name, one kernel each);
* no HTTP 5xx other than 503 (503 is the documented answer to overload);

then destroys every remaining session, checks again that the cluster drains to
zero, stops the stack with SIGINT (as Ctrl-C) and prints a summary: operations,
errors by kind, p50/p95/max latency per operation, and each check.  The exit
status is 1 when any check failed or any operation failed for a reason other
than a 503, 0 otherwise.  Latencies are reported, never judged.

``tests/e2e/test_soak.py`` runs the short mode of this same code in CI.

Hand-written rather than built on a load tool (locust, k6): the checks need
the stack's own processes and API, the workload needs Backend.AI's signed
requests, terminal frames and tus uploads, and the whole run must be one
bounded program the test suite can import.
"""
from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict, deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from websockets.sync.client import connect as ws_connect  # noqa: E402

from backendai import signing  # noqa: E402  (pure Python, no Django)

logging.getLogger("httpx").setLevel(logging.WARNING)  # the recorder keeps every answer; no line per request

# Statuses, as the API reports them (sessions/lifecycle.py owns them).
DONE_SESSION = frozenset({"TERMINATED", "CANCELLED"})
SETTLED_SESSION = DONE_SESSION | {"RUNNING"}
TRANSITIONAL_SESSION = frozenset({"PENDING", "SCHEDULED", "PULLING", "PREPARING", "RESTARTING", "TERMINATING"})
NOT_OCCUPYING_KERNEL = frozenset({"PENDING", "TERMINATED", "CANCELLED", "ERROR"})
RECONCILER_VERDICTS = frozenset({"hang-timeout", "failed-to-start", "agent-lost"})
SHELL_IMAGE = "local/shell:1.0"
HTTP_IMAGE = "local/python-http:1.0"
RESOURCES = {"cpu": "0.1", "mem": "128m"}  # the local images' minimum memory
MAX_MINUTES = 24 * 60


# --- timeouts -----------------------------------------------------------------------------------

@dataclass
class Limits:
    """Per-operation bounds (seconds).  Generous: a loaded two-core machine must not fail a healthy stack."""

    request: float = 60          # one HTTP request
    create: float = 150          # POST /session until RUNNING
    destroy: float = 150         # DELETE until TERMINATED
    terminal: float = 60         # open the websocket and see the echo
    app: float = 90              # start-service until the page comes through the proxy
    transfer: float = 90         # upload + download + delete of one file
    settle: float = 90           # a checkpoint waits this long for the checks to hold
    startup: float = 240         # scripts/run until the agent and the proxy are up
    shutdown: float = 90         # SIGINT until the supervisor exits
    retries_503: int = 6         # a 503 is retried (after Retry-After, capped) this many times
    # the reconciler's timeouts the stack runs with (the defaults of backendai/config.py unless set)
    scheduled_timeout: float = 120
    preparing_timeout: float = 1800
    terminating_timeout: float = 120
    reconcile_slack: float = 45  # beat interval of the reconciler plus a loaded machine's delay

    @classmethod
    def from_env(cls, env: dict, **overrides) -> "Limits":
        limits = cls(**overrides)
        for attr, var in (("scheduled_timeout", "SESSION_SCHEDULED_TIMEOUT"),
                          ("preparing_timeout", "SESSION_PREPARING_TIMEOUT"),
                          ("terminating_timeout", "SESSION_TERMINATING_TIMEOUT")):
            if env.get(var, "").strip().isdigit():
                setattr(limits, attr, float(env[var]))
        return limits

    def reconciler_limit(self, status: str) -> float:
        """Seconds a session may stay in ``status`` before it is stuck past its reconciler timeout."""
        timeouts = {"SCHEDULED": self.scheduled_timeout, "PENDING": self.scheduled_timeout,
                    "PREPARING": self.preparing_timeout, "PULLING": self.preparing_timeout,
                    "RESTARTING": self.preparing_timeout, "TERMINATING": self.terminating_timeout}
        return timeouts.get(status, self.scheduled_timeout) + self.reconcile_slack


# --- recording ----------------------------------------------------------------------------------

class OpError(Exception):
    """An operation failed; ``kind`` groups it in the summary, ``problem`` says whether it fails the run."""

    def __init__(self, kind: str, detail: str = "", problem: bool = True):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind, self.detail, self.problem = kind, detail, problem


@dataclass
class OpRecord:
    op: str
    ok: bool
    latency: float
    kind: str = ""
    detail: str = ""
    problem: bool = False


class Recorder:
    """Every HTTP answer and every operation, from any thread."""

    def __init__(self, log=None):
        self.lock = threading.Lock()
        self.ops: list[OpRecord] = []
        self.statuses: Counter = Counter()
        self.bad_answers: list[str] = []   # 5xx other than 503
        self.answers_503 = 0
        self.logged: Counter = Counter()
        self.log = log or (lambda line: None)

    def http(self, method: str, target: str, status: int, body: bytes | str = b"") -> None:
        with self.lock:
            self.statuses[status] += 1
            if status == 503:
                self.answers_503 += 1
            elif status >= 500:
                text = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
                self.bad_answers.append(f"{method} {target.split('?')[0]} -> {status}: {text[:300]}")

    def add(self, record: OpRecord) -> None:
        with self.lock:
            self.ops.append(record)
            self.logged[(record.op, record.kind)] += 0 if record.ok else 1
            shown = not record.ok and self.logged[(record.op, record.kind)] <= 3
        if shown:  # the first few of each kind; the summary counts them all
            self.log(f"  ! {record.op}: {record.kind} {record.detail[:300]}")

    @contextmanager
    def op(self, name: str):
        """Time the block as operation ``name``; an exception records a failure (and is not re-raised)."""
        started = time.monotonic()
        try:
            yield
        except OpError as exc:
            self.add(OpRecord(name, False, time.monotonic() - started, exc.kind, exc.detail, exc.problem))
        except (httpx.HTTPError, OSError) as exc:
            self.add(OpRecord(name, False, time.monotonic() - started, f"connection ({type(exc).__name__})",
                              str(exc), True))
        except Exception as exc:  # noqa: BLE001 - a soak records everything and goes on
            self.add(OpRecord(name, False, time.monotonic() - started, f"exception ({type(exc).__name__})",
                              repr(exc), True))
        else:
            self.add(OpRecord(name, True, time.monotonic() - started))

    def op_problems(self) -> list[str]:
        with self.lock:
            failed = [r for r in self.ops if not r.ok and r.problem]
        by_kind = Counter(f"{r.op}: {r.kind}" for r in failed)
        return [f"{n} x {kind}" for kind, n in by_kind.most_common()]

    def summary(self) -> str:
        with self.lock:
            ops = list(self.ops)
            statuses = Counter(self.statuses)
            bad = list(self.bad_answers)
        lines = [f"{'operation':<12}{'count':>7}{'ok':>7}{'failed':>8}{'p50 s':>9}{'p95 s':>9}{'max s':>9}"]
        by_op: dict[str, list[OpRecord]] = defaultdict(list)
        for record in ops:
            by_op[record.op].append(record)
        for name in sorted(by_op):
            records = by_op[name]
            good = sorted(r.latency for r in records if r.ok)
            lines.append(f"{name:<12}{len(records):>7}{len(good):>7}{len(records) - len(good):>8}"
                         f"{_pct(good, 50):>9}{_pct(good, 95):>9}{_pct(good, 100):>9}")
        errors = Counter(f"{r.op}: {r.kind}" + ("" if r.problem else " (tolerated)") for r in ops if not r.ok)
        lines.append("errors by kind: " + (", ".join(f"{k} x{n}" for k, n in errors.most_common()) or "none"))
        classes = Counter(f"{s // 100}xx" if s not in (429, 503) else str(s) for s in statuses.elements())
        lines.append("HTTP answers: " + (", ".join(f"{k} x{n}" for k, n in sorted(classes.items())) or "none"))
        for answer in bad[:10]:
            lines.append(f"  5xx: {answer}")
        return "\n".join(lines)


def _pct(values: list[float], pct: int) -> str:
    if not values:
        return "-"
    if pct >= 100:
        return f"{values[-1]:.2f}"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.quantiles(values, n=100, method='inclusive')[pct - 1]:.2f}"


# --- the API, signed like the official client ---------------------------------------------------

class Api:
    """Signed calls to one or more web processes of the same manager.

    With several ``urls`` (a load balancer's view), a call that cannot reach one
    process is retried on the next; a 503 is retried after ``Retry-After``."""

    def __init__(self, urls: str | list[str], access_key: str, secret_key: str, recorder: Recorder,
                 limits: Limits | None = None):
        self.urls = [u.rstrip("/") for u in ([urls] if isinstance(urls, str) else urls)]
        self.access_key, self.secret_key = access_key, secret_key
        self.recorder = recorder
        self.limits = limits or Limits()
        self.http = httpx.Client(timeout=httpx.Timeout(self.limits.request, connect=10), trust_env=False)
        self._next = 0

    def close(self) -> None:
        self.http.close()

    def _order(self) -> list[str]:
        start, self._next = self._next, (self._next + 1) % len(self.urls)
        return self.urls[start:] + self.urls[:start]

    def call(self, method: str, target: str, body=None, expect=(200, 201, 204)) -> httpx.Response:
        """One signed request; raises OpError for an unexpected status."""
        data = json.dumps(body).encode() if body is not None else b""
        ctype = "application/json" if body is not None else "text/plain"
        last_error: Exception | None = None
        for attempt in range(self.limits.retries_503 + 1):
            response = None
            for base in self._order():
                host = urlsplit(base).netloc
                headers = signing.signed_headers(self.access_key, self.secret_key, method, target, host, ctype)
                try:
                    response = self.http.request(method, base + target, content=data, headers=headers)
                    break
                except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                    last_error = exc  # that process is gone: the next one (if any) answers
            if response is None:
                raise OpError(f"connection ({type(last_error).__name__})", f"{method} {target}: {last_error}")
            self.recorder.http(method, target, response.status_code, response.content)
            if response.status_code == 503 and attempt < self.limits.retries_503:
                time.sleep(min(5.0, _retry_after(response)))
                continue
            if response.status_code not in expect:
                tolerated = response.status_code == 503
                raise OpError(f"http {response.status_code}", f"{method} {target}: {response.text[:300]}",
                              problem=not tolerated)
            return response
        raise AssertionError("unreachable")

    def json(self, method: str, target: str, body=None, expect=(200, 201, 204)):
        response = self.call(method, target, body, expect)
        return response.json() if response.content else {}

    def gql(self, query: str, variables: dict | None = None) -> dict:
        answer = self.json("POST", "/admin/gql", {"query": query, "variables": variables or {}})
        return answer["data"]


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.2, float(response.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0


# --- user operations ----------------------------------------------------------------------------

def create_session(api: Api, name: str, image: str, limits: Limits) -> str:
    """``POST /session`` (waiting server-side, as the client's ``session create``), then until RUNNING; the id."""
    body = {"image": image, "name": name, "config": {"resources": RESOURCES}, "maxWaitSeconds": 30,
            "reuseIfExists": True}
    deadline = time.monotonic() + limits.create
    answer = api.json("POST", "/session", body, expect=(200, 201))
    session_id = answer["sessionId"]
    status = answer.get("status")
    while status != "RUNNING":
        if status in ("ERROR", "CANCELLED", "TERMINATED", "TERMINATING"):
            info = api.json("GET", f"/session/{session_id}")
            raise OpError(f"ended {status}", f"{name}: {info.get('statusInfo')} {info.get('statusData')}")
        if time.monotonic() > deadline:
            raise OpError("not RUNNING in time", f"{name} still {status} after {limits.create:.0f} s")
        time.sleep(1.0)
        status = api.json("GET", f"/session/{session_id}")["status"]
    return session_id


def destroy_session(api: Api, session_id: str, limits: Limits) -> None:
    """``DELETE /session/{id}``, then until TERMINATED."""
    deadline = time.monotonic() + limits.destroy
    api.call("DELETE", f"/session/{session_id}")
    while True:
        response = api.call("GET", f"/session/{session_id}", expect=(200, 404))
        if response.status_code == 404:
            return
        status = response.json()["status"]
        if status in DONE_SESSION:
            return
        if status == "ERROR":
            raise OpError("ended ERROR", f"{session_id}: {response.json().get('statusInfo')}")
        if time.monotonic() > deadline:
            raise OpError("not TERMINATED in time", f"{session_id} still {status} after {limits.destroy:.0f} s")
        time.sleep(1.0)


def terminal_echo(api: Api, session_id: str, limits: Limits, rng: random.Random) -> None:
    """Open ``/stream/session/{id}/pty`` (signed like the client), echo a computed line, close."""
    a, b = rng.randrange(1000, 9999), rng.randrange(1000, 9999)
    needle = f"soak-{a + b}"
    base = api.urls[0]
    host = urlsplit(base).netloc
    target = f"/stream/session/{session_id}/pty"
    headers = signing.signed_headers(api.access_key, api.secret_key, "GET", target, host,
                                     content_type="application/octet-stream")
    headers.pop("Content-Type")
    deadline = time.monotonic() + limits.terminal
    try:
        ws = ws_connect(f"ws://{host}{target}", additional_headers=headers, open_timeout=limits.terminal,
                        proxy=None, close_timeout=5)
    except Exception as exc:  # noqa: BLE001 - the handshake's status decides
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status is not None:
            api.recorder.http("GET", target, status, getattr(exc.response, "body", b"") or b"")
            raise OpError(f"terminal refused {status}", str(exc), problem=status != 503) from None
        raise OpError(f"terminal failed ({type(exc).__name__})", str(exc)) from None
    api.recorder.http("GET", target, 101)
    with ws:
        # the typed line holds $((a + b)); only the shell's answer holds the sum
        chars = base64.b64encode(f"echo soak-$(({a} + {b}))\n".encode()).decode()
        ws.send(json.dumps({"type": "stdin", "chars": chars}))
        seen = ""
        while needle not in seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise OpError("terminal echo missing", f"{needle!r} never came; got {seen[-200:]!r}")
            try:
                frame = json.loads(ws.recv(timeout=left))
            except TimeoutError:
                continue
            except Exception as exc:  # noqa: BLE001 - closed under us
                raise OpError(f"terminal closed ({type(exc).__name__})", f"{exc}; got {seen[-200:]!r}") from None
            if frame.get("type") == "out":
                seen += base64.b64decode(frame["data"]).decode(errors="replace")
            elif frame.get("type") == "exit":
                raise OpError("terminal exited", f"{frame}; got {seen[-200:]!r}")


def open_app(api: Api, session_id: str, limits: Limits) -> tuple[str, str]:
    """start-service ``web`` → the one-time setup link → the app's page through the proxy worker;
    the app's URL and the permit cookie (``name=value``)."""
    deadline = time.monotonic() + limits.app
    result = api.json("POST", f"/session/{session_id}/start-service", {"app": "web"})
    with httpx.Client(timeout=10, trust_env=False, follow_redirects=False) as http:
        setup = http.get(result["url"])
    if setup.status_code != 302:
        raise OpError(f"app setup {setup.status_code}", setup.text[:300])
    location = setup.headers["location"]
    cookie = setup.headers["set-cookie"].split(";", 1)[0]
    wait_served(location, cookie, deadline - time.monotonic())
    return location, cookie


def app_page(location: str, cookie: str) -> str:
    """One GET of an opened app through the proxy: '' when it served the page, else what came back."""
    try:
        page = httpx.get(location, headers={"Cookie": cookie}, timeout=10, trust_env=False)
    except httpx.HTTPError as exc:
        return repr(exc)
    if page.status_code == 200 and "Directory listing" in page.text:
        return ""
    return f"{page.status_code} {page.text[:200]}"


def wait_served(location: str, cookie: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (last := app_page(location, cookie)):
        if time.monotonic() > deadline:
            raise OpError("app not served", f"{location}: {last}")
        time.sleep(1.0)


def transfer(api: Api, folder: str, path: str, size: int, limits: Limits) -> None:
    """Upload ``size`` random bytes (tus PATCH), download them, compare, delete the file."""
    payload = os.urandom(size)
    ticket = api.json("POST", f"/folders/{folder}/request-upload", {"path": path, "size": size})
    timeout = httpx.Timeout(limits.transfer, connect=10)
    with httpx.Client(timeout=timeout, trust_env=False) as http:
        target = ticket["url"] + ("&" if "?" in ticket["url"] else "?") + "token=" + ticket["token"]
        upload = http.patch(target, content=payload, headers={
            "Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
        api.recorder.http("PATCH", "storage-proxy /upload", upload.status_code, upload.content)
        if upload.status_code != 204:
            raise OpError(f"upload {upload.status_code}", upload.text[:300], problem=upload.status_code != 503)
        ticket = api.json("POST", f"/folders/{folder}/request-download", {"path": path})
        target = ticket["url"] + ("&" if "?" in ticket["url"] else "?") + "token=" + ticket["token"]
        download = http.get(target)
        api.recorder.http("GET", "storage-proxy /download", download.status_code,
                          download.content if download.status_code >= 500 else b"")
        if download.status_code != 200:
            raise OpError(f"download {download.status_code}", download.text[:300],
                          problem=download.status_code != 503)
        if download.content != payload:
            raise OpError("download differs", f"{path}: {len(download.content)} bytes back of {size}")
    api.call("POST", f"/folders/{folder}/delete-files", {"files": [path]})


# --- what the cluster looks like, through the API -----------------------------------------------

SESSIONS_QUERY = """query($limit: Int!, $offset: Int!) {
  compute_session_list(limit: $limit, offset: $offset) {
    total_count
    items { id name status status_info status_changed created_at cluster_size
            containers { id status agent requested_slots } }
  }
}"""
AGENTS_QUERY = """query($limit: Int!, $offset: Int!) {
  agent_list(limit: $limit, offset: $offset) { total_count items { id status occupied_slots } }
}"""


def _pages(api: Api, query: str, key: str) -> list[dict]:
    items, offset = [], 0
    while True:
        page = api.gql(query, {"limit": 100, "offset": offset})[key]
        items.extend(page["items"])
        offset += 100
        if offset >= page["total_count"] or not page["items"]:
            return items


def list_sessions(api: Api) -> list[dict]:
    """Every session (all statuses) with its kernels; the keypair must be a superadmin's."""
    return _pages(api, SESSIONS_QUERY, "compute_session_list")


def list_agents(api: Api) -> list[dict]:
    return _pages(api, AGENTS_QUERY, "agent_list")


def _slots(value) -> dict[str, Decimal]:
    data = json.loads(value) if isinstance(value, str) else (value or {})
    out = {}
    for key, amount in (data or {}).items():
        try:
            number = Decimal(str(amount))
        except InvalidOperation:
            continue
        if number:
            out[key] = number
    return out


def live_kernels(sessions: list[dict]) -> list[dict]:
    """Kernels that hold slots on their agent (every status but PENDING, TERMINATED, CANCELLED, ERROR)."""
    return [k for s in sessions for k in s["containers"] if k["status"] not in NOT_OCCUPYING_KERNEL]


def occupancy_mismatches(sessions: list[dict], agents: list[dict]) -> list[str]:
    """Agents whose occupied slots differ from the sum of their live kernels' requested slots."""
    expected: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for kernel in live_kernels(sessions):
        if kernel.get("agent"):
            for key, amount in _slots(kernel["requested_slots"]).items():
                expected[kernel["agent"]][key] += amount
    found = []
    for agent in agents:
        want = {k: v for k, v in expected.pop(agent["id"], {}).items() if v}
        have = _slots(agent["occupied_slots"])
        if want != have:
            found.append(f"agent {agent['id']} occupies {_fmt(have)} but its live kernels hold {_fmt(want)}")
    for agent_id, want in expected.items():
        found.append(f"live kernels on unknown agent {agent_id} hold {_fmt(want)}")
    return found


def _fmt(slots: dict) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(slots.items())) + "}"


def duplicated_sessions(sessions: list[dict]) -> list[str]:
    """Two live-or-finished sessions under one name, or a session with more kernels than its cluster size."""
    names = Counter(s["name"] for s in sessions)
    found = [f"{n} sessions named {name}" for name, n in names.items() if n > 1]
    for s in sessions:
        if len(s["containers"]) > max(1, int(s.get("cluster_size") or 1)):
            found.append(f"session {s['name']} has {len(s['containers'])} kernels for cluster size "
                         f"{s.get('cluster_size')}")
    return found


def _age(stamp: str | None, now: datetime) -> float:
    if not stamp:
        return 0.0
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return (now - when).total_seconds()


def stuck_sessions(sessions: list[dict], limits: Limits, *, forced_is_stuck: bool = True) -> list[str]:
    """Sessions in a transitional status past their reconciler timeout (plus slack), and, with
    ``forced_is_stuck``, sessions the reconciler had to force or fail (they were stuck that long)."""
    now = datetime.now(timezone.utc)
    found = []
    for s in sessions:
        if s["status"] in TRANSITIONAL_SESSION:
            age = _age(s.get("status_changed") or s.get("created_at"), now)
            if age > limits.reconciler_limit(s["status"]):
                found.append(f"session {s['name']} {s['status']} for {age:.0f} s "
                             f"(reconciler limit {limits.reconciler_limit(s['status']):.0f} s)")
        elif forced_is_stuck and (s.get("status_info") or "") in RECONCILER_VERDICTS:
            found.append(f"session {s['name']} ended {s['status']} by the reconciler ({s['status_info']})")
    return found


def forced_sessions(sessions: list[dict]) -> list[str]:
    return [f"{s['name']}: {s['status']} ({s['status_info']})" for s in sessions
            if (s.get("status_info") or "") in RECONCILER_VERDICTS]


def kernel_processes(scratch_root: Path) -> dict[str, list[int]]:
    """Processes (of the local backend) whose working directory is inside a kernel's directory
    under ``scratch_root`` (``<scratch>/<kernel id>/...``), by kernel id."""
    root = str(Path(scratch_root).resolve()) + os.sep
    found: dict[str, list[int]] = defaultdict(list)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
        except OSError:
            continue
        if cwd.startswith(root):
            found[cwd[len(root):].split(os.sep, 1)[0]].append(int(entry.name))
    return dict(found)


def _norm(kernel_id: str) -> str:
    return kernel_id.replace("-", "").lower()


def process_mismatches(sessions: list[dict], scratch_root: Path, agent_id: str) -> list[str]:
    """The local agent runs a process for each of its live kernels, and for nothing else."""
    live = {_norm(k["id"]) for k in live_kernels(sessions) if k.get("agent") == agent_id}
    running = {_norm(kid): pids for kid, pids in kernel_processes(scratch_root).items()}
    found = [f"kernel {kid} is live but has no process" for kid in sorted(live - set(running))]
    found += [f"kernel {kid} is not live but its processes {running[kid]} still run"
              for kid in sorted(set(running) - live)]
    return found


def settle(check, timeout: float, interval: float = 2.0) -> list[str]:
    """Repeat ``check()`` (a list of problems) until it returns none or ``timeout`` passes; the last problems."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            problems = check()
        except OpError as exc:
            problems = [f"check failed: {exc}"]
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(interval)


# --- the embedded stack as a user starts it -----------------------------------------------------

RESTART_LINE = re.compile(r"\b(exit|exited|died|dead|restart\w*|killed|crash\w*|stopping)\b", re.IGNORECASE)


def free_port(pairs: int = 1, avoid: range | None = None) -> int:
    """A port P with P .. P+pairs-1 free (and outside ``avoid``), below the ephemeral range."""
    for _ in range(200):
        base = random.randrange(20000, 30000)
        if avoid is not None and base < avoid.stop and avoid.start < base + pairs:
            continue
        socks = []
        try:
            for port in range(base, base + pairs):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free port block")


def children_of(pid: int) -> dict[int, str]:
    """The direct children of ``pid`` with their command lines."""
    kids: dict[int, str] = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                pids = [int(p) for p in fh.read().split()]
        except OSError:
            continue
        for child in pids:
            try:
                with open(f"/proc/{child}/cmdline", "rb") as fh:
                    kids[child] = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                pass
    return kids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class EmbeddedStack:
    """``scripts/run --port P --data-dir D`` in its own process group, its console captured."""

    def __init__(self, data_dir: Path, port: int | None = None, env: dict | None = None, log=print,
                 limits: Limits | None = None):
        self.data_dir = Path(data_dir)
        self.port = port or free_port(2)
        self.url = f"http://127.0.0.1:{self.port}"
        self.limits = limits or Limits()
        self.log = log
        base = dict(os.environ if env is None else env)
        for name in list(base):  # the embedded default: no services, nothing of a test runner's
            if name in ("DATABASE_URL", "REDIS_URL", "BACKEND_DATA_DIR", "PROMETHEUS_MULTIPROC_DIR", "VFOLDER_ROOT",
                        "DJANGO_SETTINGS_MODULE", "DJANGO_ALLOW_ASYNC_UNSAFE") or name.startswith(("BAI_", "PYTEST")):
                base.pop(name)
        self.env = base
        self.process: subprocess.Popen | None = None
        self.console: deque[str] = deque(maxlen=2000)  # the tail; the whole console is in console.log
        self.console_lock = threading.Lock()
        self.children: dict[int, str] = {}
        self.stopping = False
        self.returncode: int | None = None
        self.supervisor_lines: list[str] = []   # [stack ] lines before we asked it to stop
        self.proxy_api_port = self.port + 1     # the app proxy's setup/health port (scripts/run's default once)

    @property
    def scratch_root(self) -> Path:
        return self.data_dir / "agent"  # --scratch-root of the embedded agent

    def command(self) -> list[str]:
        cmd = [str(ROOT / "scripts" / "run"), "--port", str(self.port), "--data-dir", str(self.data_dir)]
        usage = subprocess.run([str(ROOT / "scripts" / "run"), "--help"], capture_output=True, text=True,
                               timeout=30).stdout
        # ports of our own where scripts/run takes them (one free block beside --port and its +1),
        # so another stack on this machine never collides with this one
        block = free_port(61, avoid=range(self.port, self.port + 2))
        if "--proxy-api-port" in usage:
            self.proxy_api_port = block
            cmd += ["--proxy-api-port", str(block)]
        if "--agent-ports" in usage:
            cmd += ["--agent-ports", f"{block + 1}-{block + 40}"]
        if "--proxy-ports" in usage:
            cmd += ["--proxy-ports", f"{block + 41}-{block + 60}"]
        return cmd

    def start(self) -> "EmbeddedStack":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        self.log(f"starting: {' '.join(cmd)}")
        self.process = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        threading.Thread(target=self._pump, daemon=True).start()
        return self

    def _pump(self) -> None:
        with open(self.data_dir / "console.log", "ab") as out:
            for raw in iter(self.process.stdout.readline, b""):
                out.write(raw)
                out.flush()
                line = raw.decode(errors="replace").rstrip("\n")
                with self.console_lock:
                    self.console.append(line)
                    if line.startswith("[stack") and not self.stopping:
                        self.supervisor_lines.append(line)

    def tail(self, lines: int = 60) -> str:
        with self.console_lock:
            return "\n".join(list(self.console)[-lines:])

    def credentials(self) -> dict:
        return json.loads((self.data_dir / "credentials.json").read_text())

    def wait_ready(self, api_factory) -> "Api":
        """Until credentials exist, the web answers, the agent is ALIVE with its images and the proxy is up."""
        deadline = time.monotonic() + self.limits.startup

        def wait(what, predicate):
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"scripts/run exited ({self.process.returncode}) while waiting for {what}:\n"
                                       + self.tail())
                try:
                    value = predicate()
                except (OSError, ValueError, KeyError, httpx.HTTPError, OpError):
                    value = None
                if value:
                    return value
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the stack was not ready in {self.limits.startup:.0f} s ({what}):\n"
                                       + self.tail())
                time.sleep(0.5)

        wait("credentials.json", lambda: (self.data_dir / "credentials.json").exists() and self.credentials())
        wait("/healthz", lambda: httpx.get(self.url + "/healthz", timeout=2, trust_env=False).status_code == 200)
        api = api_factory(self.credentials())

        def agent_ready():
            alive = [a for a in list_agents(api) if a["status"] == "ALIVE"]
            if not alive:
                return False
            names = {i["humanized_name"] for i in api.gql("{ images { humanized_name } }")["images"]}
            return {SHELL_IMAGE, HTTP_IMAGE} <= names

        wait("an ALIVE agent with the local images", agent_ready)
        if (self.data_dir / "proxy-token").exists():
            proxy = f"http://127.0.0.1:{self.proxy_api_port}/health"
            wait("the app proxy worker", lambda: httpx.get(proxy, timeout=2, trust_env=False).status_code == 200)

        def children_settled():  # the same processes on two looks two seconds apart
            first = children_of(self.process.pid)
            time.sleep(2.0)
            return len(first) >= 3 and first == children_of(self.process.pid) and first

        self.children = wait("the supervisor's children", children_settled)
        return api

    def restart_problems(self) -> list[str]:
        """A child of the supervisor that is gone, and any supervisor line that tells of an exit or restart."""
        found = []
        if self.process.poll() is not None:
            found.append(f"the stack exited with status {self.process.returncode}")
        for pid, cmd in self.children.items():
            if not _alive(pid):
                found.append(f"process {pid} ({_short(cmd)}) is gone")
        with self.console_lock:
            lines = [line for line in self.supervisor_lines if RESTART_LINE.search(line)]
        found += [f"supervisor said: {line}" for line in lines]
        return found

    def stop(self) -> list[str]:
        """SIGINT (Ctrl-C); problems if it does not stop in time or leaves a process behind."""
        found = []
        if self.process is None:
            return found
        self.stopping = True
        if self.process.poll() is None:
            try:
                os.kill(self.process.pid, signal.SIGINT)
                self.returncode = self.process.wait(timeout=self.limits.shutdown)
            except subprocess.TimeoutExpired:
                found.append(f"the stack did not stop within {self.limits.shutdown:.0f} s of SIGINT")
                os.killpg(self.process.pid, signal.SIGKILL)
                self.returncode = self.process.wait(timeout=10)
        else:
            self.returncode = self.process.returncode
        if self.returncode not in (0, None):
            found.append(f"the stack exited with status {self.returncode} after SIGINT")
        leftovers = [pid for pid in self.children if _alive(pid)]
        deadline = time.monotonic() + 10
        while leftovers and time.monotonic() < deadline:
            time.sleep(0.5)
            leftovers = [pid for pid in leftovers if _alive(pid)]
        for pid in leftovers:
            found.append(f"process {pid} ({_short(self.children[pid])}) still runs after the stack stopped")
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        return found


    def orphaned_kernels(self) -> list[str]:
        """Kernel processes still running under the data directory (killed here, so a run leaves nothing)."""
        found = []
        for kernel_id, pids in kernel_processes(self.scratch_root).items():
            found.append(f"kernel {kernel_id}: processes {pids} still run")
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        return found


def _short(cmd: str) -> str:
    for marker in ("daphne", "celery", "agents.daemon", "appproxy.worker", "beat"):
        if marker in cmd:
            return marker
    return cmd[:60]


# --- the run ------------------------------------------------------------------------------------

@dataclass
class Report:
    minutes: float
    actors: int
    problems: list[str] = field(default_factory=list)
    checks: list[tuple[str, list[str]]] = field(default_factory=list)  # (what, problems), in order
    summary: str = ""
    forced: list[str] = field(default_factory=list)
    wall: float = 0.0
    data_dir: str = ""
    console_tail: str = ""  # the stack's last console lines, kept when a check failed
    ops: list[OpRecord] = field(default_factory=list)

    def check(self, what: str, problems: list[str]) -> None:
        self.checks.append((what, problems))
        self.problems += [f"{what}: {p}" for p in problems]

    def render(self) -> str:
        lines = [f"soak: {self.minutes:g} min of workload, {self.actors} actors, {self.wall:.0f} s in all "
                 f"(data dir {self.data_dir})", self.summary, "checks:"]
        for what, problems in self.checks:
            lines.append(f"  [{'ok' if not problems else 'FAIL'}] {what}")
            lines += [f"         {p}" for p in problems[:10]]
        lines.append("result: " + ("PASS" if not self.problems else f"FAIL ({len(self.problems)} problems)"))
        return "\n".join(lines)


class Actor(threading.Thread):
    """One user: its own sessions, its own folder, one operation at a time."""

    def __init__(self, index: int, api: Api, recorder: Recorder, limits: Limits, seed: int, keep: int,
                 end: float, pause: threading.Event):
        super().__init__(name=f"soak-actor-{index}", daemon=True)
        self.index, self.api, self.recorder, self.limits = index, api, recorder, limits
        self.rng = random.Random(seed * 1000 + index)
        self.keep, self.end, self.pause = keep, end, pause
        self.idle = threading.Event()
        self.sessions: list[tuple[str, str]] = []  # (id, image), oldest first
        self.folder = f"soak{index}-{uuid.uuid4().hex[:6]}"
        self.seq = 0

    def run(self) -> None:
        with self.recorder.op("folder"):
            self.api.json("POST", "/folders", {"name": self.folder})
        while time.monotonic() < self.end:
            if self.pause.is_set():
                self.idle.set()
                while self.pause.is_set() and time.monotonic() < self.end:
                    time.sleep(0.2)
                self.idle.clear()
                continue
            self.cycle()
        self.idle.set()

    def cycle(self) -> None:
        self.seq += 1
        image = SHELL_IMAGE if (self.seq + self.index) % 2 else HTTP_IMAGE
        name = f"soak{self.index}-{self.seq}-{uuid.uuid4().hex[:4]}"
        created: list[str] = []
        with self.recorder.op("create"):
            created.append(create_session(self.api, name, image, self.limits))
        if created:
            self.sessions.append((created[0], image))
        if self.sessions:
            session_id, image = self.rng.choice(self.sessions)
            if image == HTTP_IMAGE and self.rng.random() < 0.5:
                with self.recorder.op("app"):
                    open_app(self.api, session_id, self.limits)
            else:
                with self.recorder.op("terminal"):
                    terminal_echo(self.api, session_id, self.limits, self.rng)
        size = self.rng.choice((1, 4096, 65536, 300_000, 1_048_576))
        with self.recorder.op("transfer"):
            transfer(self.api, self.folder, f"f{self.seq}.bin", size, self.limits)
        while len(self.sessions) > self.keep:
            session_id, _ = self.sessions.pop(0)
            with self.recorder.op("destroy"):
                destroy_session(self.api, session_id, self.limits)
        time.sleep(self.rng.uniform(0.5, 1.5))  # a user's pause: a steady mix, not a flood


def cluster_problems(api: Api, limits: Limits, scratch_root: Path | None, agent_id: str | None,
                     settled: frozenset = SETTLED_SESSION) -> list[str]:
    """One look at the whole cluster: every session in a ``settled`` status, occupancy, processes,
    duplicates, stuck sessions (sessions the reconciler resolved are reported apart: they never clear,
    so waiting on them is useless)."""
    sessions = list_sessions(api)
    agents = list_agents(api)
    problems = [f"session {s['name']} is {s['status']} ({s.get('status_info') or ''})" for s in sessions
                if s["status"] not in settled]
    problems += occupancy_mismatches(sessions, agents)
    if scratch_root is not None and agent_id:
        problems += process_mismatches(sessions, scratch_root, agent_id)
    problems += duplicated_sessions(sessions)
    problems += stuck_sessions(sessions, limits, forced_is_stuck=False)
    return problems


def run_soak(minutes: float, actors: int = 4, *, data_dir: Path | None = None, port: int | None = None,
             check_every: float | None = None, sessions_per_actor: int = 2, seed: int = 1, keep: bool = False,
             env: dict | None = None, log=print, limits: Limits | None = None) -> Report:
    """The whole soak; returns a report (``report.problems`` empty when every check held)."""
    if not 0 < minutes <= MAX_MINUTES:
        raise ValueError(f"--minutes must be in (0, {MAX_MINUTES}]")
    if not 1 <= actors <= 32:
        raise ValueError("--actors must be in 1..32")
    started = time.monotonic()
    own_dir = data_dir is None
    data_dir = Path(data_dir or tempfile.mkdtemp(prefix="bai-soak-"))
    limits = limits or Limits.from_env(dict(os.environ if env is None else env))
    report = Report(minutes=minutes, actors=actors, data_dir=str(data_dir))
    recorder = Recorder(log=log)
    stack = EmbeddedStack(data_dir, port=port, env=env, log=log, limits=limits)
    apis: list[Api] = []

    def make_api(creds: dict) -> Api:
        api = Api(stack.url, creds["access_key"], creds["secret_key"], recorder, limits)
        apis.append(api)
        return api

    agent_id = "local-agent"  # the embedded agent's id (backendai.stack --agent-id default)

    def consistent():
        if stack.process.poll() is not None:
            raise RuntimeError(f"the stack is not running (exit status {stack.process.returncode})")
        return cluster_problems(admin, limits, stack.scratch_root, agent_id)

    try:
        stack.start()
        admin = stack.wait_ready(make_api)
        agents = list_agents(admin)
        agent_id = agents[0]["id"] if len(agents) == 1 else agent_id
        log(f"stack up at {stack.url} in {time.monotonic() - started:.0f} s; "
            f"processes: {', '.join(_short(c) for c in stack.children.values())}")

        end = time.monotonic() + minutes * 60
        pause = threading.Event()
        # each actor signs with a keypair of its own (POST /keypairs), as several clients of one user would:
        # rate limits are per keypair, and a long run stays within them
        keypairs = [admin.json("POST", "/keypairs", expect=(201,)) for _ in range(actors)]
        team = [Actor(i, make_api(keypair), recorder, limits, seed, sessions_per_actor, end, pause)
                for i, keypair in enumerate(keypairs)]
        for actor in team:
            actor.start()
        next_check = time.monotonic() + check_every * 60 if check_every else None
        next_note = time.monotonic() + 30
        checkpoint = 0
        while any(a.is_alive() for a in team):
            time.sleep(0.5)
            now = time.monotonic()
            if now >= next_note:
                next_note = now + 30
                with recorder.lock:
                    done, failed = len(recorder.ops), sum(1 for r in recorder.ops if not r.ok)
                log(f"  {now - started:5.0f} s: {done} operations, {failed} failed, "
                    f"{recorder.answers_503} answers 503")
            if next_check and now >= next_check and now < end - 20:
                checkpoint += 1
                pause.set()
                deadline = now + max(limits.create, limits.destroy, limits.transfer) + limits.app + 30
                while not all(a.idle.is_set() or not a.is_alive() for a in team) and time.monotonic() < deadline:
                    time.sleep(0.2)
                log(f"checkpoint {checkpoint}: actors paused, waiting for the cluster to settle")
                report.check(f"checkpoint {checkpoint}: cluster consistent", settle(consistent, limits.settle))
                report.check(f"checkpoint {checkpoint}: no process exited or restarted", stack.restart_problems())
                pause.clear()
                next_check = time.monotonic() + check_every * 60
        for actor in team:
            actor.join(timeout=limits.create + limits.destroy + 60)

        log("workload over: checking the cluster with its sessions live")
        report.check("with sessions live: statuses settled, occupancy = live kernels, processes = live kernels, "
                     "no duplicate, none stuck", settle(consistent, limits.settle))

        log("destroying every session")
        for session in list_sessions(admin):
            if session["status"] not in DONE_SESSION:
                with recorder.op("destroy"):
                    admin.call("DELETE", f"/session/{session['id']}", expect=(200, 404))
        drain = limits.terminating_timeout + limits.reconcile_slack
        report.check("after destroying all: every session ended, nothing occupied, no kernel process left",
                     settle(consistent, drain))
        report.forced = forced_sessions(list_sessions(admin))
        report.check("no session needed the reconciler", report.forced)
    except Exception as exc:  # noqa: BLE001 - reported, and the stack is still stopped below
        report.check("the run itself", [f"{type(exc).__name__}: {exc}"])
        log(stack.tail())
    finally:
        if stack.process is not None:
            report.check("no process of the stack exited or restarted", stack.restart_problems())
        report.check("the stack stops cleanly on Ctrl-C", stack.stop())
        report.check("no kernel process outlives the stack", stack.orphaned_kernels())
        for api in apis:
            api.close()
        report.check("operations succeeded (503 tolerated)", recorder.op_problems())
        with recorder.lock:
            bad = list(recorder.bad_answers)
        report.check("no HTTP 5xx other than 503", bad)
        report.summary = recorder.summary()
        with recorder.lock:
            report.ops = list(recorder.ops)
        report.wall = time.monotonic() - started
        if report.problems:
            report.console_tail = stack.tail(80)
        if own_dir and not keep and not report.problems:
            shutil.rmtree(data_dir, ignore_errors=True)
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="See bench/soak/README.md.")
    parser.add_argument("--minutes", type=float, default=10, help="workload length (default 10; 60 for the long mode)")
    parser.add_argument("--actors", type=int, default=4, help="concurrent users (default 4)")
    parser.add_argument("--sessions-per-actor", type=int, default=2, help="sessions each actor keeps (default 2)")
    parser.add_argument("--check-every", type=float, default=None,
                        help="minutes between consistency checkpoints (default: a tenth of --minutes, at least 1)")
    parser.add_argument("--port", type=int, default=None, help="the stack's --port (default: a free one)")
    parser.add_argument("--data-dir", default=None, help="the stack's --data-dir (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory (kept on failure)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    check_every = args.check_every if args.check_every is not None else max(1.0, args.minutes / 10)
    try:
        report = run_soak(args.minutes, args.actors, data_dir=Path(args.data_dir) if args.data_dir else None,
                          port=args.port, check_every=check_every, sessions_per_actor=args.sessions_per_actor,
                          seed=args.seed, keep=args.keep)
    except ValueError as exc:
        parser.error(str(exc))
    print()
    print(report.render())
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
