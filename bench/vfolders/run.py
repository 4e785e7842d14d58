#!/usr/bin/env python3
"""Benchmark: files through the storage proxy, side by side in one run with a plain copy of the
same files on the same disk and with nginx serving the same stored files (sendfile).

    .venv/bin/python bench/vfolders/run.py                      # 1 GiB, 16 MiB tus chunks, 3 rounds
    .venv/bin/python bench/vfolders/run.py --short              # 32 MiB, 1 round: seconds (CI)
    .venv/bin/python bench/vfolders/run.py --size 256M --concurrency 10   # 10 transfers at once
    .venv/bin/python bench/vfolders/run.py --dir /mnt/disk-to-measure --keep --port-base 41000

Everything happens in one working directory (``--dir``, default a temporary directory), so on
one disk.  It starts a storage proxy (``python -m storageproxy``, one volume in the working
directory, metrics off) and nginx (``worker_processes 1``, ``sendfile on``, its root the same
volume) on private ports, writes ``--concurrency`` random files of ``--size`` bytes, then per
round, each step starting with the file it reads evicted from the page cache
(``POSIX_FADV_DONTNEED``) and ending with what it wrote fsynced:

1. **plain copy**: each source file read and written to a new file beside it (16 MiB
   ``read``/``write``, one ``fsync`` at the end, what ``cp`` then ``sync`` do): the disk's own cost
   for moving the bytes once, the baseline of every ratio;
2. **upload**: each source file through the proxy's client API as tus ``PATCH`` requests of
   ``--chunk`` bytes (the official client's size) on one keep-alive connection; the bench's client
   sends each body with ``sendfile`` so its own cost stays small; the token comes from the proxy's
   manager API (what the manager does in ``request-upload``);
3. **download via the proxy**: each stored file with one ``GET /download``, written to a new
   file (4 MiB ``recv_into``/``write``, one ``fsync``; ``--discard``: read and dropped, which leaves
   the servers' send paths alone);
4. **download via nginx**: the same stored file, the same client.

The order of the steps flips every other round.  Each step starts after the disk has been idle for
half a second (``sync``, then ``/sys/dev/block/*/stat`` unchanged: the earlier step's write-back and,
on a filesystem mounted with ``discard``, the TRIM of the files it deleted), and each measured download
comes after an unmeasured one through the other server: on the virtual disk of 2026-12-07 every other
1 GiB download ran about twice as long as the one before it, whichever server served it, which had
made the ratio to nginx depend on the step order.  The per-round figures and the best round of each
download are printed below the table.
With ``--concurrency N`` every step runs N transfers at once (one thread each) and the figures
are their total.  Each step's time is the median over the rounds; the ratios compare medians of
the same run.  It also prints the proxy's CPU seconds per step, its resident memory at start and
its peak (``VmHWM``), and checks every stored and downloaded file byte for byte.

Not a test: it prints figures and exits 0 (non-zero only if a transfer failed).
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
MiB = 2**20
SECRET = "bench-storage-proxy-secret-0123456789"
AUTH_HEADER = "X-BackendAI-Storage-Auth-Token"


def parse_size(text: str) -> int:
    """``1G``, ``256M``, ``512MiB``, ``1048576`` -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not match:
        raise SystemExit(f"not a size: {text!r}")
    return int(float(match.group(1)) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[match.group(2)])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ports_from(base: int, count: int) -> list[int]:
    """``count`` ports of ``base .. base+99`` that can be bound now (one held by another program's
    connection, even in TIME-WAIT, is skipped)."""
    found = []
    for port in range(base, base + 100):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise SystemExit(f"fewer than {count} free ports in {base}..{base + 99}")


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS of a process, in bytes."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values[key] = int(rest.split()[0]) * 1024
    return values


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds a process (its threads included) has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as out:
        left = size
        while left:
            n = min(16 * MiB, left)
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


def settle(path: Path, quiet: float = 0.5, limit: float = 60.0) -> float:
    """``sync``, then wait until the disk holding ``path`` has had no I/O for ``quiet`` seconds (at most
    ``limit``): the previous step's write-back and, on a filesystem mounted with ``discard`` (this
    machine's ext4), the TRIM of the files it deleted, which the kernel issues after the journal commit
    and which otherwise slowed whichever step came next by up to 3x.  Returns the seconds waited."""
    started = time.monotonic()
    os.sync()
    dev = os.stat(path).st_dev
    stat = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat")
    if not stat.exists():
        return time.monotonic() - started
    last, since = None, time.monotonic()
    while time.monotonic() - started < limit:
        fields = stat.read_text().split()
        now = time.monotonic()
        if fields != last or int(fields[8]):  # counters moved, or requests in flight
            last, since = fields, now
        elif now - since >= quiet:
            break
        time.sleep(0.05)
    return time.monotonic() - started


