"""The in-kernel code runner: a stdlib-only Python program the agent starts inside a kernel.

The agent ships this file's source into the kernel and runs it as
``<runtime python> -u -c <source>`` (a subprocess in the kernel's working
directory for the local backend, a ``docker exec`` for the Docker backend),
then speaks JSON lines with it: one object per line on stdin (requests) and on
the original stdout (events).  It imports nothing outside the standard library
and nothing of this project, so it runs in any image with a Python 3.8+.

Requests (agent -> runner)::

    {"op": "run", "run": id, "mode": "query", "code": "..."}
    {"op": "run", "run": id, "mode": "batch", "options": {"clean": c, "build": b, "exec": e}}
    {"op": "input", "run": id, "text": "..."}          # the answer to a waiting-input
    {"op": "complete", "id": n, "code": "...", "options": {...}}
    {"op": "interrupt"}                                # KeyboardInterrupt / kill the batch command

Events (runner -> agent)::

    {"ev": "ready", "pid": n, "python": "3.11.2"}
    {"ev": "out", "run": id, "stream": "stdout"|"stderr", "text": "..."}
    {"ev": "waiting-input", "run": id, "password": false}
    {"ev": "stage", "run": id, "status": "clean-finished"|"build-finished", "exitCode": n}
    {"ev": "finished", "run": id, "exitCode": n}
    {"ev": "completions", "id": n, "items": [...]}

Runs execute one after another in the main thread, all ``query`` runs in one
namespace that persists for the runner's life (``x = 1``, then ``print(x)``).
What the code prints (``sys.stdout``, ``sys.stderr``, line-buffered) goes out
as events at once, in order across both streams; file descriptors 1 and 2 are
pipes read by two threads, so the output of every process the code starts
streams out too, in order per stream; a marker written to them at the end of a
run makes sure every byte before it went out before ``finished``.  File descriptor 0 is ``/dev/null``: ``input()``
and ``sys.stdin`` ask the agent (``waiting-input``) instead.  The runner ends
when its stdin closes (the agent went, or the kernel stops), killing a batch
command still running.
"""
import builtins
import codecs
import io
import json
import os
import re
import rlcompleter
import signal
import subprocess
import sys
import threading
import traceback

MARK = b"\x00\x00bai-runner-flush\x00\x00"
CHUNK = 65536
#: The runner's own file name (``<string>`` when run with ``-c``): its frames are left out of tracebacks.
SELF = globals().get("__file__", "<string>")


