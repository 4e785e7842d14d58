#!/usr/bin/env python3
"""Benchmark: a large file through the storage proxy, against a plain copy on the same disk
and against the old in-manager path (the manager's own daphne carrying the bytes), in one run.

    .venv/bin/python bench/vfolders/run.py                 # 1 GiB, 16 MiB tus chunks
    .venv/bin/python bench/vfolders/run.py --size 256M --dir /data/scratch --keep
    .venv/bin/python bench/vfolders/run.py --baseline-rev none   # only the storage proxy

In one run, on one disk (``--dir``, default a temporary directory):

1. a random file of ``--size`` bytes; the baseline: a plain copy of it (read, write,
   fsync) and a plain read;
2. **storage proxy**: a fresh manager (daphne) with its own data directory (SQLite) and
   a storage proxy (``python -m storageproxy``) for ``local:volume1``; a user, a keypair,
   a folder; ``request-upload`` at the manager, then tus ``PATCH`` requests of ``--chunk``
   bytes (what the official client sends) to the URL it answered (the proxy's client API),
   over one keep-alive connection; then ``request-download`` and one streamed ``GET``
   written to disk (fsync), checked byte-identical;
3. **old in-manager path**: the same against the manager of ``--baseline-rev`` (default
   the last revision before the storage proxy), checked out into a temporary git worktree
   and run with this checkout's virtualenv: its daphne carries the bytes itself;
4. throughput of each, the ratios against the plain copy, the CPU seconds the manager
   (and the proxy) spent during each transfer (``utime + stime`` of ``/proc/<pid>/stat``),
   and their peak resident memory (``VmHWM``).

Not a test: it prints figures and exits 0 (non-zero only if a transfer failed).
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.signed_api import Api  # noqa: E402  (pure Python, no Django)

BASELINE_REV = "600b5fe"  # the last revision whose manager carried the file bytes itself

MiB = 2**20
SETUP = r"""
import json
from accounts import services as accounts
from vfolders import services as vfolders
vfolders.ensure_default_storage_host()
user = accounts.create_user(email="bench@example.com", password=None)
folder = vfolders.create_folder(user, name="bench")
print("BENCH" + json.dumps({"access_key": user.main_keypair.access_key,
                            "secret_key": user.main_keypair.secret_key,
                            "folder": folder.id.hex, "relative_path": folder.relative_path}))
"""


def parse_size(text: str) -> int:
    """``1G``, ``256M``, ``512MiB``, ``1048576`` -> bytes."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not match:
        raise SystemExit(f"not a size: {text!r}")
    return int(float(match.group(1)) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[match.group(2)])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def peak_rss(pid: int) -> tuple[int, int]:
    """(VmHWM, VmRSS) in bytes of a process."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values[key] = int(rest.split()[0]) * 1024
    return values.get("VmHWM", 0), values.get("VmRSS", 0)


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds a process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rate(size: int, seconds: float) -> str:
    return f"{size / MiB / seconds:8.1f} MiB/s"


def write_random(path: Path, size: int) -> None:
    block = 16 * MiB
    with open(path, "wb") as out:
        left = size
        while left:
            n = min(block, left)
            out.write(os.urandom(n))
            left -= n
        out.flush()
        os.fsync(out.fileno())


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(8 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def drop_page_cache_hint(path: Path) -> None:
    """Ask the kernel to forget a file's cached pages, so reads hit the disk alike."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    except (AttributeError, OSError):
        pass


def plain_copy(src: Path, dst: Path) -> float:
    drop_page_cache_hint(src)
    start = time.perf_counter()
    with open(src, "rb") as source, open(dst, "wb") as out:
        shutil.copyfileobj(source, out, 16 * MiB)
        out.flush()
        os.fsync(out.fileno())
    return time.perf_counter() - start


def plain_read(src: Path) -> float:
    drop_page_cache_hint(src)
    start = time.perf_counter()
    with open(src, "rb") as source:
        while source.read(16 * MiB):
            pass
    return time.perf_counter() - start


