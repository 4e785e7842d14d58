"""The local backend: kernels are process groups on this host.

Per kernel, ``<scratch>/<kernel_id>/`` holds:

* ``kernel.json``: the state file (pid + process start time, ports, status,
  exit code, reason), written atomically, so a restarted daemon re-adopts
  live processes and reports finished ones;
* ``home/work/``: the working directory (``HOME``), with the mounts as symlinks;
* ``output.log``: stdout and stderr;
* ``launch.json`` (mode 0600): the command and environment, for restarts;
* ``exit_code``: written by a tiny ``/bin/sh`` wrapper when the startup
  command ends, because a restarted daemon cannot ``wait()`` for a process it
  did not spawn.

The wrapper runs in its own session (``start_new_session``), so the whole
kernel is one process group: stop sends SIGTERM to the group, then SIGKILL
after the grace period.  Without a startup command an idle loop runs.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

from agents.protocol import KernelSpec, KernelState, ReportedStatus, ServicePort, exit_reason, tail_text
from ..ports import PortsExhausted
from . import sshkeys
from .base import (
    Backend, BackendSettings, EmitFn, ExecProcess, KernelError, StreamEndpoint, _ignore, choose_gpus, local_address,
)

__all__ = ["LocalBackend", "LocalPty", "process_start_time"]

STATE_FILE = "kernel.json"
LOG_FILE = "output.log"
EXIT_FILE = "exit_code"
LAUNCH_FILE = "launch.json"
IDLE_COMMAND = "while :; do sleep 3600; done"
INFERENCE_SERVER = Path(__file__).resolve().parents[1] / "images" / "inference_server.py"

# What a local agent can run: process templates that stand in for container
# images.  The default command runs when a session gives no startup command.
# Code runs in every local kernel with the agent's own Python (``runtime``), hence runtime-type python.
_LOCAL_LABELS = {"ai.backend.kernelspec": "1", "ai.backend.base-distro": "host", "ai.backend.runtime-type": "python",
                 "ai.backend.role": "COMPUTE", "ai.backend.resource.min.cpu": "0.1",
                 "ai.backend.resource.min.mem": "64m"}
LOCAL_IMAGES: dict[str, dict[str, Any]] = {
    "local/shell:1.0": {
        "command": IDLE_COMMAND,
        "labels": {**_LOCAL_LABELS, "ai.backend.runtime-path": "python3"},
    },
    "local/python-http:1.0": {
        "command": 'exec python3 -m http.server "$PORT" --bind "${BACKENDAI_HOST:-127.0.0.1}"',
        "labels": {**_LOCAL_LABELS, "ai.backend.runtime-path": "python3",
                   "ai.backend.service-ports": "web:http:8080"},
    },
    # the test inference server (images/inference_server.py, also bai-test/inference:1.0's) with the agent's
    # Python: /v1/predict, /health and its unhealthy switch on $PORT (the first published service port)
    "local/inference:1.0": {
        "command": f"exec {shlex.quote(sys.executable)} {shlex.quote(str(INFERENCE_SERVER))}",
        "labels": {**_LOCAL_LABELS, "ai.backend.runtime-path": "python3", "ai.backend.role": "INFERENCE",
                   "ai.backend.service-ports": "inference:http:8000", "ai.backend.endpoint-ports": "inference"},
    },
}
#: $1: the startup command, $2: the exit code file, $3: an optional bootstrap script.
#: The trap keeps the wrapper alive on SIGTERM so that it can record the command's exit status.
#: A stop that arrives before the command is forked would never reach it (the group is signalled
#: once), so the trap remembers it and the command is not started at all.
WRAPPER = r"""trap 'stopped=1' TERM INT HUP
if [ -n "$3" ] && [ -z "$stopped" ]; then /bin/sh "$3"; fi
if [ -z "$stopped" ]; then /bin/sh -c "$1"; code=$?; else code=143; fi
echo "$code" > "$2.tmp" && mv -f "$2.tmp" "$2"
exit "$code"
"""
_PASSED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL", "TERM")
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _proc_stat(pid: int, proc: Path = Path("/proc")) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (index 0 is the state)."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    return text[text.rfind(")") + 2:].split()


def process_start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (stable identity with the pid)."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def _is_alive(pid: int, start_time: int | None) -> bool:
    """Whether ``pid`` is still the process we started (not a zombie, not a reused pid)."""
    fields = _proc_stat(pid)
    if not fields or fields[0] in ("Z", "X", "x"):
        return False
    return start_time is None or (len(fields) > 19 and int(fields[19]) == start_time)


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _proc_stat(int(entry.name))
        if fields and len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X", "x"):
            members.append(int(entry.name))
    return members


def _groups_working_in(directory: Path) -> set[int]:
    """The process groups of the live processes whose working directory is inside ``directory``:
    a kernel's processes run in its home, so this finds them even when no state file names
    them (a daemon killed between starting a kernel and recording its pid).  Never our own."""
    root = str(directory)
    groups = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
        except OSError:
            continue
        if cwd != root and not cwd.startswith(root + os.sep):
            continue
        fields = _proc_stat(int(entry.name))
        if fields and len(fields) > 2 and fields[0] not in ("Z", "X", "x"):
            groups.add(int(fields[2]))
    groups.discard(os.getpgrp())
    return groups


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _env_name(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


def _set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", max(rows, 1), max(cols, 1), 0, 0))


def _take_controlling_tty() -> None:  # runs in the child, after setsid() and the dup2 onto 0/1/2
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _tagged(tag: str) -> list[int]:
    """Live processes whose environment holds ``BAI_PTY_ID=<tag>`` (those this user may read)."""
    marker = b"BAI_PTY_ID=" + tag.encode() + b"\0"
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as fh:
                if marker in fh.read() + b"\0":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


class LocalPty(StreamEndpoint):
    """A shell on a new pseudo-terminal, in its own session.

    Closing it hangs up the terminal's session (the shell passes SIGHUP on to
    its jobs), then kills whatever is left of it: its process group and every
    process carrying its ``BAI_PTY_ID`` (background jobs have their own groups).
    """

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], rows: int, cols: int, grace: float = 1.0):
        super().__init__()
        self.tag = env.get("BAI_PTY_ID", "")
        master, slave = os.openpty()
        try:
            _set_winsize(slave, rows, cols)
            self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave,
                                         start_new_session=True, close_fds=True, preexec_fn=_take_controlling_tty)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        self.master = master
        self.grace = grace
        self._lock = threading.Lock()

    def read(self, size: int) -> bytes:
        if not self._wait_readable(self.master):
            return b""
        try:
            return os.read(self.master, size)
        except OSError:  # EIO: every process closed the terminal
            return b""

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.closed:
                raise OSError("the terminal is closed")
            try:
                written = os.write(self.master, view)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            view = view[written:]

    def resize(self, rows: int, cols: int) -> None:
        if not self.closed:
            _set_winsize(self.master, rows, cols)  # the kernel sends SIGWINCH to the foreground group

    def exit_code(self) -> int | None:
        try:
            code = self.proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            return None
        return 128 - code if code < 0 else code

    def close(self) -> None:
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
        if self.proc.poll() is None:
            _killpg(self.proc.pid, signal.SIGHUP)
            try:
                self.proc.wait(timeout=self.grace)
            except subprocess.TimeoutExpired:
                pass
        _killpg(self.proc.pid, signal.SIGKILL)  # whatever ignored the hangup
        for pid in _tagged(self.tag) if self.tag else []:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            self.proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.close(self.master)
        except OSError:
            pass


class LocalBackend(Backend):
    """Kernels as process groups; state under ``settings.scratch_root``."""

    name = "local"

    def __init__(self, settings: BackendSettings):
        super().__init__(settings)
        self.root = Path(settings.scratch_root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._stopping: set[str] = set()
        self._restarting: set[str] = set()
        self._cpu_prev: dict[str, tuple[int, float]] = {}
        self._execs: dict[str, list[subprocess.Popen[bytes]]] = {}  # processes started by exec_process
        self._lock = threading.RLock()

    # -- state files ----------------------------------------------------------------------------
    def _dir(self, kernel_id: str) -> Path:
        if not re.fullmatch(r"[0-9A-Za-z][0-9A-Za-z._-]*", kernel_id):
            raise KernelError("invalid-kernel-id", kernel_id)
        return self.root / kernel_id

    def _load(self, kernel_id: str) -> dict[str, Any] | None:
        try:
            return json.loads((self._dir(kernel_id) / STATE_FILE).read_text())
        except (OSError, ValueError, KernelError):
            return None

    def _save(self, state: dict[str, Any]) -> None:
        path = self._dir(state["kernel_id"]) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, path)

    def _kernel_ids(self) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(self.root) if e.is_dir() and (Path(e.path) / STATE_FILE).exists())
        except FileNotFoundError:
            return []

    # -- status ---------------------------------------------------------------------------------
    def _exit_code(self, kernel_id: str, state: dict[str, Any]) -> int | None:
        try:
            return int((self._dir(kernel_id) / EXIT_FILE).read_text().strip())
        except (OSError, ValueError):
            pass
        proc = self._procs.get(kernel_id)
        if proc is not None and proc.returncode is not None:
            code = proc.returncode
            return 128 - code if code < 0 else code
        return state.get("exit_code")

    def _running(self, kernel_id: str, state: dict[str, Any]) -> bool:
        proc = self._procs.get(kernel_id)
        if proc is not None and proc.poll() is not None:  # reap our own child
            return False
        if (self._dir(kernel_id) / EXIT_FILE).exists():
            return False
        return bool(state.get("pid")) and _is_alive(int(state["pid"]), state.get("start_time"))

    def _refresh(self, kernel_id: str) -> dict[str, Any] | None:
        """Load a kernel's state, noticing (and persisting) that its process has ended."""
        with self._lock:
            state = self._load(kernel_id)
            if state is None or state.get("status") != ReportedStatus.RUNNING.value or kernel_id in self._restarting:
                return state
            if self._running(kernel_id, state):
                return state
            code = self._exit_code(kernel_id, state)
            state.update(status=ReportedStatus.TERMINATED.value, exit_code=code, finished_at=time.time())
            if not state.get("reason"):
                state["reason"] = exit_reason(state.get("session_type"), code) if code is not None else "process-lost"
            self._save(state)
            self.log.info("kernel %s ended (exit code %s, %s)", kernel_id, code, state["reason"])
            return state

    def _to_state(self, state: dict[str, Any], with_logs: bool = True) -> KernelState:
        kernel_id = state["kernel_id"]
        status = ReportedStatus(state["status"])
        final = status is ReportedStatus.TERMINATED
        return KernelState(
            kernel_id=kernel_id, session_id=state.get("session_id"), status=status,
            container_id=str(state["pid"]) if state.get("pid") else None,
            host=self.settings.kernel_host,
            service_ports=[ServicePort.from_wire(p) for p in state.get("service_ports", [])],
            exit_code=state.get("exit_code") if final else None,
            reason=state.get("reason") if final else None,
            last_logs=self.logs(kernel_id) if final and with_logs else None,
        )

    # -- Backend --------------------------------------------------------------------------------
    def adopt(self) -> list[KernelState]:
        adopted = []
        for kernel_id in self._kernel_ids():
            state = self._load(kernel_id)
            if state is None:
                continue
            if state.get("status") == ReportedStatus.PREPARING.value:
                # its process may have started before the pid was recorded: end whatever runs in it
                strays = _groups_working_in(self._dir(kernel_id))
                for pgid in strays:
                    _killpg(pgid, signal.SIGKILL)
                self.log.warning("kernel %s was interrupted while being created; discarding it%s", kernel_id,
                                 f" (killed process groups {sorted(strays)})" if strays else "")
                shutil.rmtree(self._dir(kernel_id), ignore_errors=True)
                continue
            for port in state.get("service_ports", []):
                self.ports.reserve(port.get("host_ports") or [])
            state = self._refresh(kernel_id) or state
            self.log.info("re-adopted kernel %s (%s, pid %s)", kernel_id, state["status"], state.get("pid"))
            adopted.append(self._to_state(state))
        return adopted

    def list_kernels(self) -> list[KernelState]:
        states = []
        for kernel_id in self._kernel_ids():
            state = self._refresh(kernel_id)
            if state is not None:
                states.append(self._to_state(state))
        return states

    def _used_gpus(self) -> set[str]:
        used: set[str] = set()
        for kernel_id in self._kernel_ids():
            state = self._load(kernel_id) or {}
            if state.get("status") in (ReportedStatus.PREPARING.value, ReportedStatus.RUNNING.value):
                used.update(state.get("cuda_devices", []))
        return used

    def _link_mounts(self, spec: KernelSpec, home: Path) -> None:
        """Mounts appear as symlinks in ``home/work`` (``/home/work/x`` -> ``x``, others by basename).

        The ``ro`` mode cannot be enforced by a symlink; it is recorded only.
        """
        for mount in spec.mounts:
            target = mount.container_path.rstrip("/")
            rel = target[len("/home/work/"):] if target.startswith("/home/work/") else os.path.basename(target)
            parts = [p for p in Path(rel).parts if p not in ("", ".", "/")]
            if not parts or ".." in parts:
                raise KernelError("invalid-mount", mount.container_path)
            link = home.joinpath(*parts)
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.exists() or link.is_symlink():
                raise KernelError("invalid-mount", f"{mount.container_path} is mounted twice")
            link.symlink_to(mount.host_path, target_is_directory=Path(mount.host_path).is_dir())

    def create(self, spec: KernelSpec, emit: EmitFn = _ignore) -> KernelState:
        kernel_id = spec.kernel_id
        kdir = self._dir(kernel_id)
        with self._lock:
            existing = self._refresh(kernel_id)
            if existing is not None:
                return self._to_state(existing)
            kdir.mkdir(mode=0o700, parents=True, exist_ok=True)
            state: dict[str, Any] = {
                "kernel_id": kernel_id, "session_id": spec.session_id, "session_type": spec.session_type,
                "status": ReportedStatus.PREPARING.value, "pid": None, "start_time": None, "service_ports": [],
                "exit_code": None, "reason": None, "batch_timeout": spec.batch_timeout, "created_at": time.time(),
                "cuda_devices": [],
                "mounts": [m.host_path for m in spec.mounts],  # where file access may follow a mount's symlink
            }
            self._save(state)
            emit(self._to_state(state))
            ports: list[int] = []
            try:
                gpus = choose_gpus(self.settings.gpus, self._used_gpus(), spec.cuda_devices)
                ports = self.ports.allocate(sum(len(p.container_ports) for p in spec.service_ports))
                service_ports, it = [], iter(ports)
                for port in spec.service_ports:
                    service_ports.append(ServicePort(port.name, port.protocol, list(port.container_ports),
                                                     [next(it) for _ in port.container_ports]))
                home = kdir / "home" / "work"
                home.mkdir(parents=True, exist_ok=True)
                self._link_mounts(spec, home)
                if spec.ssh_keypair is not None:  # id_container + .ssh/authorized_keys (sshkeys.py)
                    sshkeys.write_key_files(home, spec.ssh_keypair)
                env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
                env.update(spec.environment())
                env["HOME"] = str(home)
                for port in service_ports:
                    env[f"BACKENDAI_PORT_{_env_name(port.name)}"] = str(port.host_ports[0])
                if service_ports:
                    env["PORT"] = str(service_ports[0].host_ports[0])
                if gpus:
                    env["CUDA_VISIBLE_DEVICES"] = ",".join(g.uuid for g in gpus)
                bootstrap = ""
                if spec.bootstrap_script:
                    (kdir / "bootstrap.sh").write_text(spec.bootstrap_script)
                    bootstrap = str(kdir / "bootstrap.sh")
                default = LOCAL_IMAGES.get(spec.image, {}).get("command", IDLE_COMMAND)
                # services listen only where the app proxy reaches them, whatever the session's environment says
                env["BACKENDAI_HOST"] = self.settings.host_address
                launch = {"command": spec.startup_command or default, "env": env, "bootstrap": bootstrap}
                fd = os.open(kdir / LAUNCH_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # env may hold secrets
                with os.fdopen(fd, "w") as fh:
                    json.dump(launch, fh)
                proc = self._launch(kdir, launch)
            except (OSError, PortsExhausted, KernelError, ValueError) as exc:
                self.ports.release(ports)
                shutil.rmtree(kdir, ignore_errors=True)
                if isinstance(exc, KernelError):
                    raise
                reason = "port-exhausted" if isinstance(exc, PortsExhausted) else "failed-to-start"
                raise KernelError(reason, str(exc)) from exc
            self._procs[kernel_id] = proc
            state.update(status=ReportedStatus.RUNNING.value, pid=proc.pid, start_time=process_start_time(proc.pid),
                         started_at=time.time(), service_ports=[p.to_wire() for p in service_ports],
                         cuda_devices=[g.uuid for g in gpus])
            self._save(state)
        self.log.info("kernel %s started: pid %d, ports %s", kernel_id, proc.pid,
                      {p.name: p.host_ports for p in service_ports})
        running = self._to_state(state)
        emit(running)
        return running

    def _launch(self, kdir: Path, launch: dict[str, Any]) -> subprocess.Popen[bytes]:
        """Start the wrapper (and so the startup command) in a new session."""
        with open(kdir / LOG_FILE, "ab") as log_file:
            return subprocess.Popen(
                ["/bin/sh", "-c", WRAPPER, "bai-kernel", launch["command"], str(kdir / EXIT_FILE),
                 launch.get("bootstrap") or ""],
                cwd=kdir / "home" / "work", env=launch["env"], stdin=subprocess.DEVNULL, stdout=log_file,
                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
            )

    def restart(self, kernel_id: str) -> KernelState | None:
        kdir = self._dir(kernel_id)
        with self._lock:
            state = self._refresh(kernel_id)
            if state is None or kernel_id in self._stopping or state.get("status") == ReportedStatus.PREPARING.value:
                return None
            try:
                launch = json.loads((kdir / LAUNCH_FILE).read_text())
            except (OSError, ValueError) as exc:
                raise KernelError("restart-failed", f"no launch record: {exc}") from exc
            self._restarting.add(kernel_id)
        try:
            self.log.info("restarting kernel %s", kernel_id)
            self._kill_execs(kernel_id)
            if state.get("status") == ReportedStatus.RUNNING.value:
                self._terminate(kernel_id, int(state["pid"]), self.settings.stop_timeout)
            with self._lock:
                (kdir / EXIT_FILE).unlink(missing_ok=True)
                try:
                    proc = self._launch(kdir, launch)
                except OSError as exc:
                    raise KernelError("restart-failed", str(exc)) from exc
                self._procs[kernel_id] = proc
                state.update(status=ReportedStatus.RUNNING.value, pid=proc.pid, start_time=process_start_time(proc.pid),
                             started_at=time.time(), exit_code=None, reason=None, finished_at=None)
                self._save(state)
        finally:
            with self._lock:
                self._restarting.discard(kernel_id)
        self.log.info("kernel %s restarted: pid %d", kernel_id, proc.pid)
        return self._to_state(state)

    def _terminate(self, kernel_id: str, pgid: int, grace: float) -> bool:
        """SIGTERM the group, SIGKILL it after ``grace`` seconds; True if SIGKILL was needed."""
        _killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        proc = self._procs.get(kernel_id)
        while time.monotonic() < deadline:
            if proc is not None:
                proc.poll()
            if not _group_members(pgid):
                return False
            time.sleep(0.05)
        self.log.warning("kernel %s ignored SIGTERM for %.1fs: killing it", kernel_id, grace)
        _killpg(pgid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _group_members(pgid):
            time.sleep(0.05)
        if proc is not None:
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        return True

    def _end(self, kernel_id: str, reason: str, grace: float) -> dict[str, Any] | None:
        """Terminate a running kernel, record ``reason``; returns the refreshed state."""
        with self._lock:
            state = self._refresh(kernel_id)
            if state is None or state.get("status") != ReportedStatus.RUNNING.value or kernel_id in self._stopping:
                return state
            self._stopping.add(kernel_id)
            state["reason"] = reason
            self._save(state)
        try:
            killed = self._terminate(kernel_id, int(state["pid"]), grace)
            with self._lock:
                state = self._load(kernel_id) or state
                if killed and not (self._dir(kernel_id) / EXIT_FILE).exists():
                    proc = self._procs.get(kernel_id)
                    if proc is None or proc.returncode is None:
                        state["exit_code"] = 128 + signal.SIGKILL
                    self._save(state)
            return self._refresh(kernel_id)
        finally:
            with self._lock:
                self._stopping.discard(kernel_id)

    def stop(self, kernel_id: str, reason: str) -> KernelState | None:
        if self._load(kernel_id) is None:
            return None
        self.log.info("stopping kernel %s (%s)", kernel_id, reason)
        state = self._end(kernel_id, reason, self.settings.stop_timeout)
        if state is None:
            return None
        if state.get("status") == ReportedStatus.PREPARING.value:  # never started
            state.update(status=ReportedStatus.TERMINATED.value, reason=reason)
        final = self._to_state(state)
        self._kill_execs(kernel_id)  # the code runner (its own session) dies with the kernel
        if state.get("pid"):  # stray children that left the wrapper behind
            _killpg(int(state["pid"]), signal.SIGKILL)
        with self._lock:
            self._procs.pop(kernel_id, None)
            self._cpu_prev.pop(kernel_id, None)
            for port in state.get("service_ports", []):
                self.ports.release(port.get("host_ports") or [])
            shutil.rmtree(self._dir(kernel_id), ignore_errors=True)
        self.log.info("kernel %s stopped and cleaned up (exit code %s)", kernel_id, final.exit_code)
        return final

    def _running_state(self, kernel_id: str) -> dict[str, Any]:
        state = self._refresh(kernel_id)
        if state is None or state.get("status") != ReportedStatus.RUNNING.value:
            raise KernelError("kernel-not-running", f"kernel {kernel_id} is not running here")
        return state

    def open_pty(self, kernel_id: str, rows: int, cols: int, tag: str) -> StreamEndpoint:
        self._running_state(kernel_id)
        kdir = self._dir(kernel_id)
        try:
            env = dict(json.loads((kdir / LAUNCH_FILE).read_text()).get("env") or {})
        except (OSError, ValueError) as exc:
            raise KernelError("pty-failed", f"no launch record: {exc}") from exc
        env.update(TERM="xterm-256color", BAI_PTY_ID=tag)
        shell = next((s for s in ("/bin/bash", "/bin/sh") if os.access(s, os.X_OK)), "/bin/sh")
        try:
            pty = LocalPty([shell], kdir / "home" / "work", env, rows, cols)
        except OSError as exc:
            raise KernelError("pty-failed", str(exc)) from exc
        self.log.info("kernel %s: terminal %s opened (pid %d)", kernel_id, tag, pty.proc.pid)
        return pty

    def runtime(self, kernel_id: str) -> tuple[str, str] | None:
        """Every local kernel runs code with the agent's own Python, or the configured ``runtime_python``."""
        self._running_state(kernel_id)
        return "python", self.settings.runtime_python or sys.executable

    def exec_process(self, kernel_id: str, argv: list[str], env: dict[str, str]) -> ExecProcess:
        self._running_state(kernel_id)
        kdir = self._dir(kernel_id)
        try:
            full_env = dict(json.loads((kdir / LAUNCH_FILE).read_text()).get("env") or {})
        except (OSError, ValueError) as exc:
            raise KernelError("exec-failed", f"no launch record: {exc}") from exc
        full_env.update(env)
        try:  # its own session: the kernel's stop kills it with its group (see stop)
            proc = subprocess.Popen(argv, cwd=kdir / "home" / "work", env=full_env, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=None, start_new_session=True, close_fds=True)
        except OSError as exc:
            raise KernelError("exec-failed", str(exc)) from exc
        with self._lock:
            self._execs.setdefault(kernel_id, []).append(proc)

        def wait(timeout: float | None) -> int | None:
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return None
            return 128 - code if code < 0 else code

        self.log.info("kernel %s: process %s started (pid %d)", kernel_id, argv[0], proc.pid)
        return ExecProcess(proc.stdin, proc.stdout, lambda: _killpg(proc.pid, signal.SIGKILL), wait, pid=proc.pid)

    def _kill_execs(self, kernel_id: str) -> None:
        with self._lock:
            procs = self._execs.pop(kernel_id, [])
        for proc in procs:
            _killpg(proc.pid, signal.SIGKILL)
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass

    def service_address(self, kernel_id: str, container_port: int) -> tuple[str, int]:
        state = self._running_state(kernel_id)
        for port in state.get("service_ports", []):
            for inner, outer in zip(port.get("container_ports") or [], port.get("host_ports") or []):
                if int(inner) == int(container_port):
                    return local_address(self.settings.host_address), int(outer)
        raise KernelError("port-not-published", f"container port {container_port} of kernel {kernel_id} "
                                                "is not a service port")

    def logs(self, kernel_id: str) -> str | None:
        path = self._dir(kernel_id) / LOG_FILE
        try:
            with path.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 64 * 1024))
                return tail_text(fh.read())
        except OSError:
            return None

    def images(self) -> list[dict[str, Any]]:
        """The built-in process templates (``local/shell``, ``local/python-http``, ``local/inference``)."""
        return [{"name": name, "digest": "", "size": 0, "labels": dict(entry["labels"])}  # the agent's architecture
                for name, entry in LOCAL_IMAGES.items()]

    def stats(self) -> dict[str, dict[str, str]]:
        groups: dict[int, tuple[int, int]] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            fields = _proc_stat(int(entry.name))
            if not fields or len(fields) < 22 or fields[0] in ("Z", "X"):
                continue
            pgrp, ticks, rss = int(fields[2]), int(fields[11]) + int(fields[12]), int(fields[21])
            old = groups.get(pgrp, (0, 0))
            groups[pgrp] = (old[0] + ticks, old[1] + rss * _PAGE)
        now = time.monotonic()
        result = {}
        for kernel_id in self._kernel_ids():
            state = self._load(kernel_id) or {}
            if state.get("status") != ReportedStatus.RUNNING.value or not state.get("pid"):
                continue
            ticks, rss = groups.get(int(state["pid"]), (0, 0))
            util = 0.0
            previous = self._cpu_prev.get(kernel_id)
            if previous and now > previous[1] and ticks >= previous[0]:
                util = (ticks - previous[0]) / _CLK_TCK / (now - previous[1]) * 100
            self._cpu_prev[kernel_id] = (ticks, now)
            result[kernel_id] = {"cpu_util": f"{util:.1f}", "mem_used": str(rss)}
        return result

    def gpu_bindings(self) -> dict[str, list[str]]:
        result = {}
        for kernel_id in self._kernel_ids():
            state = self._load(kernel_id) or {}
            gpus = [g for g in state.get("cuda_devices") or [] if isinstance(g, str) and g]
            if state.get("status") == ReportedStatus.RUNNING.value and gpus:
                result[kernel_id] = gpus
        return result

    def check_timeouts(self) -> list[KernelState]:
        ended = []
        now = time.time()
        for kernel_id in self._kernel_ids():
            state = self._load(kernel_id) or {}
            timeout = state.get("batch_timeout")
            if (state.get("status") == ReportedStatus.RUNNING.value and timeout and state.get("started_at")
                    and now - float(state["started_at"]) > float(timeout) and kernel_id not in self._stopping):
                self.log.info("kernel %s ran past its batch timeout of %ss: killing it", kernel_id, timeout)
                final = self._end(kernel_id, "task-timeout", min(self.settings.stop_timeout, 2.0))
                if final is not None:
                    ended.append(self._to_state(final))
        return ended
