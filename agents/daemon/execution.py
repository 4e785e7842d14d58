"""Code execution in kernels: the ``execute`` stream kind and one code runner per kernel.

The manager opens an ``execute`` stream per request (``docs/agent-protocol.md``,
"Execute"), with the fields ``mode``, ``run_id``, ``code``, ``options`` and
``flush_timeout``; the stream answers one JSON document and ends::

    {"status": "finished"|"continued"|"waiting-input"|"build-finished"|"clean-finished",
     "runId": ..., "exitCode": n|null, "console": [[stream, text], ...], "options": {...}, "files": []}

Per kernel the agent keeps one :class:`KernelRunner`: the in-kernel runner
(``kernel_runner.py``) started lazily with :meth:`Backend.exec_process` and the
image's Python runtime (:meth:`Backend.runtime`), kept for the kernel's life,
so a namespace persists between queries.  Its output is buffered per run, so a
``continue`` (from any web process: every request is its own stream) gets what
came since the last answer.  An answer is sent as soon as the run reaches a
state (finished, waiting for input, a batch stage done), or shortly after
output arrived, or after ``flush_timeout`` seconds with status ``continued``.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from .backends.base import Backend, ChunksEndpoint, ExecProcess, KernelError
from .streams import register_kind

__all__ = ["KernelRunner", "MODES", "execute", "forget_runner", "open_execute", "runner_for"]

log = logging.getLogger(__name__)

#: The modes of the manager's requests (``interrupt`` is the manager's own, for a client gone away).
MODES = ("query", "batch", "continue", "input", "complete", "interrupt")
RUN_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: Seconds a request waits for output at most (the manager's ``flush_timeout``), and its bounds.
FLUSH_TIMEOUT = 2.0
FLUSH_BOUNDS = (0.05, 30.0)
#: After the first output of an answer, how long to wait for more before answering.
LINGER = 0.1
#: Output kept per run until it is asked for; beyond it, output is dropped (with a note).
RUN_BUFFER = 8 * 1024 * 1024
#: Output kept for all the runs of one runner together (runs nobody continues must not add up).
RUNNER_BUFFER = 32 * 1024 * 1024
#: Runs one runner keeps (running, or finished and not yet answered); a new one beyond is refused.
MAX_RUNS = 64
#: Code runners one agent keeps at once (one per kernel that executed code); a new one beyond is refused.
MAX_RUNNERS = 64
#: Most output text in one answer; the rest waits for the next ``continue``.
ANSWER_LIMIT = 1024 * 1024
#: Finished runs nobody asked about are forgotten after this many seconds.
RUN_TTL = 1800.0
READY_TIMEOUT = 20.0
COMPLETE_TIMEOUT = 5.0
RUNNER_SOURCE = Path(__file__).with_name("kernel_runner.py")
_TERMINAL = ("finished", "waiting-input", "build-finished", "clean-finished")


class Run:
    def __init__(self, run_id: str):
        self.id = run_id
        self.items: deque[tuple[str, Any, Any]] = deque()  # ("out", stream, text) | (status, exit code, options)
        self.buffered = 0
        self.dropped = False
        self.done = False
        self.waiting = False
        self.touched = time.monotonic()


class KernelRunner:
    """The code runner of one kernel, and the runs it executed."""

    def __init__(self, backend: Backend, kernel_id: str, python: str):
        self.kernel_id = kernel_id
        self.cond = threading.Condition()
        self.runs: dict[str, Run] = {}
        self.completions: dict[int, list[str]] = {}
        self._next_id = 0
        self.buffered = 0  # output waiting in all the runs together (bounded by RUNNER_BUFFER)
        self.alive = True
        self.ready = False
        self.proc: ExecProcess = backend.exec_process(
            kernel_id, [python, "-u", "-c", RUNNER_SOURCE.read_text()],
            {"PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"})
        self._write_lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True, name=f"runner-{kernel_id[:8]}").start()
        with self.cond:
            deadline = time.monotonic() + READY_TIMEOUT
            while not self.ready and self.alive and time.monotonic() < deadline:
                self.cond.wait(0.2)
            ready = self.ready
        if not ready:
            self.close()
            raise KernelError("runner-failed", f"the code runner did not start in kernel {kernel_id} "
                                               f"(runtime {python!r})")
        log.info("kernel %s: code runner started (%s)", kernel_id, python)

    # -- the runner's side -----------------------------------------------------------------------
    def _send(self, **request: Any) -> None:
        data = (json.dumps(request) + "\n").encode()
        try:
            with self._write_lock:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
        except (OSError, ValueError) as exc:
            raise KernelError("runner-gone", f"the code runner of kernel {self.kernel_id} ended: {exc}") from exc

    def _read(self) -> None:
        try:
            for line in self.proc.stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    with self.cond:
                        self._event(event)
                        self.cond.notify_all()
        except (OSError, ValueError):
            pass
        code = self.proc.wait(2.0)
        with self.cond:
            self.alive = False
            for run in self.runs.values():
                if not run.done:
                    run.items.append(("out", "stderr", "The code runner ended (the kernel stopped or the code "
                                                       "ended its process).\n"))
                    run.items.append(("finished", code if code else 1, {}))
                    run.done = True
            self.cond.notify_all()
        log.info("kernel %s: code runner ended (exit code %s)", self.kernel_id, code)

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("ev")
        if kind == "ready":
            self.ready = True
            return
        if kind == "completions":
            self.completions[event.get("id")] = [str(i) for i in event.get("items") or []][:200]
            return
        run = self.runs.get(str(event.get("run")))
        if run is None:
            return
        if kind == "out":
            text = str(event.get("text") or "")
            if run.buffered + len(text) > RUN_BUFFER or self.buffered + len(text) > RUNNER_BUFFER:
                if not run.dropped:
                    run.dropped = True
                    run.items.append(("out", "stderr", f"\n[output dropped: more than {RUN_BUFFER} bytes "
                                                       "were waiting to be read]\n"))
                return
            run.buffered += len(text)
            self.buffered += len(text)
            run.items.append(("out", "stderr" if event.get("stream") == "stderr" else "stdout", text))
        elif kind == "waiting-input":
            run.waiting = True
            run.items.append(("waiting-input", None, {"is_password": bool(event.get("password"))}))
        elif kind == "stage":
            status = event.get("status")
            if status in ("clean-finished", "build-finished"):
                run.items.append((status, _int(event.get("exitCode")), {}))
        elif kind == "finished":
            run.done = True
            run.items.append(("finished", _int(event.get("exitCode")), {}))

    # -- requests ----------------------------------------------------------------------------------
    def start(self, mode: str, run_id: str, code: str, options: dict[str, Any]) -> Any:
        """Check and send a request; returns what :meth:`answer` waits on (an error is a :class:`KernelError`)."""
        with self.cond:
            self._forget_stale()
            if not self.alive:
                raise KernelError("runner-gone", f"the code runner of kernel {self.kernel_id} ended")
            run = self.runs.get(run_id)
            if mode == "complete":
                self._next_id += 1
                request_id = self._next_id
                self._send(op="complete", id=request_id, code=code, options=options)
                return request_id
            if mode == "interrupt":
                self._send(op="interrupt")
                return run
            if mode in ("query", "batch"):
                if run is not None and not run.done:
                    return run  # the same run asked again: its output so far
                self._make_room(run_id)
                run = self.runs[run_id] = Run(run_id)
                if mode == "query":
                    self._send(op="run", run=run_id, mode="query", code=code)
                else:
                    self._send(op="run", run=run_id, mode="batch", options=options)
                return run
            if run is None:
                raise KernelError("unknown-run", f"no run {run_id!r} in this session")
            if mode == "input":
                if not run.waiting:
                    raise KernelError("not-waiting-input", f"run {run_id!r} is not waiting for input")
                run.waiting = False
                self._send(op="input", run=run_id, text=code)
            return run

    def answer(self, mode: str, handle: Any, run_id: str, flush_timeout: float) -> dict[str, Any]:
        if mode == "complete":
            return self._completions(handle, run_id)
        run: Run | None = handle
        console: list[list[str]] = []
        size = 0
        status, exit_code, options = "continued", None, {}
        deadline = time.monotonic() + flush_timeout
        first_output = None
        with self.cond:
            while run is not None:
                run.touched = time.monotonic()
                while run.items and size < ANSWER_LIMIT:
                    kind, a, b = run.items.popleft()
                    if kind == "out":
                        run.buffered -= len(b)
                        self.buffered -= len(b)
                        size += len(b)
                        if console and console[-1][0] == a:
                            console[-1][1] += b
                        else:
                            console.append([a, b])
                        continue
                    status, exit_code, options = kind, a, b
                    break
                if status != "continued" or size >= ANSWER_LIMIT:
                    break
                now = time.monotonic()
                if console and first_output is None:
                    first_output = now
                if now >= deadline or (first_output is not None and now - first_output >= LINGER):
                    break
                wait = deadline - now if first_output is None else LINGER - (now - first_output)
                self.cond.wait(max(0.01, min(wait, 0.5)))
            if run is not None and status == "finished" and not run.items:
                self._drop(run.id)
        return {"status": status, "runId": run_id, "exitCode": exit_code, "console": console,
                "options": options, "files": []}

    def _completions(self, request_id: int, run_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + COMPLETE_TIMEOUT
        with self.cond:
            while request_id not in self.completions and self.alive and time.monotonic() < deadline:
                self.cond.wait(0.2)
            items = self.completions.pop(request_id, [])
        return {"status": "finished", "runId": run_id, "exitCode": 0, "console": [], "options": {},
                "files": [], "completions": items}

    def _drop(self, run_id: str) -> None:
        run = self.runs.pop(run_id, None)
        if run is not None:
            self.buffered -= run.buffered

    def _forget_stale(self) -> None:
        now = time.monotonic()
        for run_id in [r.id for r in self.runs.values() if r.done and now - r.touched > RUN_TTL]:
            self._drop(run_id)

    def _make_room(self, run_id: str) -> None:
        """Before a new run: forget the oldest finished runs beyond :data:`MAX_RUNS`; refuse if all still run."""
        if run_id in self.runs:
            self._drop(run_id)  # a finished run asked again under its id starts afresh
        if len(self.runs) < MAX_RUNS:
            return
        for run in sorted((r for r in self.runs.values() if r.done), key=lambda r: r.touched):
            self._drop(run.id)
            if len(self.runs) < MAX_RUNS:
                return
        log.warning("kernel %s: refused run %s: %d runs are still running", self.kernel_id, run_id, len(self.runs))
        raise KernelError("too-many-runs", f"{len(self.runs)} runs are still running in this session "
                                           f"(at most {MAX_RUNS}); continue or interrupt them first")

    def running(self) -> bool:
        """Whether the runner's process still runs (a kernel restart kills it before its reader notices)."""
        if not self.alive:
            return False
        try:
            return self.proc.wait(0) is None
        except Exception:  # noqa: BLE001 - a backend's wait that fails counts as ended
            return False

    def close(self) -> None:
        self.alive = False
        try:
            self.proc.kill()
        except OSError:
            pass


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