def upload(api: Api, folder: str, src: Path, size: int, chunk: int) -> float:
    ticket = api.call("POST", f"/folders/{folder}/request-upload", {"path": "bench.bin", "size": size})
    where = urlsplit(ticket["url"])
    target = where.path + "?token=" + ticket["token"]
    drop_page_cache_hint(src)
    conn = http.client.HTTPConnection(where.netloc, timeout=600)
    start = time.perf_counter()
    offset = 0
    with open(src, "rb") as source:
        while offset < size:
            data = source.read(chunk)
            conn.request("PATCH", target, body=data, headers={
                "Tus-Resumable": "1.0.0", "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream", "Content-Length": str(len(data))})
            resp = conn.getresponse()
            resp.read()
            if resp.status != 204:
                raise SystemExit(f"PATCH at {offset} answered {resp.status}")
            offset = int(resp.getheader("Upload-Offset"))
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def download(api: Api, folder: str, dst: Path, size: int) -> float:
    ticket = api.call("POST", f"/folders/{folder}/request-download", {"path": "bench.bin"})
    where = urlsplit(ticket["url"])
    target = where.path + "?token=" + ticket["token"]
    conn = http.client.HTTPConnection(where.netloc, timeout=600)
    start = time.perf_counter()
    conn.request("GET", target)
    resp = conn.getresponse()
    if resp.status != 200 or int(resp.getheader("Content-Length", "-1")) != size:
        raise SystemExit(f"download answered {resp.status} with Content-Length {resp.getheader('Content-Length')}")
    with open(dst, "wb") as out:
        while chunk := resp.read(4 * MiB):
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def wait_http(url: str, process: subprocess.Popen, what: str) -> None:
    where = urlsplit(url)
    for _ in range(300):
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}: " + process.stderr.read().decode()[-2000:])
        try:
            conn = http.client.HTTPConnection(where.netloc, timeout=1)
            conn.request("GET", where.path or "/")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what} did not start")


def stop(process: subprocess.Popen | None) -> None:
    if process is None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


