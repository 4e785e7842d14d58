"""The Docker backend: one container per kernel, through the Docker SDK.

Containers are labelled (``ai.backend.kernel-id``, ``ai.backend.session-id``,
``ai.backend.agent-id``, ``ai.backend.owner=bai-agent``) and carry their service
port mapping in ``ai.backend.kernel-ports`` (JSON), so a restarted daemon
re-adopts them with their host ports.  The engine is the source of truth;
only kernels still being pulled/prepared live in memory.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import tarfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agents.protocol import (
    LOG_LIMIT, SSHD_PORT, SSHD_SERVICE, KernelSpec, KernelState, ReportedStatus, ServicePort, exit_reason,
    normalize_architecture, tail_text,
)
from ..ports import PortsExhausted
from . import sshkeys
from .base import (
    Backend, BackendSettings, EmitFn, ExecProcess, KernelError, StreamEndpoint, _ignore, choose_gpus, local_address,
)

try:  # the daemon can run the local backend without the Docker SDK
    import docker
    import docker.errors
    import docker.types
except ImportError:  # pragma: no cover - the SDK is a dependency
    docker = None  # type: ignore[assignment]

__all__ = ["DockerBackend", "LABEL_AGENT", "LABEL_KERNEL", "LABEL_OWNER", "LABEL_PORTS", "LABEL_SESSION", "OWNER"]

LABEL_KERNEL = "ai.backend.kernel-id"
LABEL_SESSION = "ai.backend.session-id"
LABEL_AGENT = "ai.backend.agent-id"
LABEL_OWNER = "ai.backend.owner"
LABEL_PORTS = "ai.backend.kernel-ports"
LABEL_SESSION_TYPE = "ai.backend.session-type"
LABEL_BATCH_TIMEOUT = "ai.backend.batch-timeout"
LABEL_GPUS = "ai.backend.cuda-devices"
LABEL_RUNTIME_TYPE = "ai.backend.runtime-type"
LABEL_RUNTIME_PATH = "ai.backend.runtime-path"
OWNER = "bai-agent"
WORKDIR = "/home/work"
_LIVE = ("running", "paused", "restarting")
_ENDED = ("exited", "dead", "removing")
_MIN_NANO_CPUS = 10_000_000  # Docker refuses less than 0.01 CPU
#: The terminal: bash when the image has it, else sh (``docker exec`` with a TTY).
PTY_COMMAND = ["/bin/sh", "-c", "if command -v bash >/dev/null 2>&1; then exec bash; fi; exec sh"]
#: Ends every process of one terminal (found by ``BAI_PTY_ID`` in its environment): HUP, then KILL.
#: ``docker exec`` has no kill, and closing the attached socket leaves the shell running.
PTY_KILL_SCRIPT = r"""for sig in HUP KILL; do
  for d in /proc/[0-9]*; do
    case "$(cat "$d/environ" 2>/dev/null)" in *"BAI_PTY_ID=$1"*) kill -"$sig" "${d#/proc/}" 2>/dev/null;; esac
  done
  [ "$sig" = KILL ] || sleep 1