def evict(path: Path) -> None:
    """Drop a (clean, fsynced) file's pages from the page cache, so that every step reads cold."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# --- the transfers (each returns after its output is fsynced) ------------------------------------------

def plain_copy(src: Path, dst: Path) -> None:
    """16 MiB ``read``/``write``, one ``fsync`` at the end (what ``cp`` then ``sync`` do)."""
    buffer = bytearray(16 * MiB)
    view = memoryview(buffer)
    with open(src, "rb", buffering=0) as source:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            while n := source.readinto(buffer):
                write_out(fd, view[:n])
            os.fsync(fd)
        finally:
            os.close(fd)


def write_out(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data):]


def tus_upload(url: str, token: str, src: Path, size: int, chunk: int) -> None:
    where = urlsplit(url)
    target = where.path + "?token=" + token
    conn = http.client.HTTPConnection(where.netloc, timeout=600)
    try:
        offset = 0
        with open(src, "rb") as source:
            while offset < size:
                length = min(chunk, size - offset)
                conn.putrequest("PATCH", target, skip_accept_encoding=True)
                for name, value in (("Tus-Resumable", "1.0.0"), ("Upload-Offset", str(offset)),
                                    ("Content-Type", "application/offset+octet-stream"),
                                    ("Content-Length", str(length))):
                    conn.putheader(name, value)
                conn.endheaders()
                conn.sock.sendfile(source, offset, length)
                resp = conn.getresponse()
                resp.read()
                if resp.status != 204:
                    raise SystemExit(f"PATCH at {offset} answered {resp.status}")
                offset = int(resp.getheader("Upload-Offset"))
    finally:
        conn.close()


def http_download(netloc: str, target: str, dst: Path | None, size: int) -> None:
    """GET ``target`` into ``dst`` (fsynced), or read and drop the body when ``dst`` is None."""
    conn = http.client.HTTPConnection(netloc, timeout=600)
    try:
        conn.request("GET", target)
        resp = conn.getresponse()
        if resp.status != 200 or int(resp.getheader("Content-Length", "-1")) != size:
            raise SystemExit(f"GET {target[:40]} answered {resp.status}, Content-Length "
                             f"{resp.getheader('Content-Length')}")
        buffer = bytearray(4 * MiB)
        view = memoryview(buffer)
        got = 0
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) if dst is not None else None
        try:
            while got < size:
                n = resp.readinto(view)
                if not n:
                    raise SystemExit(f"GET {target[:40]}: the body ended after {got} bytes")
                if fd is not None:
                    write_out(fd, view[:n])
                got += n
            if fd is not None:
                os.fsync(fd)
        finally:
            if fd is not None:
                os.close(fd)
    finally:
        conn.close()


def run_all(jobs) -> float:
    """Run the callables at once (one thread each); the wall-clock seconds until all are done."""
    errors: list[BaseException] = []

    def guard(job):
        try:
            job()
        except BaseException as exc:  # noqa: BLE001 - reported after the others finished
            errors.append(exc)

    threads = [threading.Thread(target=guard, args=(job,)) for job in jobs]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed


# --- the servers ---------------------------------------------------------------------------------

def wait_http(url: str, process: subprocess.Popen, what: str) -> None:
    where = urlsplit(url)
    for _ in range(300):
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}")
        try:
            conn = http.client.HTTPConnection(where.netloc, timeout=1)
            conn.request("GET", where.path or "/")
            if conn.getresponse().status < 500:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what} did not start")


def stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class Proxy:
    def __init__(self, work: Path, volume: Path, manager_port: int, client_port: int):
        self.volume, self.manager_port, self.client_port = volume, manager_port, client_port
        self.log = open(work / "storageproxy.log", "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "storageproxy", "--volume", f"volume1={volume}",
             "--manager-port", str(manager_port), "--client-port", str(client_port),
             "--metrics-listen", "off", "--log-level", "WARNING"],
            cwd=ROOT, env={**os.environ, "BAI_STORAGE_SECRET": SECRET, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL, stderr=self.log, start_new_session=True)
        wait_http(f"http://127.0.0.1:{manager_port}/health", self.process, "the storage proxy")

    def call(self, method: str, path: str, body: dict) -> dict:
        conn = http.client.HTTPConnection(f"127.0.0.1:{self.manager_port}", timeout=60)
        try:
            conn.request(method, path, body=json.dumps(body),
                         headers={AUTH_HEADER: SECRET, "Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            if resp.status >= 300:
                raise SystemExit(f"{method} {path} answered {resp.status}: {data[:300]!r}")
            return json.loads(data) if data else {}
        finally:
            conn.close()

    def stop(self) -> None:
        stop(self.process)
        self.log.close()


NGINX_CONF = """\
{user}worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}
}}
"""


class Nginx:
    def __init__(self, work: Path, root: Path, port: int, attempt: int = 0):
        binary = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                                 if os.path.exists(p)), None)
        if binary is None:
            raise FileNotFoundError("nginx is not installed (apt-get install nginx-light)")
        prefix = work / f"nginx-{attempt}"
        prefix.mkdir()
        conf = prefix / "nginx.conf"
        conf.write_text(NGINX_CONF.format(user="user root;\n" if os.geteuid() == 0 else "", prefix=prefix,
                                          port=port, root=root))
        self.port = port
        self.process = subprocess.Popen([binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        wait_http(f"http://127.0.0.1:{port}/", self.process, "nginx")

    def stop(self) -> None:
        stop(self.process)


# --- one run -------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default=None, help="size of each file (k/m/g suffixes; default 1G, --short 32M)")
    parser.add_argument("--chunk", default="16M", help="tus PATCH size (default 16M, as the official client)")
    parser.add_argument("--concurrency", type=int, default=1, help="transfers at once in every step (default 1)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds, the order of the steps flipped every other one; medians are reported "
                             "(default 4, --short 2)")
    parser.add_argument("--short", action="store_true", help="32 MiB, two rounds: seconds (what CI runs)")
    parser.add_argument("--dir", default=None, help="working directory on the disk to measure (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--port-base", type=int, default=0,
                        help="listen on three free ports of PORT..PORT+99 (proxy manager API, client API, "
                             "nginx); default: ports the system picks")
    parser.add_argument("--no-nginx", action="store_true", help="leave nginx out")
    parser.add_argument("--discard", action="store_true",
                        help="the download client drops the bodies instead of writing them to the disk: the "
                             "servers' send paths alone (no byte check of the downloads)")
    args = parser.parse_args()
    size = parse_size(args.size or ("32M" if args.short else "1G"))
    chunk = parse_size(args.chunk)
    rounds = args.rounds or (2 if args.short else 4)
    count = max(1, args.concurrency)
    ports = ports_from(args.port_base, 3) if args.port_base else [free_port() for _ in range(3)]

    work = Path(tempfile.mkdtemp(prefix="vfolders-bench-", dir=args.dir))
    os.chmod(work, 0o755)  # nginx's worker reads the volume
    volume = work / "volume1"
    volume.mkdir()
    proxy = nginx = None
    try:
        print(f"working directory {work} (one disk for everything)", flush=True)
        sources = [work / f"source-{i}.bin" for i in range(count)]
        for src in sources:
            write_random(src, size)
        expected = [sha256(src) for src in sources]
        proxy = Proxy(work, volume, ports[0], ports[1])
        rss_start = proc_status(proxy.process.pid)["VmRSS"]
        nginx_note = ""
        if not args.no_nginx:
            # a port can be taken between the check and nginx's bind (other programs' connections): try others
            spare = ports_from(args.port_base + 50, 3) if args.port_base else [free_port() for _ in range(3)]
            for attempt, port in enumerate([ports[2], *spare]):
                try:
                    nginx = Nginx(work, volume, port, attempt)
                    break
                except (FileNotFoundError, SystemExit) as exc:
                    nginx_note = f"nginx left out: {exc}"
                    if isinstance(exc, FileNotFoundError):
                        break
            if nginx is not None:
                nginx_note = ""
        vfid = f"user:{uuid.uuid4()}/{uuid.uuid4().hex}"
        proxy.call("POST", "/folder/create", {"volume": "volume1", "vfid": vfid})
        folder = Path(proxy.call("GET", "/folder/mount", {"volume": "volume1", "vfid": vfid})["path"])
        folder_rel = folder.relative_to(volume)

        times: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        ok = True

        def step(name: str, jobs, reads: list[Path], record: bool = True) -> None:
            settle(work)  # no write-back or TRIM of an earlier step left to compete with this one
            for path in reads:
                evict(path)
            before = cpu_seconds(proxy.process.pid)
            seconds = run_all(jobs)
            if not record:
                return
            times.setdefault(name, []).append(seconds)
            cpu.setdefault(name, []).append(cpu_seconds(proxy.process.pid) - before)

        def copy_step() -> None:
            copies = [work / f"copy-{i}.bin" for i in range(count)]
            step("plain copy", [lambda s=s, d=d: plain_copy(s, d) for s, d in zip(sources, copies)], sources)
            for path in copies:
                path.unlink()

        def upload_step(names: list[str]) -> None:
            tickets = [proxy.call("POST", "/folder/file/upload", {"volume": "volume1", "vfid": vfid, "relpath": name,
                                                                  "size": size}) for name in names]
            step("upload via the storage proxy", [
                lambda s=s, t=t: tus_upload(t["url"], t["token"], s, size, chunk)
                for s, t in zip(sources, tickets)], sources)

        def download_step(via: str, names: list[str], check: bool, record: bool = True) -> bool:
            downloads = [None if args.discard else work / f"downloaded-{i}.bin" for i in range(count)]
            stored = [folder / name for name in names]
            if via == "proxy":
                tickets = [proxy.call("POST", "/folder/file/download", {"volume": "volume1", "vfid": vfid,
                                                                        "relpath": name}) for name in names]
                step("download via the storage proxy", [
                    lambda t=t, d=d: http_download(urlsplit(t["url"]).netloc,
                                                   urlsplit(t["url"]).path + "?token=" + t["token"], d, size)
                    for t, d in zip(tickets, downloads)], stored, record)
            else:
                step("download via nginx (sendfile)", [
                    lambda n=n, d=d: http_download(f"127.0.0.1:{nginx.port}", f"/{folder_rel}/{n}", d, size)
                    for n, d in zip(names, downloads)], stored, record)
            if args.discard:
                return True
            same = not check or [sha256(path) for path in downloads] == expected
            for path in downloads:
                path.unlink()
            return same

        # the order flips every round (a step right after heavy writes may find the disk still busy)
        for round_no in range(rounds):
            names = [f"bench-{round_no}-{i}.bin" for i in range(count)]
            flip = round_no % 2 == 1
            for what in (["upload", "copy"] if flip else ["copy", "upload"]):
                if what == "copy":
                    copy_step()
                else:
                    upload_step(names)
            stored = [folder / name for name in names]
            if round_no == 0:
                ok &= [sha256(path) for path in stored] == expected
            order = ["nginx", "proxy"] if flip else ["proxy", "nginx"]
            if nginx is None:
                order = ["proxy"]
            # an unmeasured download before each measured one, through the other server: on this virtual
            # disk every other 1 GiB download ran ~2x slower than the one before it, whichever server
            # served it (the per-round figures show it), so each measured download now comes in the same
            # place of that rhythm
            for via in order:
                download_step(order[-1] if via == order[0] else order[0], names, check=False, record=False)
                ok &= download_step(via, names, check=round_no == 0)
            for path in stored:
                path.unlink()
        memory = proc_status(proxy.process.pid)

        median = {name: statistics.median(values) for name, values in times.items()}
        total = size * count
        base = median["plain copy"]
        nginx_s = median.get("download via nginx (sendfile)")
        print()
        print(f"{count} x {size / MiB:.0f} MiB, tus chunk {chunk / MiB:.0f} MiB, cold page cache, "
              f"median of {rounds} round{'s' if rounds > 1 else ''}")
        print()
        print("| step | seconds | MiB/s | vs plain copy | vs nginx | proxy CPU s |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, seconds in median.items():
            vs_nginx = (f"{nginx_s / seconds:.2f}x" if nginx_s and name.startswith("download") else "")
            proxy_cpu = f"{statistics.median(cpu[name]):.2f}" if "proxy" in name else ""
            print(f"| {name} | {seconds:.2f} | {total / MiB / seconds:.0f} | {base / seconds:.2f}x | {vs_nginx} "
                  f"| {proxy_cpu} |")
        print()
        print("each round (seconds, in the order the rounds ran): " + "; ".join(
            f"{name}: " + " ".join(f"{value:.2f}" for value in values) for name, values in times.items()))
        best = {name: min(values) for name, values in times.items()}
        if nginx_s:
            print("best of the rounds: download via the storage proxy {:.2f} s, via nginx {:.2f} s: {:.2f}x nginx".format(
                best["download via the storage proxy"], best["download via nginx (sendfile)"],
                best["download via nginx (sendfile)"] / best["download via the storage proxy"]))
        if nginx_note:
            print(nginx_note)
        print(f"proxy memory: RSS {rss_start / MiB:.1f} MiB at start, peak {memory['VmHWM'] / MiB:.1f} MiB "
              f"(VmHWM) after {rounds * count} uploads and downloads of {size / MiB:.0f} MiB")
        print(f"byte-identical: {'yes' if ok else 'NO'}" + (" (the stored files; --discard drops the downloads)"
                                                           if args.discard else ""))
        print("summary: upload {:.2f}x plain copy (target 0.8x), download {:.2f}x plain copy (target 0.9x){}".format(
            base / median["upload via the storage proxy"], base / median["download via the storage proxy"],
            f", {nginx_s / median['download via the storage proxy']:.2f}x nginx" if nginx_s else ""))
        return 0 if ok else 1
    finally:
        if nginx is not None:
            nginx.stop()
        if proxy is not None:
            proxy.stop()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