class Deployment:
    """A manager (from ``tree``) with its own data directory, and for the new layout its storage proxy."""

    def __init__(self, label: str, tree: Path, work: Path, python: Path, with_proxy: bool):
        self.label, self.tree, self.python, self.with_proxy = label, tree, python, with_proxy
        self.data_dir = work / f"data-{label}"
        self.data_dir.mkdir()
        self.volume = self.data_dir / "vfroot" / "volume1"
        self.env = {**os.environ, "BACKEND_DATA_DIR": str(self.data_dir), "LOG_LEVEL": "WARNING",
                    "PYTHONPATH": str(tree)}
        for name in ("DATABASE_URL", "REDIS_URL", "VFOLDER_ROOT", "STORAGE_PROXY_MANAGER_URL",
                     "STORAGE_PROXY_CLIENT_URL", "STORAGE_PROXY_SECRET"):
            self.env.pop(name, None)  # a private SQLite database; folders under <data dir>/vfroot
        self.server = self.proxy = None

    def start(self) -> None:
        if self.with_proxy:
            manager_port, client_port = free_port(), free_port()
            secret = "bench-storage-proxy-secret-0123456789"
            self.env.update(STORAGE_PROXY_MANAGER_URL=f"http://127.0.0.1:{manager_port}",
                            STORAGE_PROXY_CLIENT_URL=f"http://127.0.0.1:{client_port}", STORAGE_PROXY_SECRET=secret)
            self.volume.mkdir(parents=True)
            self.proxy = subprocess.Popen(
                [str(self.python), "-m", "storageproxy", "--volume", f"volume1={self.volume}",
                 "--manager-port", str(manager_port), "--client-port", str(client_port), "--log-level", "WARNING"],
                cwd=self.tree, env={**self.env, "BAI_STORAGE_SECRET": secret}, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, start_new_session=True)
            wait_http(f"http://127.0.0.1:{manager_port}/health", self.proxy, "the storage proxy")
        subprocess.run([str(self.python), "manage.py", "migrate", "--noinput", "-v0"], cwd=self.tree, env=self.env,
                       check=True)
        setup = subprocess.run([str(self.python), "manage.py", "shell", "-c", SETUP], cwd=self.tree, env=self.env,
                               check=True, capture_output=True, text=True)
        self.info = json.loads(next(line[5:] for line in setup.stdout.splitlines() if line.startswith("BENCH")))
        port = free_port()
        self.server = subprocess.Popen([str(self.python), "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                                        "backendai.asgi:application"], cwd=self.tree, env=self.env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        self.url = f"http://127.0.0.1:{port}"
        wait_http(self.url + "/healthz", self.server, f"the manager ({self.label})")
        self.api = Api(self.url, self.info["access_key"], self.info["secret_key"])

    def stop(self) -> None:
        stop(self.server)
        stop(self.proxy)

    def measure(self, src: Path, work: Path, size: int, chunk: int, expected: str) -> dict:
        pids = {"manager": self.server.pid, **({"proxy": self.proxy.pid} if self.proxy else {})}
        result = {}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        result["upload_s"] = upload(self.api, self.info["folder"], src, size, chunk)
        after = {name: cpu_seconds(pid) for name, pid in pids.items()}
        result["upload_cpu"] = {name: after[name] - before[name] for name in pids}
        stored = self.volume / self.info["relative_path"] / "bench.bin"
        downloaded = work / f"downloaded-{self.label}.bin"
        before = after
        result["download_s"] = download(self.api, self.info["folder"], downloaded, size)
        after = {name: cpu_seconds(pid) for name, pid in pids.items()}
        result["download_cpu"] = {name: after[name] - before[name] for name in pids}
        result["peak"] = {name: peak_rss(pid)[0] for name, pid in pids.items()}
        result["ok"] = sha256(stored) == expected and sha256(downloaded) == expected
        downloaded.unlink()
        return result


def worktree(rev: str, work: Path) -> Path:
    path = work / f"tree-{rev}"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev], check=True,
                   capture_output=True)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1G", help="file size (k/m/g suffixes; default 1G)")
    parser.add_argument("--chunk", default="16M", help="tus PATCH size (default 16M, as the official client)")
    parser.add_argument("--dir", default=None, help="working directory on the disk to measure (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--baseline-rev", default=BASELINE_REV,
                        help=f"the revision whose manager carried the bytes itself (default {BASELINE_REV}; "
                             "'none' leaves the old path out)")
    args = parser.parse_args()
    size, chunk = parse_size(args.size), parse_size(args.chunk)

    work = Path(tempfile.mkdtemp(prefix="vfolders-bench-", dir=args.dir))
    python = ROOT / ".venv" / "bin" / "python"
    if not python.exists():
        python = Path(sys.executable)
    deployments = [Deployment("storage-proxy", ROOT, work, python, with_proxy=True)]
    old_tree = None
    try:
        if args.baseline_rev != "none":
            old_tree = worktree(args.baseline_rev, work)
            deployments.append(Deployment("in-manager", old_tree, work, python, with_proxy=False))
        print(f"working directory {work} (same disk for everything)")
        src = work / "source.bin"
        print(f"writing a {size / MiB:.0f} MiB random file ...")
        write_random(src, size)
        expected = sha256(src)
        copy_s = plain_copy(src, work / "copy.bin")
        read_s = plain_read(src)
        (work / "copy.bin").unlink()

        results = {}
        for deployment in deployments:
            deployment.start()
            try:
                results[deployment.label] = deployment.measure(src, work, size, chunk, expected)
            finally:
                deployment.stop()

        print()
        print(f"file size {size / MiB:.0f} MiB, tus chunk {chunk / MiB:.0f} MiB")
        print(f"{'plain copy (read+write)':34} {copy_s:8.2f} s {rate(size, copy_s)}")
        print(f"{'plain read':34} {read_s:8.2f} s {rate(size, read_s)}")
        for label, result in results.items():
            for op in ("upload", "download"):
                seconds = result[f"{op}_s"]
                cpu = ", ".join(f"{name} {value:5.2f} s" for name, value in result[f"{op}_cpu"].items())
                print(f"{op + ' via ' + label:34} {seconds:8.2f} s {rate(size, seconds)}  "
                      f"{copy_s / seconds:5.2f}x the plain copy   CPU: {cpu}")
            peaks = ", ".join(f"{name} {value / MiB:6.1f} MiB" for name, value in result["peak"].items())
            print(f"{'peak RSS (' + label + ')':34} {peaks}")
        ok = all(result["ok"] for result in results.values())
        print(f"{'byte-identical':34} {'yes' if ok else 'NO'}")
        return 0 if ok else 1
    finally:
        for deployment in deployments:
            deployment.stop()
        if old_tree is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_tree)],
                           capture_output=True)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
