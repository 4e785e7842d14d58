#!/usr/bin/env python3
"""Benchmark: a large file through the folder API against a plain copy on the same disk.

    .venv/bin/python bench/vfolders/run.py                 # 1 GiB, 16 MiB tus chunks
    .venv/bin/python bench/vfolders/run.py --size 256M --dir /data/scratch --keep

In one run, on one disk (``--dir``, default a temporary directory):

1. a fresh manager (daphne, the embedded server, ASGI) on a free port with its own
   data directory (SQLite), a user, a keypair and a folder on ``local:volume1``;
2. a random file of ``--size`` bytes;
3. the baseline: a plain copy of that file (read, write, fsync) and a plain read;
4. the upload through the API: ``request-upload`` then tus ``PATCH`` requests of
   ``--chunk`` bytes (what the official client sends), over one keep-alive connection;
5. the download through the API: ``request-download`` then one streamed ``GET``
   written to disk (fsync), checked byte-identical;
6. throughput of each, the ratios against the plain copy, and the manager process's
   peak resident memory (``VmHWM`` of ``/proc/<pid>/status``) before and after.

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

from backendai import signing  # noqa: E402  (pure Python, no Django)

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
                            "folder": folder.id.hex, "path": str(folder.path)}))
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


class Api:
    def __init__(self, url: str, access_key: str, secret_key: str):
        self.url = url.rstrip("/")
        self.host = urlsplit(self.url).netloc
        self.access_key, self.secret_key = access_key, secret_key

    def call(self, method: str, target: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else b""
        ctype = "application/json" if body is not None else "text/plain"
        headers = signing.signed_headers(self.access_key, self.secret_key, method, target, self.host, ctype)
        conn = http.client.HTTPConnection(self.host, timeout=120)
        try:
            conn.request(method, target, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        finally:
            conn.close()
        if resp.status >= 300:
            raise SystemExit(f"{method} {target} failed: {resp.status} {payload[:500]!r}")
        return json.loads(payload) if payload else {}


def upload(api: Api, folder: str, src: Path, size: int, chunk: int) -> float:
    ticket = api.call("POST", f"/folders/{folder}/request-upload", {"path": "bench.bin", "size": size})
    target = urlsplit(ticket["url"]).path + "?token=" + ticket["token"]
    drop_page_cache_hint(src)
    conn = http.client.HTTPConnection(api.host, timeout=600)
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
    target = urlsplit(ticket["url"]).path + "?token=" + ticket["token"]
    conn = http.client.HTTPConnection(api.host, timeout=600)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1G", help="file size (k/m/g suffixes; default 1G)")
    parser.add_argument("--chunk", default="16M", help="tus PATCH size (default 16M, as the official client)")
    parser.add_argument("--dir", default=None, help="working directory on the disk to measure (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--application", default="backendai.asgi:application",
                        help="the ASGI application daphne serves (default: the project's, with transfer "
                             "back-pressure)")
    args = parser.parse_args()
    size, chunk = parse_size(args.size), parse_size(args.chunk)

    work = Path(tempfile.mkdtemp(prefix="vfolders-bench-", dir=args.dir))
    data_dir = work / "data"
    data_dir.mkdir()
    python = ROOT / ".venv" / "bin" / "python"
    if not python.exists():
        python = Path(sys.executable)
    env = {**os.environ, "BACKEND_DATA_DIR": str(data_dir), "LOG_LEVEL": "WARNING"}
    for name in ("DATABASE_URL", "REDIS_URL", "VFOLDER_ROOT"):
        env.pop(name, None)  # a private SQLite database; folders under <data dir>/vfroot
    server = None
    try:
        print(f"working directory {work} (same disk for everything)")
        subprocess.run([str(python), "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
        setup = subprocess.run([str(python), "manage.py", "shell", "-c", SETUP], cwd=ROOT, env=env, check=True,
                               capture_output=True, text=True)
        info = json.loads(next(line[5:] for line in setup.stdout.splitlines() if line.startswith("BENCH")))

        port = free_port()
        server = subprocess.Popen([str(python), "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                                   args.application], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                conn = http.client.HTTPConnection(f"127.0.0.1:{port}", timeout=1)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit("the manager did not start: " + server.stderr.read().decode()[-2000:])
        idle_peak, idle_rss = peak_rss(server.pid)

        src = work / "source.bin"
        print(f"writing a {size / MiB:.0f} MiB random file ...")
        write_random(src, size)
        expected = sha256(src)

        copy_s = plain_copy(src, work / "copy.bin")
        read_s = plain_read(src)
        (work / "copy.bin").unlink()

        api = Api(url, info["access_key"], info["secret_key"])
        up_s = upload(api, info["folder"], src, size, chunk)
        stored = Path(info["path"]) / "bench.bin"
        after_upload_peak, _ = peak_rss(server.pid)
        down_s = download(api, info["folder"], work / "downloaded.bin", size)
        after_download_peak, rss = peak_rss(server.pid)

        ok = sha256(stored) == expected and sha256(work / "downloaded.bin") == expected
        print()
        print(f"file size                 {size / MiB:10.0f} MiB, tus chunk {chunk / MiB:.0f} MiB, "
              f"daphne serving {args.application}")
        print(f"plain copy (read+write)   {copy_s:8.2f} s {rate(size, copy_s)}")
        print(f"plain read                {read_s:8.2f} s {rate(size, read_s)}")
        print(f"upload through the API    {up_s:8.2f} s {rate(size, up_s)}   "
              f"{copy_s / up_s:5.2f}x the plain copy")
        print(f"download through the API  {down_s:8.2f} s {rate(size, down_s)}   "
              f"{copy_s / down_s:5.2f}x the plain copy")
        print(f"manager peak RSS (VmHWM)  idle {idle_peak / MiB:6.1f} MiB, after upload "
              f"{after_upload_peak / MiB:6.1f} MiB, after download {after_download_peak / MiB:6.1f} MiB "
              f"(RSS now {rss / MiB:.1f} MiB)")
        print(f"byte-identical            {'yes' if ok else 'NO'}")
        return 0 if ok else 1
    finally:
        if server is not None:
            try:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(server.pid, signal.SIGKILL)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