class Runner:
    def __init__(self):
        self.proto_out = os.dup(1)
        self.proto_in = os.fdopen(os.dup(0), "rb", buffering=0)
        self.emit_lock = threading.Lock()
        self.current = None  # the id of the run whose output the pipes carry
        self.active = False  # a run is executing
        self.namespace = {"__name__": "__main__", "__builtins__": builtins}
        self.work = []
        self.work_cond = threading.Condition()
        self.inputs = []
        self.input_cond = threading.Condition()
        self.batch_proc = None
        self.flushed = {1: threading.Event(), 2: threading.Event()}
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        for fd, name in ((1, "stdout"), (2, "stderr")):
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            threading.Thread(target=self.forward, args=(read_end, fd, name), daemon=True).start()
        sys.stdout = _text_stream(self, "stdout")
        sys.stderr = _text_stream(self, "stderr")
        sys.stdin = _Stdin(self)
        builtins.input = self.input
        try:
            import getpass
            getpass.getpass = lambda prompt="Password: ", stream=None: self.input(prompt, password=True)
        except ImportError:
            pass

    # -- the protocol ----------------------------------------------------------------------------
    def emit(self, **event):
        data = (json.dumps(event) + "\n").encode()
        with self.emit_lock:
            view = memoryview(data)
            while view:
                view = view[os.write(self.proto_out, view):]

    def forward(self, fd, fd_no, name):
        """Copy one pipe (the kernel-side stdout or stderr) to ``out`` events, as it comes."""
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        pending = b""
        while True:
            try:
                chunk = os.read(fd, CHUNK)
            except OSError:
                return
            if not chunk:
                return
            pending += chunk
            while True:
                at = pending.find(MARK)
                if at < 0:
                    break
                self._send_text(name, decoder.decode(pending[:at]))
                pending = pending[at + len(MARK):]
                self.flushed[fd_no].set()
            keep = 0  # hold back what may be the start of a marker
            for size in range(min(len(MARK) - 1, len(pending)), 0, -1):
                if MARK.startswith(pending[-size:]):
                    keep = size
                    break
            ready, pending = pending[:len(pending) - keep], pending[len(pending) - keep:]
            self._send_text(name, decoder.decode(ready))

    def _send_text(self, name, text):
        for start in range(0, len(text), CHUNK):  # bounded events, whatever one write holds
            self.emit(ev="out", run=self.current, stream=name, text=text[start:start + CHUNK])

    def flush_pipes(self):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        for fd in (1, 2):
            self.flushed[fd].clear()
            try:
                os.write(fd, MARK)
            except OSError:
                continue
            self.flushed[fd].wait(5)

    def read_requests(self):
        for line in self.proto_in:
            try:
                request = json.loads(line)
            except ValueError:
                continue
            if not isinstance(request, dict):
                continue
            op = request.get("op")
            if op == "run":
                with self.work_cond:
                    self.work.append(request)
                    self.work_cond.notify()
            elif op == "input":
                with self.input_cond:
                    self.inputs.append(str(request.get("text") or ""))
                    self.input_cond.notify()
            elif op == "complete":
                self.emit(ev="completions", id=request.get("id"),
                          items=self.complete(str(request.get("code") or ""), request.get("options") or {}))
            elif op == "interrupt":
                self.interrupt()
        self.shutdown()

    def shutdown(self):
        proc = self.batch_proc
        if proc is not None:
            _kill_group(proc)
        os._exit(0)

    def interrupt(self):
        proc = self.batch_proc
        if proc is not None:
            _kill_group(proc)
        elif self.active:
            os.kill(os.getpid(), signal.SIGINT)  # KeyboardInterrupt in the main thread, even in a sleep

    # -- user input ------------------------------------------------------------------------------
    def input(self, prompt="", password=False):
        if prompt:
            sys.stdout.write(str(prompt))
        self.flush_pipes()
        with self.input_cond:
            self.inputs.clear()
        self.emit(ev="waiting-input", run=self.current, password=bool(password))
        with self.input_cond:
            while not self.inputs:
                self.input_cond.wait(0.25)  # a timed wait lets an interrupt through
            return self.inputs.pop(0)

    # -- completion ------------------------------------------------------------------------------
    def complete(self, code, options):
        line = str(options.get("line") or code) if isinstance(options, dict) else code
        match = re.search(r"[\w.]*$", line)
        text = match.group(0) if match else ""
        completer = rlcompleter.Completer(self.namespace)
        items = []
        try:
            for state in range(200):
                item = completer.complete(text, state)
                if item is None:
                    break
                if item not in items:
                    items.append(item)
        except Exception:  # noqa: BLE001 - completion never breaks the runner
            pass
        return items

    # -- runs ------------------------------------------------------------------------------------
    def serve(self):
        threading.Thread(target=self.read_requests, daemon=True).start()
        self.emit(ev="ready", pid=os.getpid(), python=sys.version.split()[0])
        while True:
            with self.work_cond:
                while not self.work:
                    self.work_cond.wait()
                request = self.work.pop(0)
            run = str(request.get("run") or "")
            self.current = run
            self.active = True
            try:
                if request.get("mode") == "batch":
                    code = self.run_batch(run, request.get("options") or {})
                else:
                    code = self.run_query(str(request.get("code") or ""))
            except KeyboardInterrupt:  # arrived between two steps
                code = 130
            self.active = False
            self.flush_pipes()
            self.emit(ev="finished", run=run, exitCode=code)

    def run_query(self, source):
        try:
            compiled = compile(source, "<input>", "exec")
            exec(compiled, self.namespace)
            return 0
        except SystemExit as exc:
            if exc.code is None:
                return 0
            if isinstance(exc.code, int):
                return exc.code
            print(exc.code, file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("KeyboardInterrupt", file=sys.stderr)
            return 130
        except BaseException:  # noqa: BLE001 - the user's error is the run's output
            kind, value, tb = sys.exc_info()
            while tb is not None and tb.tb_frame.f_code.co_filename == SELF:
                tb = tb.tb_next  # leave out the runner's own frames
            sys.stderr.write("".join(traceback.format_exception(kind, value, tb)))
            return 1

    def run_batch(self, run, options):
        """clean, build, exec: each a shell command (``*``: the default, empty: skip)."""
        stages = (("clean", "clean-finished"), ("build", "build-finished"), ("exec", None))
        for key, status in stages:
            command = options.get(key) if isinstance(options, dict) else None
            if command == "*":
                command = self.default_command(key)
            if not command:
                continue
            code = self.shell(str(command))
            if status is None:
                return code
            self.flush_pipes()
            self.emit(ev="stage", run=run, status=status, exitCode=code)
            if code != 0:
                return code
        return 0

    @staticmethod
    def default_command(stage):
        if stage == "exec":
            if os.path.isfile("main.py"):
                return f"{sys.executable} main.py"
            return "echo 'cannot find the main program (main.py); give --exec' >&2; exit 127"
        if stage == "build" and os.path.isfile("Makefile"):
            return "make"
        return None

    def shell(self, command):
        self.batch_proc = subprocess.Popen(command, shell=True, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            code = self.batch_proc.wait()
        finally:
            self.batch_proc = None
        return 128 - code if code < 0 else code


class _Stdin:
    """``sys.stdin`` of the code: each line read asks the agent for one."""

    def __init__(self, runner):
        self.runner = runner

    def readline(self, size=-1):
        return self.runner.input() + "\n"

    def read(self, size=-1):
        return self.readline()

    def __iter__(self):
        return self

    def __next__(self):
        return self.readline()

    def isatty(self):
        return False

    def fileno(self):
        return 0

    encoding = "utf-8"


class _Emitter(io.RawIOBase):
    """The bytes the code writes to ``sys.stdout`` / ``sys.stderr``, sent as ``out`` events at once, so
    that what Python code prints on both streams keeps its order exactly (the pipes of fds 1 and 2,
    read by two threads, carry what other processes write)."""

    def __init__(self, runner, name):
        super().__init__()
        self.runner = runner
        self.name = name
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def writable(self):
        return True

    def write(self, data):
        self.runner._send_text(self.name, self.decoder.decode(bytes(data)))
        return len(data)


def _text_stream(runner, name):
    """A line-buffered text stream of ``out`` events (``flush=True`` and prompts go out at once)."""
    return io.TextIOWrapper(io.BufferedWriter(_Emitter(runner, name)), encoding="utf-8", errors="replace",
                            line_buffering=True)


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass


def main():
    work = os.environ.get("BAI_RUNNER_WORKDIR")
    if work:
        try:
            os.chdir(work)
        except OSError:
            pass
    runner = Runner()

    def on_interrupt(signum, frame):
        if runner.active:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_interrupt)
    runner.serve()


if __name__ == "__main__":
    main()
