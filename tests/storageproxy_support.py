"""Starting the real storage proxy (``python -m storageproxy``) as a subprocess for tests.

    handle = start_storage_proxy({"v1": tmp_path / "v1"}, secret)
    httpx.get(handle.manager_url + "/status", headers=handle.auth_headers)
    handle.kill(); handle.restart()   # same ports, same volumes
    httpx.get(handle.metrics_url)     # its Prometheus metrics (no authentication)
    handle.stop()

``volumes`` maps a volume name to a directory, or to ``(directory, backend)``.  Every wait is
bounded; the subprocess's log is kept in ``handle.log_path`` (shown when start-up fails).
``cleanup_mounts(root)`` unmounts what a ``loopquota`` volume mounted below ``root`` and detaches
its loop devices (call it in teardown, also after a failure)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
AUTH_HEADER = "X-BackendAI-Storage-Auth-Token"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class StorageProxyHandle:
    volumes: dict
    secret: str
    manager_port: int
    client_port: int
    extra_args: tuple = ()
    env: dict = field(default_factory=dict)
    log_path: Path | None = None
    process: subprocess.Popen | None = None
    start_timeout: float = 30.0
    metrics_port: int = field(default_factory=free_port)  # its /metrics listener (--metrics-listen)

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def manager_url(self) -> str:
        return f"http://127.0.0.1:{self.manager_port}"

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def auth_headers(self) -> dict:
        return {AUTH_HEADER: self.secret}

    def command(self) -> list[str]:
        args = [sys.executable, "-m", "storageproxy",
                "--manager-host", "127.0.0.1", "--manager-port", str(self.manager_port),
                "--client-host", "127.0.0.1", "--client-port", str(self.client_port),
                "--metrics-listen", f"127.0.0.1:{self.metrics_port}"]
        for name, spec in self.volumes.items():
            path, backend = (spec, "vfs") if isinstance(spec, (str, Path)) else spec
            args += ["--volume", f"{name}={path}:{backend}"]
        return args + list(self.extra_args)

    def start(self) -> StorageProxyHandle:
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="storageproxy-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        env = {**os.environ, "BAI_STORAGE_SECRET": self.secret, "PYTHONPATH": str(ROOT), **self.env}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), cwd=ROOT, env=env, stdout=log, stderr=log,
                                            start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the storage proxy exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.manager_url + "/health", timeout=1).status_code == 200 and \
                        _accepts(self.client_port):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"the storage proxy did not answer in {self.start_timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])
        except (OSError, TypeError):
            return ""

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; the exit status."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.returncode

    def kill(self) -> None:
        """SIGKILL (a crash): nothing is cleaned up by the proxy."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def restart(self) -> StorageProxyHandle:
        self.stop()
        return self.start()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def start_storage_proxy(volumes: dict, secret: str, *, manager_port: int | None = None,
                        client_port: int | None = None, extra_args=(), env: dict | None = None,
                        log_path: Path | None = None, start_timeout: float = 30.0) -> StorageProxyHandle:
    """Start the proxy on free 127.0.0.1 ports (or the ones given) and wait until it answers."""
    handle = StorageProxyHandle(dict(volumes), secret, manager_port or free_port(), client_port or free_port(),
                                tuple(extra_args), dict(env or {}), log_path, start_timeout=start_timeout)
    return handle.start()


def _mounts_below(root: Path) -> list[str]:
    root = os.path.realpath(root)
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == root or point.startswith(root.rstrip("/") + "/"):
                found.append(point)
    return found


def cleanup_mounts(root: Path, timeout: float = 20.0) -> None:
    """Unmount everything mounted below ``root`` (deepest first) and detach the loop devices
    whose image lies below it; waits (bounded) until the kernel has let them go."""
    for point in sorted(_mounts_below(root), key=len, reverse=True):
        done = subprocess.run(["umount", point], capture_output=True, timeout=60, check=False)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=60, check=False)
    deadline = time.monotonic() + timeout
    while True:
        devices = loop_devices_below(root)
        if not devices or time.monotonic() > deadline:
            return
        for device in devices:
            subprocess.run(["losetup", "-d", device], capture_output=True, timeout=60, check=False)
        time.sleep(0.1)


def loop_devices_below(root: Path) -> list[str]:
    """The loop devices whose backing file lies below ``root``."""
    listing = subprocess.run(["losetup", "-n", "-O", "NAME,BACK-FILE", "-l"], capture_output=True, text=True,
                             timeout=60, check=False)
    prefix = os.path.realpath(root).rstrip("/") + "/"
    found = []
    for line in listing.stdout.splitlines():
        device, _, backing = line.strip().partition(" ")
        if backing.strip().removesuffix(" (deleted)").startswith(prefix):
            found.append(device)
    return found


def mounts_below(root: Path) -> list[str]:
    return _mounts_below(root)