_RUNNERS: dict[tuple[int, str], KernelRunner] = {}
_RUNNERS_LOCK = threading.Lock()
_STARTING: dict[tuple[int, str], threading.Lock] = {}


def runner_for(backend: Backend, kernel_id: str) -> KernelRunner:
    """The kernel's runner, started if it has none (or its last one ended); raises :class:`KernelError`."""
    key = (id(backend), kernel_id)
    with _RUNNERS_LOCK:
        runner = _RUNNERS.get(key)
    if runner is not None and runner.running():
        return runner
    with _RUNNERS_LOCK:
        starting = _STARTING.setdefault(key, threading.Lock())
    with starting:  # one start per kernel at a time
        with _RUNNERS_LOCK:
            runner = _RUNNERS.get(key)
        if runner is not None and runner.running():
            return runner
        with _RUNNERS_LOCK:
            if runner is not None:
                _RUNNERS.pop(key, None)
                runner.close()
            # ended runners (of stopped kernels) are forgotten: their runs ended with them
            for gone in [k for k, r in _RUNNERS.items() if not r.alive]:
                _RUNNERS.pop(gone)
            if len(_RUNNERS) >= MAX_RUNNERS:
                _STARTING.pop(key, None)
                log.warning("kernel %s: refused a code runner: %d runners run on this agent", kernel_id, len(_RUNNERS))
                raise KernelError("too-many-runners", f"{len(_RUNNERS)} code runners run on this agent "
                                                      f"(at most {MAX_RUNNERS}); try again later")
        runtime = backend.runtime(kernel_id)
        if runtime is None or runtime[0] != "python":
            raise KernelError("unsupported", "this session's image declares no code runtime "
                                             "(ai.backend.runtime-type python): execute is unsupported")
        if runner is not None:
            log.info("kernel %s: its code runner ended (kernel restarted or stopped); starting a new one", kernel_id)
        runner = KernelRunner(backend, kernel_id, runtime[1])
        with _RUNNERS_LOCK:
            _RUNNERS[key] = runner
            _STARTING.pop(key, None)
        return runner


