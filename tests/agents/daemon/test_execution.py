"""Code execution in kernels, agent side: the in-kernel runner's protocol, the per-kernel runner
with the local backend, and the ``execute`` stream kind over a real link."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid

import pytest

from agents.daemon import execution
from agents.daemon.backends.base import Backend, BackendSettings, KernelError
from agents.daemon.backends.local import LocalBackend, _group_members
from agents.protocol import KernelSpec

from .test_pty_streams import FakeManagerLink, ManagerLink, StreamMux  # noqa: F401 - the fake manager

RUNNER = execution.RUNNER_SOURCE.read_text()


# --- the runner's protocol, on its own ---------------------------------------------------------------

class RunnerProcess:
    def __init__(self, cwd):
        self.proc = subprocess.Popen([sys.executable, "-u", "-c", RUNNER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, cwd=cwd, start_new_session=True)
        self.events: list[dict] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.events.append(json.loads(line))
                self.cond.notify_all()

    def send(self, **request):
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()

    def until(self, predicate, timeout=10.0):
        with self.cond:
            assert self.cond.wait_for(lambda: any(predicate(e) for e in self.events), timeout), self.events
            return next(e for e in self.events if predicate(e))

    def finished(self, run, timeout=10.0):
        return self.until(lambda e: e.get("ev") == "finished" and e.get("run") == run, timeout)

    def output(self, run, stream="stdout"):
        with self.cond:
            return "".join(e["text"] for e in self.events
                           if e.get("ev") == "out" and e.get("run") == run and e["stream"] == stream)


@pytest.fixture
def runner(tmp_path):
    process = RunnerProcess(tmp_path)
    process.until(lambda e: e.get("ev") == "ready")
    yield process
    if process.proc.poll() is None:
        process.proc.stdin.close()
        try:
            process.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(process.proc.pid, 9)


def test_the_runner_keeps_its_namespace_between_queries_and_catches_subprocess_output(runner):
    runner.send(op="run", run="a", mode="query", code="x = 6 * 7\nimport os\nos.system('echo from-a-shell')")
    assert runner.finished("a")["exitCode"] == 0
    runner.send(op="run", run="b", mode="query", code="print(x)\nimport sys\nprint('oops', file=sys.stderr)")
    assert runner.finished("b")["exitCode"] == 0
    assert runner.output("a") == "from-a-shell\n"
    assert (runner.output("b"), runner.output("b", "stderr")) == ("42\n", "oops\n")


def test_what_python_code_prints_keeps_its_order_across_stdout_and_stderr(runner):
    runner.send(op="run", run="a", mode="query",
                code="import sys\nfor i in range(3):\n    print('out', i)\n    print('err', i, file=sys.stderr)")
    runner.finished("a")
    with runner.cond:
        records = [(e["stream"], e["text"]) for e in runner.events if e.get("ev") == "out"]
    assert records == [(stream, f"{word} {i}\n") for i in range(3)
                       for stream, word in (("stdout", "out"), ("stderr", "err"))]


def test_the_runner_reports_an_exception_as_a_traceback_and_exit_code_1_and_sys_exit_as_its_code(runner):
    runner.send(op="run", run="a", mode="query", code="def f():\n    1/0\nf()")
    assert runner.finished("a")["exitCode"] == 1
    traceback = runner.output("a", "stderr")
    assert "ZeroDivisionError" in traceback and 'File "<input>", line 2, in f' in traceback
    assert "kernel_runner" not in traceback and "<string>" not in traceback
    runner.send(op="run", run="b", mode="query", code="raise SystemExit(3)")
    assert runner.finished("b")["exitCode"] == 3


def test_the_runner_streams_output_before_the_run_ends(runner):
    runner.send(op="run", run="a", mode="query", code="import time\nprint('first')\ntime.sleep(1.5)\nprint('second')")
    runner.until(lambda e: e.get("ev") == "out" and "first" in e.get("text", ""), timeout=1.2)
    with runner.cond:
        assert not any(e.get("ev") == "finished" for e in runner.events)
    runner.finished("a")
    assert runner.output("a") == "first\nsecond\n"


def test_the_runner_asks_for_input_and_takes_the_answer(runner):
    runner.send(op="run", run="a", mode="query", code="name = input('who? ')\nprint('hello', name)")
    assert runner.until(lambda e: e.get("ev") == "waiting-input") == {"ev": "waiting-input", "run": "a",
                                                                      "password": False}
    assert runner.output("a") == "who? "
    runner.send(op="input", run="a", text="ada")
    assert runner.finished("a")["exitCode"] == 0
    assert runner.output("a") == "who? hello ada\n"


def test_the_runner_runs_batch_stages_in_its_directory_and_stops_at_a_failed_build(runner, tmp_path):
    (tmp_path / "main.py").write_text("print('main ran')\n")
    runner.send(op="run", run="a", mode="batch", options={"clean": "", "build": "echo built > b.txt", "exec": "*"})
    assert runner.finished("a")["exitCode"] == 0
    assert runner.until(lambda e: e.get("ev") == "stage") == {"ev": "stage", "run": "a",
                                                               "status": "build-finished", "exitCode": 0}
    assert runner.output("a") == "main ran\n" and (tmp_path / "b.txt").read_text() == "built\n"
    runner.send(op="run", run="b", mode="batch", options={"clean": None, "build": "exit 2", "exec": "echo never"})
    assert runner.finished("b")["exitCode"] == 2
    assert "never" not in runner.output("b")


def test_the_runner_completes_names_of_its_namespace(runner):
    runner.send(op="run", run="a", mode="query", code="import os\nmy_variable = 1")
    runner.finished("a")
    runner.send(op="complete", id=7, code="my_va", options={})
    assert runner.until(lambda e: e.get("ev") == "completions")["items"] == ["my_variable"]
    runner.send(op="complete", id=8, code="", options={"line": "os.pa"})
    assert "os.path" in runner.until(lambda e: e.get("id") == 8)["items"]


def test_an_interrupt_stops_a_runaway_query_and_a_batch_command(runner):
    runner.send(op="run", run="a", mode="query", code="import time\nprint('go')\ntime.sleep(60)")
    runner.until(lambda e: e.get("ev") == "out")
    runner.send(op="interrupt")
    assert runner.finished("a", timeout=5)["exitCode"] == 130
    assert "KeyboardInterrupt" in runner.output("a", "stderr")
    runner.send(op="run", run="b", mode="batch", options={"exec": "echo start; sleep 60"})
    runner.until(lambda e: e.get("run") == "b" and e.get("ev") == "out")
    runner.send(op="interrupt")
    assert runner.finished("b", timeout=5)["exitCode"] == 137  # the command's group got SIGKILL
    runner.send(op="run", run="c", mode="query", code="print('still here')")
    assert runner.finished("c")["exitCode"] == 0 and runner.output("c") == "still here\n"


def test_the_runner_ends_when_its_stdin_closes(runner):
    runner.proc.stdin.close()
    assert runner.proc.wait(5) == 0


# --- the per-kernel runner with the local backend -----------------------------------------------------

@pytest.fixture
def backend(tmp_path):
    backend = LocalBackend(BackendSettings(agent_id="exec-test", scratch_root=tmp_path / "scratch",
                                           port_range=(31500, 31549), stop_timeout=2))
    yield backend
    for state in backend.list_kernels():
        backend.stop(state.kernel_id, "test-cleanup")


def start_kernel(backend) -> str:
    kernel_id = str(uuid.uuid4())
    backend.create(KernelSpec.from_wire({
        "kernel_id": kernel_id, "session_id": str(uuid.uuid4()), "image": "local/shell:1.0",
        "session_type": "interactive", "cluster_hostname": "main1", "slots": {"cpu": "1", "mem": "268435456"}}))
    return kernel_id


def ask(backend, kernel_id, mode, run_id="r1", code="", options=None, flush_timeout=5.0):
    return execution.execute(backend, kernel_id, {"mode": mode, "run_id": run_id, "code": code,
                                                  "options": options or {}, "flush_timeout": flush_timeout})


def until_finished(backend, kernel_id, first: dict) -> tuple[list, dict]:
    answers = [first]
    while answers[-1]["status"] == "continued":
        answers.append(ask(backend, kernel_id, "continue", first["runId"]))
    return answers, answers[-1]


def console_text(answers, stream="stdout"):
    return "".join(text for answer in answers for kind, text in answer["console"] if kind == stream)


def test_a_query_in_a_local_kernel_answers_the_clients_document_and_keeps_the_namespace(backend):
    kernel_id = start_kernel(backend)
    answer = ask(backend, kernel_id, "query", "r1", "x = 6 * 7\nimport os\nprint(x, os.getcwd())")
    assert answer["status"] == "finished" and answer["exitCode"] == 0 and answer["runId"] == "r1"
    assert set(answer) == {"status", "runId", "exitCode", "console", "options", "files"}
    work = backend._dir(kernel_id) / "home" / "work"
    assert answer["console"] == [["stdout", f"42 {work}\n"]]
    again = ask(backend, kernel_id, "query", "r2", "print(x + 1)")
    assert again["console"] == [["stdout", "43\n"]]


def test_a_long_run_is_answered_in_continued_pieces_in_order_and_an_exception_exits_1(backend):
    kernel_id = start_kernel(backend)
    code = "import time\nfor i in range(4):\n    print('tick', i, flush=True)\n    time.sleep(0.4)\n1/0"
    first = ask(backend, kernel_id, "query", "long", code, flush_timeout=0.3)
    answers, last = until_finished(backend, kernel_id, first)
    assert first["status"] == "continued" and len(answers) >= 3
    assert console_text(answers) == "".join(f"tick {i}\n" for i in range(4))
    assert last["exitCode"] == 1 and "ZeroDivisionError" in console_text(answers, "stderr")


def test_input_mode_answers_a_waiting_run(backend):
    kernel_id = start_kernel(backend)
    first = ask(backend, kernel_id, "query", "in", "print('got', input('value: '))")
    assert first["status"] == "waiting-input" and first["options"] == {"is_password": False}
    answer = ask(backend, kernel_id, "input", "in", "seven")
    answers, last = until_finished(backend, kernel_id, answer)
    assert last["exitCode"] == 0 and console_text([first, *answers]) == "value: got seven\n"
    with pytest.raises(KernelError, match="no run 'in'"):  # a finished run, once answered, is forgotten
        ask(backend, kernel_id, "input", "in", "late")
    ask(backend, kernel_id, "query", "busy", "import time\ntime.sleep(1)", flush_timeout=0.1)
    with pytest.raises(KernelError, match="not waiting for input"):
        ask(backend, kernel_id, "input", "busy", "early")


def test_batch_mode_reports_the_build_then_the_exec_with_their_exit_codes(backend):
    kernel_id = start_kernel(backend)
    work = backend._dir(kernel_id) / "home" / "work"
    (work / "main.py").write_text("import sys\nprint('main here')\nsys.exit(5)\n")
    first = ask(backend, kernel_id, "batch", "b1", options={"clean": "*", "build": "echo building", "exec": "*"})
    answers = [first]
    while answers[-1]["status"] != "finished":
        answers.append(ask(backend, kernel_id, "continue", "b1"))
    statuses = [a["status"] for a in answers if a["status"] != "continued"]
    assert statuses == ["build-finished", "finished"]
    build = next(a for a in answers if a["status"] == "build-finished")
    assert build["exitCode"] == 0 and answers[-1]["exitCode"] == 5
    assert console_text(answers) == "building\nmain here\n"


def test_complete_mode_answers_completions(backend):
    kernel_id = start_kernel(backend)
    ask(backend, kernel_id, "query", "c0", "import json\nspecial_name = 1")
    answer = ask(backend, kernel_id, "complete", "", "special_", {"row": 0, "col": 8, "line": "special_", "post": ""})
    assert answer["completions"] == ["special_name"]


def test_a_continue_of_an_unknown_run_and_a_bad_mode_are_refused(backend):
    kernel_id = start_kernel(backend)
    with pytest.raises(KernelError, match="no run"):
        ask(backend, kernel_id, "continue", "nope")
    with pytest.raises(KernelError, match="unknown execute mode"):
        ask(backend, kernel_id, "shell", "r1")
    with pytest.raises(KernelError, match="run_id"):
        ask(backend, kernel_id, "query", "../../x", "print(1)")


def test_the_runner_dies_with_its_kernel_and_a_run_in_flight_finishes(backend):
    kernel_id = start_kernel(backend)
    first = ask(backend, kernel_id, "query", "forever", "import time\nprint('up')\ntime.sleep(600)", flush_timeout=1)
    assert first["console"] == [["stdout", "up\n"]]
    runner = execution.runner_for(backend, kernel_id)
    pid, run = runner.proc.pid, runner.runs["forever"]
    backend.stop(kernel_id, "user-requested")
    deadline = time.monotonic() + 5
    while (_group_members(pid) or runner.alive) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _group_members(pid) and not runner.alive
    last = runner.answer("continue", run, "forever", 1)
    assert last["status"] == "finished" and last["exitCode"] != 0
    assert "code runner ended" in console_text([last], "stderr")
    with pytest.raises(KernelError, match="not running"):
        ask(backend, kernel_id, "query", "after", "print(1)")


class NoRuntime(Backend):
    name = "bare"

    def adopt(self): return []
    def list_kernels(self): return []
    def create(self, spec, emit=None): raise KernelError("no", "")
    def stop(self, kernel_id, reason): return None
    def restart(self, kernel_id): return None
    def logs(self, kernel_id): return None
    def stats(self): return {}


def test_a_kernel_without_a_python_runtime_is_unsupported(tmp_path):
    backend = NoRuntime(BackendSettings(agent_id="bare", scratch_root=tmp_path))
    with pytest.raises(KernelError) as caught:
        ask(backend, "k1", "query", "r1", "print(1)")
    assert caught.value.reason == "unsupported" and "execute is unsupported" in str(caught.value)


# --- the execute kind over a real link ---------------------------------------------------------------

@pytest.fixture
def link(backend):
    manager = FakeManagerLink()
    stop = threading.Event()
    link = ManagerLink(f"ws://127.0.0.1:{manager.port}/agent-api/v1/link?agent_id=a1", "Bearer t", lambda: None,
                       stop, streams=StreamMux(backend))
    link.start()
    assert manager.connected.wait(5) and link.connected.wait(5)
    yield manager
    stop.set()
    link.join(5)
    manager.close()


def test_an_execute_stream_answers_one_json_document_and_closes(backend, link):
    kernel_id = start_kernel(backend)
    sid = uuid.uuid4().hex
    link.send({"type": "stream.open", "stream": sid, "kind": "execute", "kernel_id": kernel_id, "window": 4,
               "mode": "query", "run_id": "w1", "code": "print(6 * 7)", "options": {}, "flush_timeout": 5})
    assert link.next() == {"type": "stream.opened", "stream": sid}
    match = link.output_until(sid, rb"^\{.*\}$")
    assert json.loads(match.group(0))["console"] == [["stdout", "42\n"]]
    assert link.next() == {"type": "stream.close", "stream": sid, "exit_code": 0, "reason": "done"}


def test_an_execute_stream_with_a_bad_request_is_a_stream_error(backend, link):
    kernel_id = start_kernel(backend)
    sid = uuid.uuid4().hex
    link.send({"type": "stream.open", "stream": sid, "kind": "execute", "kernel_id": kernel_id,
               "mode": "continue", "run_id": "missing", "code": ""})
    frame = link.next()
    assert frame["type"] == "stream.error" and "no run 'missing'" in frame["message"]