done
"""


class DockerPty(StreamEndpoint):
    """A ``docker exec`` with a TTY: raw bytes both ways on the hijacked socket."""

    def __init__(self, api: Any, container_id: str, exec_id: str, sock: Any, tag: str):
        super().__init__()
        self.api = api
        self.container_id = container_id
        self.exec_id = exec_id
        self.tag = tag
        self._io = sock
        self.sock: socket.socket = getattr(sock, "_sock", sock)
        try:
            self.sock.settimeout(None)  # the client's read timeout would end an idle terminal's writes
        except OSError:
            pass
        self._lock = threading.Lock()

    def read(self, size: int) -> bytes:
        if not self._wait_readable(self.sock):
            return b""
        try:
            return self.sock.recv(size)
        except OSError:
            return b""

    def write(self, data: bytes) -> None:
        if self.closed:
            raise OSError("the terminal is closed")
        self.sock.sendall(data)

    def resize(self, rows: int, cols: int) -> None:
        if not self.closed:
            self.api.exec_resize(self.exec_id, height=rows, width=cols)

    def exit_code(self) -> int | None:
        deadline = time.monotonic() + 2.0
        while True:
            try:
                info = self.api.exec_inspect(self.exec_id)
            except docker.errors.APIError:
                return None
            if not info.get("Running") or time.monotonic() > deadline:
                return info.get("ExitCode") if not info.get("Running") else None
            time.sleep(0.1)

    def _running(self) -> bool:
        try:
            return bool(self.api.exec_inspect(self.exec_id).get("Running"))
        except docker.errors.APIError:
            return False

    def close(self) -> None:
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
        if self._running():
            try:
                killer = self.api.exec_create(self.container_id, ["/bin/sh", "-c", PTY_KILL_SCRIPT, "bai-pty-kill",
                                                                  self.tag], stdin=False, stdout=False, stderr=False)
                self.api.exec_start(killer["Id"], detach=True)
            except docker.errors.APIError:
                pass  # the container is gone, and the terminal with it
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        for closer in (self.sock.close, self._io.close):
            try:
                closer()
            except OSError:
                pass


class _SocketWriter:
    """The stdin of a ``docker exec``: writes go to the attached socket; ``close`` half-closes it."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def write(self, data: bytes) -> int:
        self.sock.sendall(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _demultiplex(sock: socket.socket, stdout_fd: int, log: Any, kernel_id: str) -> None:
    """Split Docker's attach stream (frames of 8-byte header: stream, 0, 0, 0, size big-endian) until it ends."""
    buffer = b""
    try:
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            buffer += chunk
            while len(buffer) >= 8:
                kind, size = buffer[0], int.from_bytes(buffer[4:8], "big")
                if len(buffer) < 8 + size:
                    break
                payload, buffer = buffer[8:8 + size], buffer[8 + size:]
                if kind == 1:
                    view = memoryview(payload)
                    while view:
                        view = view[os.write(stdout_fd, view):]
                elif payload:
                    log.info("kernel %s: exec stderr: %s", kernel_id, payload.decode("utf-8", "replace").rstrip())
    except OSError:
        pass  # the reader went away
    finally:
        os.close(stdout_fd)


def _parse_time(text: str | None) -> datetime | None:
    """Docker's RFC 3339 timestamps (nanoseconds, ``Z``); ``None`` for the zero time."""
    if not text or text.startswith("0001-"):
        return None
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?", text)
    if not match:
        return None
    frac = (match[2] or "")[:7]
    zone = match[3] or "Z"
    return datetime.fromisoformat(match[1] + frac + ("+00:00" if zone == "Z" else zone))


def _ports_of(labels: dict[str, str]) -> list[ServicePort]:
    try:
        return [ServicePort.from_wire(p) for p in json.loads(labels.get(LABEL_PORTS) or "[]")]
    except (ValueError, TypeError):
        return []


def _port_conflict(exc: Exception) -> bool:
    text = str(exc).lower()
    return "port is already allocated" in text or "address already in use" in text


class DockerBackend(Backend):
    """Kernels as Docker containers."""

    name = "docker"

    def __init__(self, settings: BackendSettings, client: Any = None):
        super().__init__(settings)
        if client is None:
            if docker is None:
                raise RuntimeError("the Docker SDK (docker) is not installed")
            client = docker.from_env(timeout=120)
        self.client = client
        self._pending: dict[str, KernelState] = {}
        self._stopping: dict[str, str] = {}
        self._timed_out: set[str] = set()
        self._final_logs: dict[str, str | None] = {}
        self._cpu_prev: dict[str, tuple[int, int]] = {}
        self._ncpu: int | None = None
        self._one_shot = True  # one stats sample per call; CPU % is computed against the previous call
        self._use_init = True  # tini as PID 1 forwards SIGTERM to the kernel's command
        self._lock = threading.RLock()

    # -- helpers --------------------------------------------------------------------------------
    def _filters(self, kernel_id: str | None = None) -> dict[str, list[str]]:
        labels = [f"{LABEL_OWNER}={OWNER}", f"{LABEL_AGENT}={self.settings.agent_id}"]
        if kernel_id:
            labels.append(f"{LABEL_KERNEL}={kernel_id}")
        return {"label": labels}

    def _containers(self, kernel_id: str | None = None) -> list[Any]:
        return self.client.containers.list(all=True, filters=self._filters(kernel_id), ignore_removed=True)

    def _reason(self, kernel_id: str, labels: dict[str, str], state: dict[str, Any]) -> str:
        with self._lock:
            if kernel_id in self._stopping:
                return self._stopping[kernel_id]
            if kernel_id in self._timed_out:
                return "task-timeout"
        code = state.get("ExitCode")
        timeout = labels.get(LABEL_BATCH_TIMEOUT)
        started, finished = _parse_time(state.get("StartedAt")), _parse_time(state.get("FinishedAt"))
        if timeout and code == 137 and started and finished and \
                (finished - started).total_seconds() >= float(timeout) - 0.5:
            return "task-timeout"  # recognisable after a daemon restart too
        if state.get("OOMKilled"):
            return "oom-killed"
        return exit_reason(labels.get(LABEL_SESSION_TYPE), code)

    def _logs_of(self, container: Any) -> str | None:
        try:
            return tail_text(container.logs(stdout=True, stderr=True, tail=5000), LOG_LIMIT)
        except docker.errors.APIError as exc:
            self.log.debug("no logs for container %s: %s", container.short_id, exc)
            return None

    def _state(self, container: Any, with_logs: bool = True) -> KernelState:
        labels = container.labels or {}
        kernel_id = labels.get(LABEL_KERNEL, "")
        state = container.attrs.get("State") or {}
        raw = state.get("Status", "")
        exit_code = reason = last_logs = None
        if raw in _LIVE:
            status = ReportedStatus.RUNNING
        elif raw == "created":
            status = ReportedStatus.PREPARING
        else:
            status = ReportedStatus.TERMINATED
            exit_code = state.get("ExitCode")
            reason = self._reason(kernel_id, labels, state)
            if with_logs:
                with self._lock:
                    cached = container.id in self._final_logs
                    last_logs = self._final_logs.get(container.id)
                if not cached:
                    last_logs = self._logs_of(container)
                    with self._lock:
                        self._final_logs[container.id] = last_logs
        return KernelState(kernel_id=kernel_id, session_id=labels.get(LABEL_SESSION) or None, status=status,
                           container_id=container.id, host=self.settings.kernel_host,
                           service_ports=_ports_of(labels), exit_code=exit_code, reason=reason, last_logs=last_logs)

    def _host_cpus(self) -> int:
        if self._ncpu is None:
            try:
                self._ncpu = int(self.client.info().get("NCPU") or 0) or None
            except docker.errors.APIError:
                self._ncpu = None
        return self._ncpu or 0

    # -- Backend --------------------------------------------------------------------------------
    def adopt(self) -> list[KernelState]:
        adopted = []
        for container in self._containers():
            labels = container.labels or {}
            kernel_id = labels.get(LABEL_KERNEL, "?")
            if container.status == "created":  # the previous daemon died while creating it
                self.log.warning("kernel %s: container %s was never started; removing it", kernel_id,
                                 container.short_id)
                self._remove(container)
                continue
            for port in _ports_of(labels):
                self.ports.reserve(port.host_ports)
            state = self._state(container)
            self.log.info("re-adopted kernel %s: container %s %s", kernel_id, container.short_id, state.status.value)
            adopted.append(state)
        return adopted

    def list_kernels(self) -> list[KernelState]:
        states = {}
        for container in self._containers():
            state = self._state(container)
            states[state.kernel_id] = state
        with self._lock:
            states.update({k: v for k, v in self._pending.items()})
        return list(states.values())

    def _set_pending(self, kernel_id: str, state: KernelState, emit: EmitFn) -> None:
        with self._lock:
            self._pending[kernel_id] = state
        emit(state)

    def create(self, spec: KernelSpec, emit: EmitFn = _ignore) -> KernelState:
        kernel_id = spec.kernel_id
        with self._lock:
            if kernel_id in self._pending:
                return self._pending[kernel_id]
            existing = self._containers(kernel_id)
            if existing:
                return self._state(existing[0])
            self._pending[kernel_id] = KernelState(kernel_id, spec.session_id, ReportedStatus.PREPARING,
                                                   host=self.settings.kernel_host)
        try:
            self._ensure_image(spec, emit)
            self._set_pending(kernel_id, KernelState(kernel_id, spec.session_id, ReportedStatus.PREPARING,
                                                     host=self.settings.kernel_host), emit)
            container = self._start_container(spec)
            state = self._state(container)
        except docker.errors.DockerException as exc:
            raise KernelError("failed-to-start", str(exc)) from exc
        finally:
            with self._lock:
                self._pending.pop(kernel_id, None)
        self.log.info("kernel %s started: container %s, ports %s", kernel_id, container.short_id,
                      {p.name: p.host_ports for p in state.service_ports})
        emit(state)
        return state

    def _ensure_image(self, spec: KernelSpec, emit: EmitFn) -> None:
        try:
            self.client.images.get(spec.image)
            return
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as exc:
            raise KernelError("image-inspect-failed", str(exc)) from exc
        self._set_pending(spec.kernel_id, KernelState(spec.kernel_id, spec.session_id, ReportedStatus.PULLING,
                                                      host=self.settings.kernel_host), emit)
        auth = None
        if spec.registry and spec.registry.username:
            auth = {"username": spec.registry.username, "password": spec.registry.password or ""}
        self.log.info("kernel %s: pulling %s", spec.kernel_id, spec.image)
        try:
            self.client.images.pull(spec.image, auth_config=auth)
        except docker.errors.APIError as exc:
            raise KernelError("image-pull-failed", str(exc)) from exc

    def _used_gpus(self) -> set[str]:
        used: set[str] = set()
        for container in self._containers():
            if container.status in _LIVE or container.status == "created":
                used.update(filter(None, (container.labels.get(LABEL_GPUS) or "").split(",")))
        return used

    def _container_args(self, spec: KernelSpec, service_ports: list[ServicePort], gpus: list[Any]) -> dict[str, Any]:
        labels = {
            LABEL_KERNEL: spec.kernel_id, LABEL_SESSION: spec.session_id or "", LABEL_AGENT: self.settings.agent_id,
            LABEL_OWNER: OWNER, LABEL_SESSION_TYPE: spec.session_type,
            LABEL_PORTS: json.dumps([p.to_wire() for p in service_ports]),
        }
        if spec.batch_timeout:
            labels[LABEL_BATCH_TIMEOUT] = str(spec.batch_timeout)
        if gpus:
            labels[LABEL_GPUS] = ",".join(g.uuid for g in gpus)
        env = spec.environment()
        command = None
        if spec.startup_command:
            if spec.bootstrap_script:
                env["BACKENDAI_BOOTSTRAP_SCRIPT"] = spec.bootstrap_script
                command = ["/bin/sh", "-c", '/bin/sh -c "$BACKENDAI_BOOTSTRAP_SCRIPT"; ' + spec.startup_command]
            else:
                command = ["/bin/sh", "-c", spec.startup_command]
        args: dict[str, Any] = {
            "image": spec.image, "command": command, "environment": env, "working_dir": WORKDIR,
            "hostname": spec.cluster_hostname or None, "labels": labels, "detach": True, "init": self._use_init,
            "name": f"bai-{self.settings.agent_id}-{spec.kernel_id}",
            "ports": {f"{c}/tcp": (self.settings.host_address, h)
                      for p in service_ports for c, h in zip(p.container_ports, p.host_ports)},
        }
        cpu = spec.cpu
        if cpu > 0 and not cpu.is_infinite():
            nano = max(int(cpu * 1_000_000_000), _MIN_NANO_CPUS)
            ncpu = self._host_cpus()
            if ncpu and nano > ncpu * 1_000_000_000:
                self.log.warning("kernel %s asks for %s CPUs, the engine has %d", spec.kernel_id, cpu, ncpu)
                nano = ncpu * 1_000_000_000
            args["nano_cpus"] = nano
        if spec.mem > 0:
            args["mem_limit"] = spec.mem
        if spec.shmem > 0:
            args["shm_size"] = spec.shmem
        if gpus:
            args["device_requests"] = [docker.types.DeviceRequest(driver="nvidia", device_ids=[g.uuid for g in gpus],
                                                                  capabilities=[["gpu"]])]
        if spec.mounts:
            args["mounts"] = [docker.types.Mount(target=m.container_path, source=m.host_path, type="bind",
                                                 read_only=m.read_only) for m in spec.mounts]
        return args

    def _start_container(self, spec: KernelSpec) -> Any:
        gpus = choose_gpus(self.settings.gpus, self._used_gpus(), spec.cuda_devices)
        attempts = 3
        for attempt in range(attempts):
            try:
                ports = self.ports.allocate(sum(len(p.container_ports) for p in spec.service_ports))
            except PortsExhausted as exc:
                raise KernelError("port-exhausted", str(exc)) from exc
            it = iter(ports)
            service_ports = [ServicePort(p.name, p.protocol, list(p.container_ports),
                                         [next(it) for _ in p.container_ports]) for p in spec.service_ports]
            container = None
            try:
                args = self._container_args(spec, service_ports, gpus)
                ssh_mounts = self._ssh_mounts(spec)  # the session's SSH key files (sshkeys.py)
                if ssh_mounts:
                    args["mounts"] = [*(args.get("mounts") or []), *ssh_mounts]
                container = self.client.containers.create(**args)
                self._install_ssh_keys(container, spec, mounted=bool(ssh_mounts))
                container.start()
                container.reload()
                if spec.sshd:
                    self._start_sshd(container, spec.kernel_id)
                return container
            except docker.errors.APIError as exc:
                self.ports.release(ports)
                if container is None and exc.status_code == 409:  # created meanwhile (same name)
                    existing = self._containers(spec.kernel_id)
                    if existing:
                        return existing[0]
                if container is not None:
                    self._remove(container)
                self._remove_ssh_dir(spec.kernel_id)
                if self._use_init and "docker-init" in str(exc) and attempt < attempts - 1:
                    self.log.warning("the engine has no docker-init; kernels run without an init process")
                    self._use_init = False
                    continue
                if _port_conflict(exc) and attempt < attempts - 1:
                    self.log.info("kernel %s: host port taken meanwhile, retrying (%s)", spec.kernel_id, exc)
                    continue
                if isinstance(exc, docker.errors.ImageNotFound):
                    raise KernelError("image-not-found", str(exc)) from exc
                raise KernelError("failed-to-start", str(exc.explanation or exc)) from exc
        raise KernelError("failed-to-start", "no usable host ports")  # pragma: no cover

    # -- SSH (sshkeys.py) ------------------------------------------------------------------------
    def _ssh_dir(self, kernel_id: str) -> Path:
        return (Path(self.settings.scratch_root) / "ssh" / kernel_id).resolve()

    def _ssh_mounts(self, spec: KernelSpec) -> list[Any]:
        """Bind mounts of the session's key files, written on this host under the scratch root, so that
        a commit of the container never holds the private key (``docker commit`` leaves mounts out).
        Only when this daemon runs as root (it must give the files to the image's ``work`` user);
        otherwise :meth:`_install_ssh_keys` copies them into the container."""
        if spec.ssh_keypair is None or os.geteuid() != 0:
            return []
        root = self._ssh_dir(spec.kernel_id)
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            sshkeys.write_key_files(root, spec.ssh_keypair)
        except OSError as exc:
            self.log.warning("kernel %s: cannot write the SSH key files under %s (%s); copying them into the "
                             "container instead", spec.kernel_id, root, exc)
            return []
        return [docker.types.Mount(target=f"{WORKDIR}/{sshkeys.SSH_DIR}", source=str(root / sshkeys.SSH_DIR),
                                   type="bind"),
                docker.types.Mount(target=f"{WORKDIR}/{sshkeys.KEY_FILE}", source=str(root / sshkeys.KEY_FILE),
                                   type="bind")]

    def _work_ids(self, container: Any, kernel_id: str) -> tuple[int, int]:
        """The ``work`` user's ids in the container's image (root when it has none)."""
        try:
            stream, _ = container.get_archive("/etc/passwd")
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                member = tar.next()
                handle = tar.extractfile(member) if member is not None else None
                passwd = handle.read().decode("utf-8", "replace") if handle is not None else ""
            return sshkeys.work_ids(passwd) or (0, 0)
        except (docker.errors.APIError, tarfile.TarError) as exc:
            self.log.info("kernel %s: no /etc/passwd in the image (%s); SSH key files owned by root", kernel_id, exc)
            return 0, 0

    def _install_ssh_keys(self, container: Any, spec: KernelSpec, mounted: bool) -> None:
        """Give the key files to the image's ``work`` user: the mounted ones on this host, else a copy
        into the created container's /home/work.  A failure is logged, not fatal: the kernel runs,
        without SSH."""
        if spec.ssh_keypair is None:
            return
        uid, gid = self._work_ids(container, spec.kernel_id)
        if mounted:
            try:
                sshkeys.chown_key_files(self._ssh_dir(spec.kernel_id), uid, gid)
            except OSError as exc:
                self.log.warning("kernel %s: cannot give the SSH key files to %d:%d: %s", spec.kernel_id, uid, gid,
                                 exc)
                return
        else:
            try:
                container.put_archive("/", sshkeys.key_tar(spec.ssh_keypair, WORKDIR, uid, gid))
            except docker.errors.APIError as exc:
                self.log.warning("kernel %s: could not write the SSH key files: %s", spec.kernel_id, exc)
                return
        self.log.info("kernel %s: SSH key files %s (%s/%s, owner %d:%d)", spec.kernel_id,
                      "mounted" if mounted else "copied in", WORKDIR, sshkeys.KEY_FILE, uid, gid)

    def _remove_ssh_dir(self, kernel_id: str) -> None:
        shutil.rmtree(self._ssh_dir(kernel_id), ignore_errors=True)

    def _start_sshd(self, container: Any, kernel_id: str) -> None:
        """Start the image's SSH server on :data:`SSHD_PORT` (it daemonizes); a failure is logged."""
        try:
            result = container.exec_run(["/bin/sh", "-c", sshkeys.SSHD_SCRIPT, "bai-sshd", str(SSHD_PORT)],
                                        stdout=True, stderr=True, user="root")
        except docker.errors.APIError as exc:
            self.log.warning("kernel %s: could not start sshd: %s", kernel_id, exc)
            return
        output = (result.output or b"").decode("utf-8", "replace").strip()
        if result.exit_code:
            self.log.warning("kernel %s: sshd did not start (exit %s): %s", kernel_id, result.exit_code, output)
        else:
            self.log.info("kernel %s: sshd started on container port %d", kernel_id, SSHD_PORT)

    def _remove(self, container: Any) -> None:
        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            self.log.warning("could not remove container %s: %s", container.short_id, exc)

    def stop(self, kernel_id: str, reason: str) -> KernelState | None:
        containers = self._containers(kernel_id)
        if not containers:
            self._remove_ssh_dir(kernel_id)  # its container went away on its own
            return None
        final = None
        for container in containers:
            if container.status in _LIVE:
                self.log.info("stopping kernel %s: container %s (%s)", kernel_id, container.short_id, reason)
                with self._lock:
                    self._stopping[kernel_id] = reason
                try:
                    container.stop(timeout=max(int(round(self.settings.stop_timeout)), 1))
                    container.reload()
                    if container.status in _LIVE:
                        container.kill()
                        container.wait(timeout=10)
                        container.reload()
                except docker.errors.NotFound:
                    self.log.info("kernel %s: container %s vanished while stopping", kernel_id, container.short_id)
                    continue
                except Exception as exc:  # noqa: BLE001 - API errors and read timeouts alike
                    self.log.warning("kernel %s: stopping container %s failed: %s", kernel_id, container.short_id,
                                     exc)
            state = self._state(container)
            if state.status is not ReportedStatus.TERMINATED:  # it was never started
                state.status, state.reason = ReportedStatus.TERMINATED, reason
            final = state
            self._remove(container)
            self._remove_ssh_dir(kernel_id)
            for port in state.service_ports:
                self.ports.release(port.host_ports)
            with self._lock:
                self._final_logs.pop(container.id, None)
                self._cpu_prev.pop(container.id, None)
        with self._lock:
            self._stopping.pop(kernel_id, None)
            self._timed_out.discard(kernel_id)
        if final is not None:
            self.log.info("kernel %s stopped and removed (exit code %s)", kernel_id, final.exit_code)
        return final

    def restart(self, kernel_id: str) -> KernelState | None:
        containers = self._containers(kernel_id)
        if not containers:
            return None
        container = containers[0]
        self.log.info("restarting kernel %s: container %s", kernel_id, container.short_id)
        with self._lock:
            self._final_logs.pop(container.id, None)
            self._timed_out.discard(kernel_id)
        try:
            container.restart(timeout=max(int(round(self.settings.stop_timeout)), 1))
            container.reload()
        except docker.errors.APIError as exc:
            raise KernelError("restart-failed", str(exc.explanation or exc)) from exc
        if any(p.name == SSHD_SERVICE and SSHD_PORT in p.container_ports for p in _ports_of(container.labels or {})):
            self._start_sshd(container, kernel_id)  # the restart ended it
        return self._state(container)

    def _running_container(self, kernel_id: str) -> Any:
        for container in self._containers(kernel_id):
            if container.status == "running":
                return container
        raise KernelError("kernel-not-running", f"kernel {kernel_id} has no running container here")

    def open_pty(self, kernel_id: str, rows: int, cols: int, tag: str) -> StreamEndpoint:
        container = self._running_container(kernel_id)
        api = self.client.api
        try:
            created = api.exec_create(container.id, PTY_COMMAND, stdin=True, stdout=True, stderr=True, tty=True,
                                      environment={"TERM": "xterm-256color", "BAI_PTY_ID": tag})
            sock = api.exec_start(created["Id"], tty=True, socket=True)
        except docker.errors.APIError as exc:
            raise KernelError("pty-failed", str(exc.explanation or exc)) from exc
        pty = DockerPty(api, container.id, created["Id"], sock, tag)
        try:
            pty.resize(rows, cols)
        except docker.errors.APIError as exc:  # the shell may already have exited
            self.log.debug("kernel %s: first resize failed: %s", kernel_id, exc)
        self.log.info("kernel %s: terminal %s opened (exec %s)", kernel_id, tag, created["Id"][:12])
        return pty

    def runtime(self, kernel_id: str) -> tuple[str, str] | None:
        """From the image's labels (a container carries its image's labels)."""
        labels = self._running_container(kernel_id).labels or {}
        kind, path = labels.get(LABEL_RUNTIME_TYPE, ""), labels.get(LABEL_RUNTIME_PATH, "")
        return (kind, path) if kind and path else None

    def exec_process(self, kernel_id: str, argv: list[str], env: dict[str, str]) -> ExecProcess:
        """A ``docker exec`` without a TTY: its multiplexed output is split, stdout into a pipe, stderr into the log."""
        container = self._running_container(kernel_id)
        api = self.client.api
        try:
            created = api.exec_create(container.id, argv, stdin=True, stdout=True, stderr=True, tty=False,
                                      environment=env, workdir=WORKDIR)
            sock = api.exec_start(created["Id"], tty=False, socket=True)
        except docker.errors.APIError as exc:
            raise KernelError("exec-failed", str(exc.explanation or exc)) from exc
        raw: socket.socket = getattr(sock, "_sock", sock)
        try:
            raw.settimeout(None)
        except OSError:
            pass
        read_end, write_end = os.pipe()
        exec_id = created["Id"]
        threading.Thread(target=_demultiplex, args=(raw, write_end, self.log, kernel_id), daemon=True,
                         name=f"exec-{exec_id[:8]}").start()

        def kill() -> None:
            try:
                raw.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            for closer in (raw.close, sock.close):
                try:
                    closer()
                except OSError:
                    pass

        def wait(timeout: float | None) -> int | None:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                try:
                    info = api.exec_inspect(exec_id)
                except docker.errors.APIError:
                    return None
                if not info.get("Running"):
                    return info.get("ExitCode")
                if deadline is not None and time.monotonic() > deadline:
                    return None
                time.sleep(0.1)

        self.log.info("kernel %s: process %s started (exec %s)", kernel_id, argv[0], exec_id[:12])
        return ExecProcess(_SocketWriter(raw), os.fdopen(read_end, "rb"), kill, wait)

    def service_address(self, kernel_id: str, container_port: int) -> tuple[str, int]:
        container = self._running_container(kernel_id)
        for port in _ports_of(container.labels or {}):
            for inner, outer in zip(port.container_ports, port.host_ports):
                if inner == container_port:
                    return local_address(self.settings.host_address), outer
        raise KernelError("port-not-published", f"container port {container_port} of kernel {kernel_id} "
                                                "is not a published service port")

    def logs(self, kernel_id: str) -> str | None:
        containers = self._containers(kernel_id)
        return self._logs_of(containers[0]) if containers else None

    def stats(self) -> dict[str, dict[str, str]]:
        result = {}
        for container in self._containers():
            if container.status != "running":
                continue
            kernel_id = container.labels.get(LABEL_KERNEL, "")
            try:
                if self._one_shot:
                    try:
                        sample = container.stats(stream=False, one_shot=True)
                    except docker.errors.InvalidVersion:  # engines before API 1.41
                        self._one_shot = False
                if not self._one_shot:
                    sample = container.stats(stream=False)
            except docker.errors.APIError as exc:
                self.log.debug("kernel %s: no stats: %s", kernel_id, exc)
                continue
            cpu = sample.get("cpu_stats") or {}
            total = int((cpu.get("cpu_usage") or {}).get("total_usage") or 0)
            system = int(cpu.get("system_cpu_usage") or 0)
            online = int(cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or 1)
            util = 0.0
            with self._lock:
                previous = self._cpu_prev.get(container.id)
                self._cpu_prev[container.id] = (total, system)
            if previous and system > previous[1] and total >= previous[0]:
                util = (total - previous[0]) / (system - previous[1]) * online * 100
            memory = sample.get("memory_stats") or {}
            extra = memory.get("stats") or {}
            cache = extra.get("total_inactive_file", extra.get("inactive_file", extra.get("cache", 0)))
            used = max(int(memory.get("usage") or 0) - int(cache or 0), 0)
            result[kernel_id] = {"cpu_util": f"{util:.1f}", "mem_used": str(used)}
        return result

    def gpu_bindings(self) -> dict[str, list[str]]:
        result = {}
        for container in self._containers():
            labels = container.labels or {}
            gpus = [g for g in (labels.get(LABEL_GPUS) or "").split(",") if g]
            if container.status == "running" and gpus:
                result[labels.get(LABEL_KERNEL, "")] = gpus
        return result

    def images(self) -> list[dict[str, Any]]:
        result = []
        try:
            images = self.client.images.list()
        except docker.errors.APIError as exc:
            self.log.warning("cannot list images: %s", exc)
            return []
        for image in images:
            attrs = image.attrs
            labels = (attrs.get("Config") or {}).get("Labels") or {}
            for tag in image.tags:
                result.append({"name": tag, "digest": image.id, "size": int(attrs.get("Size") or 0),
                               "architecture": normalize_architecture(attrs.get("Architecture")),
                               "labels": dict(labels)})
        return result

    def check_timeouts(self) -> list[KernelState]:
        ended = []
        now = datetime.now(timezone.utc)
        for container in self._containers():
            timeout = (container.labels or {}).get(LABEL_BATCH_TIMEOUT)
            if container.status != "running" or not timeout:
                continue
            started = _parse_time((container.attrs.get("State") or {}).get("StartedAt"))
            if started is None or (now - started).total_seconds() <= float(timeout):
                continue
            kernel_id = container.labels.get(LABEL_KERNEL, "")
            self.log.info("kernel %s ran past its batch timeout of %ss: killing it", kernel_id, timeout)
            with self._lock:
                self._timed_out.add(kernel_id)
            try:
                container.kill()
                container.wait(timeout=10)
                container.reload()
            except Exception as exc:  # noqa: BLE001 - API errors and read timeouts alike
                self.log.warning("kernel %s: kill failed: %s", kernel_id, exc)
                continue
            ended.append(self._state(container))
        return ended

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - best effort
            pass