def forget_runner(backend: Backend, kernel_id: str) -> None:
    """End a kernel's runner (tests; a stopped kernel's runner ends by itself)."""
    with _RUNNERS_LOCK:
        runner = _RUNNERS.pop((id(backend), kernel_id), None)
    if runner is not None:
        runner.close()


def _request(frame: dict[str, Any]) -> tuple[str, str, str, dict[str, Any], float]:
    mode = frame.get("mode")
    if mode not in MODES:
        raise KernelError("invalid-request", f"unknown execute mode {mode!r}")
    run_id = frame.get("run_id") or ""
    if not isinstance(run_id, str) or (run_id and not RUN_ID.fullmatch(run_id)):
        raise KernelError("invalid-request", "run_id must be 1-64 letters, digits, '_', '.' or '-'")
    if not run_id and mode not in ("complete", "interrupt"):
        raise KernelError("invalid-request", "run_id is required")
    code = frame.get("code") or ""
    if not isinstance(code, str):
        raise KernelError("invalid-request", "code must be a string")
    options = frame.get("options") or {}
    if not isinstance(options, dict):
        raise KernelError("invalid-request", "options must be an object")
    try:
        flush = float(frame.get("flush_timeout") or FLUSH_TIMEOUT)
    except (TypeError, ValueError):
        flush = FLUSH_TIMEOUT
    flush = min(max(flush, FLUSH_BOUNDS[0]), FLUSH_BOUNDS[1])
    return mode, run_id, code, options, flush


