"""The embedded stack's supervisor (``backendai.stack.Supervisor``), with real tiny child
processes: it restarts what dies with a growing backoff, stops for good only after
repeated failures in a short window, stops children in order, and restarts a beat
that ``/readyz`` reports as not ticking."""
from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from backendai.stack import BeatWatch, Child, Console, Supervisor

PY = sys.executable
SLEEPER = [PY, "-c", "import time; time.sleep(600)"]
WAIT = 60  # generous: a loaded 2-core machine


def wait_until(predicate, what, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Running:
    """A supervisor running in a thread; stopped (and joined) at the end of the test."""

    def __init__(self, children, **options):
        self.out = io.StringIO()
        options = {"backoff_initial": 0.05, "backoff_max": 0.4, "stable_after": 30.0, "max_failures": 5,
                   "failure_window": 30.0, "stop_grace": 5.0, "poll_interval": 0.02, **options}
        self.supervisor = Supervisor(children, console=Console(self.out), **options)
        self.status = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        self.status = self.supervisor.run()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.supervisor.stop()
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "the supervisor did not stop"

    def lines(self):
        return self.out.getvalue().splitlines()

    def pid(self, name):
        return wait_until(lambda: self.supervisor.children[name].pid, f"{name} to run")


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is not alive
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_killed_child_is_restarted_with_a_doubling_backoff_and_each_restart_is_logged():
    with Running([Child("worker", SLEEPER)], backoff_initial=0.5, backoff_max=30) as run:
        child = run.supervisor.children["worker"]
        first = run.pid("worker")
        os.kill(first, signal.SIGKILL)
        second = wait_until(lambda: child.pid not in (None, first) and child.pid, "the first restart")
        os.kill(second, signal.SIGKILL)
        third = wait_until(lambda: child.pid not in (None, first, second) and child.pid, "the second restart")
        assert alive(third) and not alive(first) and not alive(second)
    log = run.lines()
    assert "[stack ] worker exited with status -9; restarting in 0.5 s (restart 1)" in log
    assert "[stack ] worker exited with status -9; restarting in 1.0 s (restart 2)" in log
    assert [line for line in log if line.startswith("[stack ] worker started")] == [
        f"[stack ] worker started (pid {pid})" for pid in (first, second, third)]
    assert run.status == 0 and not alive(third)


def test_the_backoff_doubles_up_to_its_cap_and_starts_over_once_a_child_stayed_up_long_enough():
    """The supervisor's bookkeeping, driven with explicit times (no clock in the assertion)."""
    supervisor = Supervisor([Child("agent", SLEEPER)], console=Console(io.StringIO()), backoff_initial=1.0,
                            backoff_max=4.0, stable_after=60.0, max_failures=100, failure_window=60.0)
    child = supervisor.children["agent"]
    delays, now = [], 1000.0
    for uptime in (1, 1, 1, 1, 120, 1):
        child.started_at = now
        now += uptime
        supervisor._exited(child, -9, now)
        delays.append(child.delay)
        now = child.restart_at
    assert delays == [1.0, 2.0, 4.0, 4.0, 1.0, 2.0]
    assert child.restarts == 6 and supervisor.gave_up is None


def test_a_child_that_keeps_failing_stops_everything_and_names_the_process():
    crasher = Child("proxy", [PY, "-c", "import sys; sys.exit(3)"])
    steady = Child("web", SLEEPER)
    run = Running([steady, crasher], max_failures=3)
    run.thread.start()
    run.thread.join(WAIT)
    assert not run.thread.is_alive()
    log = "\n".join(run.lines())
    assert run.status == 1 and run.supervisor.gave_up == "proxy"
    assert log.count("proxy exited with status 3; restarting in") == 2, log
    assert "proxy exited with status 3: 3 failures within 30 s (limit 3); stopping the stack" in log, log
    assert steady.process is None  # stopped too
    assert "web exited" not in log


def test_failures_spread_wider_than_the_window_never_stop_the_stack():
    run = Running([Child("worker", [PY, "-c", "import sys; sys.exit(1)"])], max_failures=2, failure_window=0.01,
                  backoff_max=0.05)
    with run:
        wait_until(lambda: run.supervisor.children["worker"].restarts >= 5, "five restarts")
    assert run.supervisor.gave_up is None and run.status == 0


def signal_recorder(name, path):
    return [PY, "-c", f"""
import signal, sys, time
def bye(*_):
    with open({str(path)!r}, "a") as f:
        f.write({name!r} + "\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
open({str(path)!r} + ".{name}", "w").close()
while True:
    time.sleep(1)
"""]


def test_children_stop_in_the_given_order(tmp_path):
    record = tmp_path / "order"
    names = ["web", "worker", "agent", "proxy"]
    children = [Child(n, signal_recorder(n, record)) for n in names]
    with Running(children, stop_order=[["proxy"], ["agent"], ["worker"], ["web"]]):
        for n in names:
            wait_until(lambda: (tmp_path / f"order.{n}").exists(), f"{n} to install its handler")
    assert record.read_text().split() == ["proxy", "agent", "worker", "web"]


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace():
    stubborn = Child("agent", [PY, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                          "print('ready', flush=True); time.sleep(600)"])
    run = Running([stubborn], stop_grace=0.5)
    with run:
        wait_until(lambda: "[agent ] ready" in run.out.getvalue(), "the child to ignore SIGTERM")
        pid = stubborn.pid
    assert not alive(pid)
    assert "agent did not stop within 0.5 s; killing it" in run.out.getvalue()


class Readyz:
    """A tiny /readyz whose beat check the test sets (what the supervisor reads; the real one is
    tested with the whole stack in tests/e2e/test_stack_supervisor.py)."""

    def __init__(self):
        self.beat = {"ok": True, "age": 1.0}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                body = json.dumps({"checks": {"database": {"ok": True}, "beat": outer.beat}}).encode()
                self.send_response(200 if outer.beat["ok"] else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/readyz"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def readyz():
    server = Readyz()
    yield server
    server.close()


def test_a_beat_that_stopped_ticking_is_restarted(readyz):
    beat = Child("beat", SLEEPER)
    with Running([beat]) as run:
        watch = BeatWatch(run.supervisor, readyz.url, interval=0.05, grace=0.5)
        watch.start()
        first = run.pid("beat")
        wait_until(lambda: time.monotonic() - beat.started_at > 1.0, "the beat to be up a while")
        assert beat.pid == first  # healthy: left alone
        os.kill(first, signal.SIGSTOP)  # alive, but no longer ticking
        readyz.beat = {"ok": False, "age": 42.0}
        wait_until(lambda: beat.pid not in (None, first), "the beat to be restarted")
        readyz.beat = {"ok": True, "age": 0.5}
        assert not alive(first)
        wait_until(lambda: beat.pid and alive(beat.pid), "the new beat to run")
    assert "[stack ] beat is not ticking (last tick 42 s ago; /readyz says unhealthy); restarting it (restart 1)" \
        in run.out.getvalue()


def test_an_unanswered_readyz_restarts_nothing(readyz):
    beat = Child("beat", SLEEPER)
    readyz.close()  # no web server: unknown is not unhealthy
    with Running([beat]) as run:
        watch = BeatWatch(run.supervisor, readyz.url, interval=0.05, grace=0.1)
        first = run.pid("beat")
        wait_until(lambda: time.monotonic() - beat.started_at > 0.3, "the grace to pass")
        for _ in range(5):
            watch.check()
        assert beat.pid == first and beat.restarts == 0
