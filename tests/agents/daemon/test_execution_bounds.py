"""Resource bounds of code execution on the agent: a run printing forever keeps a bounded buffer,
runs and runners per agent are bounded, and a kernel restart gets a fresh runner lazily."""
from __future__ import annotations

import time

import pytest

from agents.daemon import execution
from agents.daemon.backends.base import KernelError

from .test_execution import ask, backend, console_text, start_kernel  # noqa: F401 - fixtures and helpers


@pytest.fixture(autouse=True)
def _fresh_runners():
    yield
    with execution._RUNNERS_LOCK:
        runners = list(execution._RUNNERS.values())
        execution._RUNNERS.clear()
    for runner in runners:
        runner.close()


def _wait(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_it_caps_the_console_buffered_for_a_run_that_prints_forever(backend, monkeypatch):
    monkeypatch.setattr(execution, "RUN_BUFFER", 64 * 1024)
    kernel_id = start_kernel(backend)
    first = ask(backend, kernel_id, "query", "flood", "while True:\n    print('x' * 999)", flush_timeout=0.2)
    assert first["status"] == "continued"
    runner = execution.runner_for(backend, kernel_id)
    run = runner.runs["flood"]
    _wait(lambda: run.dropped)
    time.sleep(1.0)  # it goes on printing; nobody asks
    with runner.cond:
        assert run.buffered <= 64 * 1024 and runner.buffered <= 64 * 1024
        assert sum(len(item[2]) for item in run.items if item[0] == "out") <= 64 * 1024 + 200
    answer = ask(backend, kernel_id, "continue", "flood", flush_timeout=0.2)
    # said once, in whichever answer drained the buffer when it overflowed (the first one, on a slow machine)
    assert console_text([first, answer], "stderr").count("[output dropped: more than 65536 bytes") == 1
    ask(backend, kernel_id, "interrupt", "flood")


def test_it_caps_the_output_of_all_unanswered_runs_of_a_runner_together(backend, monkeypatch):
    monkeypatch.setattr(execution, "RUNNER_BUFFER", 100 * 1024)
    kernel_id = start_kernel(backend)
    for i in range(4):  # each prints 60 KiB and finishes; nobody asks for the output
        ask(backend, kernel_id, "query", f"r{i}", "print('y' * 60000)", flush_timeout=0.05)
    runner = execution.runner_for(backend, kernel_id)
    _wait(lambda: all(runner.runs.get(f"r{i}") is None or runner.runs[f"r{i}"].done for i in range(4)))
    with runner.cond:
        assert runner.buffered <= 100 * 1024
        assert runner.buffered == sum(r.buffered for r in runner.runs.values())


def test_it_refuses_a_new_run_when_the_runner_keeps_too_many_and_forgets_old_finished_ones(backend, monkeypatch):
    monkeypatch.setattr(execution, "MAX_RUNS", 3)
    kernel_id = start_kernel(backend)
    for i in range(5):  # finished runs nobody asked about make room for new ones
        ask(backend, kernel_id, "query", f"done{i}", "pass", flush_timeout=0.05)
        runner = execution.runner_for(backend, kernel_id)
        _wait(lambda: all(r.done for r in runner.runs.values()))
    assert len(runner.runs) <= 3
    for i in range(3):  # runs still running (queued behind a sleeper) are kept
        ask(backend, kernel_id, "query", f"busy{i}", "import time\ntime.sleep(30)", flush_timeout=0.05)
    with pytest.raises(KernelError) as refused:
        ask(backend, kernel_id, "query", "one-more", "print(1)", flush_timeout=0.05)
    assert refused.value.reason == "too-many-runs"
    assert "one-more" not in runner.runs
    ask(backend, kernel_id, "interrupt", "busy0")


def test_it_refuses_a_runner_beyond_the_agents_limit_and_forgets_the_runners_of_stopped_kernels(backend, monkeypatch):
    monkeypatch.setattr(execution, "MAX_RUNNERS", 1)
    first, second = start_kernel(backend), start_kernel(backend)
    assert ask(backend, first, "query", "a", "print(1)")["exitCode"] == 0
    with pytest.raises(KernelError) as refused:
        ask(backend, second, "query", "b", "print(2)")
    assert refused.value.reason == "too-many-runners"
    backend.stop(first, "user-requested")
    _wait(lambda: not execution._RUNNERS[(id(backend), first)].alive)  # its runner ended: its place is free
    assert ask(backend, second, "query", "b", "print(2)")["console"] == [["stdout", "2\n"]]


def test_it_starts_a_fresh_runner_lazily_after_the_kernel_restarts(backend):
    kernel_id = start_kernel(backend)
    assert ask(backend, kernel_id, "query", "before", "x = 41\nprint(x)")["exitCode"] == 0
    old = execution.runner_for(backend, kernel_id)
    backend.restart(kernel_id)
    answer = ask(backend, kernel_id, "query", "after", "print('fresh', 'x' in globals())")  # at once: no wait
    assert answer["status"] == "finished" and answer["exitCode"] == 0
    assert answer["console"] == [["stdout", "fresh False\n"]]
    new = execution.runner_for(backend, kernel_id)
    assert new is not old and not old.running()