def execute(backend: Backend, kernel_id: str, frame: dict[str, Any]) -> dict[str, Any]:
    """One request, answered (the whole of it, in this thread): for tests and the opener."""
    mode, run_id, code, options, flush = _request(frame)
    runner, handle = _start(backend, kernel_id, mode, run_id, code, options)
    return runner.answer(mode, handle, run_id, flush)


def _start(backend: Backend, kernel_id: str, mode: str, run_id: str, code: str,
           options: dict[str, Any]) -> tuple[KernelRunner, Any]:
    """Send a request to the kernel's runner; a runner that ended under it (the kernel restarted) is
    replaced once, lazily, so the request goes to a fresh runner instead of failing."""
    runner = runner_for(backend, kernel_id)
    try:
        return runner, runner.start(mode, run_id, code, options)
    except KernelError as exc:
        if exc.reason != "runner-gone" or mode not in ("query", "batch", "complete"):
            raise
    runner.close()
    runner = runner_for(backend, kernel_id)
    return runner, runner.start(mode, run_id, code, options)


def open_execute(backend: Backend, kernel_id: str, frame: dict[str, Any]) -> ChunksEndpoint:
    """The ``execute`` stream: the request is checked and sent at open (a refusal is ``stream.error``);
    the answer is produced in the stream's reading thread."""
    mode, run_id, code, options, flush = _request(frame)
    runner, handle = _start(backend, kernel_id, mode, run_id, code, options)
    log.debug("kernel %s: execute %s run %s", kernel_id, mode, run_id)

    def chunks():
        yield json.dumps(runner.answer(mode, handle, run_id, flush)).encode()

    return ChunksEndpoint(chunks)


register_kind("execute", open_execute)
