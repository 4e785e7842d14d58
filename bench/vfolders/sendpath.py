#!/usr/bin/env python3
"""Benchmark: the download's send path alone, side by side with nginx's in one run.

    .venv/bin/python bench/vfolders/sendpath.py                 # 1 GiB, warm and cold, 6 rounds
    .venv/bin/python bench/vfolders/sendpath.py --short         # 16 MiB, 1 round: seconds (CI)

The storage proxy sends a file with asyncio's ``loop.sendfile`` (storageproxy/client_api.py
``_send_file``: ``os.sendfile`` once per writable event, from the page cache to the socket).  This
bench serves one file over HTTP/1.1 with exactly that call on a bare asyncio server (no aiohttp, no
tokens, no volume checks) and with nginx (``worker_processes 1``, ``sendfile on``,
``tcp_nopush on``) from the same directory, and fetches it with the same client, a separate process
that reads 4 MiB at a time and drops the bytes: nothing is written, so the disk only reads.

``warm``: the file is in the page cache (only the send paths differ); ``cold``: evicted
(``POSIX_FADV_DONTNEED``) before every fetch (the kernel's read-ahead under each ``sendfile``).  The
order alternates every round; each figure is the median of the rounds, the best round beside it.

If the asyncio path keeps up with nginx here, a gap in ``bench/vfolders/run.py``'s download is not
in how the proxy sends.  Not a test: it prints figures and exits 0.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from run import MiB, Nginx, evict, free_port  # bench/vfolders/run.py: the same nginx, ports and eviction

FETCH = """
import http.client, sys, time
port, size = int(sys.argv[1]), int(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
started = time.perf_counter()
conn.request("GET", "/file.bin")
response = conn.getresponse()
view = memoryview(bytearray(4 * 2**20))
got = 0
while got < size:
    n = response.readinto(view)
    if not n:
        raise SystemExit(f"the body ended after {got} bytes")
    got += n
print(time.perf_counter() - started)
"""


def serve_with_asyncio(path: Path, port: int) -> None:
    """A bare HTTP/1.1 server in a thread that answers every request with ``path`` through
    ``loop.sendfile``, as the storage proxy's download does."""
    size = path.stat().st_size
    header = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size
    ready = threading.Event()

    def run() -> None:
        loop = asyncio.new_event_loop()

        class Sender(asyncio.Protocol):
            def connection_made(self, transport):
                self.transport = transport
                self.buffer = b""

            def data_received(self, data):
                self.buffer += data
                if b"\r\n\r\n" in self.buffer:
                    self.buffer = b""
                    loop.create_task(self.send())

            async def send(self):
                self.transport.write(header)
                with open(path, "rb", buffering=0) as file:
                    await loop.sendfile(self.transport, file, 0, size, fallback=False)
                self.transport.close()

        loop.run_until_complete(loop.create_server(Sender, "127.0.0.1", port))
        ready.set()
        loop.run_forever()

    threading.Thread(target=run, name="asyncio-sendfile", daemon=True).start()
    ready.wait(10)


def fetch(port: int, size: int) -> float:
    done = subprocess.run([sys.executable, "-c", FETCH, str(port), str(size)], capture_output=True,
                          text=True, timeout=600)
    if done.returncode:
        raise SystemExit(f"fetch from port {port} failed: {done.stderr[-500:]}")
    return float(done.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024, help="MiB (default 1024)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--short", action="store_true", help="16 MiB, 1 round")
    parser.add_argument("--dir", type=Path, default=None, help="working directory (default: a temporary one)")
    args = parser.parse_args()
    size_mib, rounds = (16, 1) if args.short else (args.size, args.rounds)
    size = size_mib * MiB
    work = Path(tempfile.mkdtemp(prefix="sendpath-", dir=args.dir))
    os.chmod(work, 0o755)  # nginx's worker reads the file
    nginx = None
    try:
        root = work / "root"
        root.mkdir()
        os.chmod(root, 0o755)
        path = root / "file.bin"
        with open(path, "wb") as out:
            for _ in range(0, size, 16 * MiB):
                out.write(os.urandom(min(16 * MiB, size)))
            out.flush()
            os.fsync(out.fileno())
        os.chmod(path, 0o644)
        ports = {"asyncio loop.sendfile": free_port()}
        serve_with_asyncio(path, ports["asyncio loop.sendfile"])
        try:
            nginx = Nginx(work, root, free_port())
            ports["nginx (sendfile)"] = nginx.port
        except (FileNotFoundError, SystemExit) as exc:
            nginx_note = f"nginx left out: {exc}"
        else:
            nginx_note = ""
        results: dict[tuple[str, str], list[float]] = {}
        for cache in ("warm", "cold"):
            fetch(next(iter(ports.values())), size)  # loads the page cache; warms both paths up
            for round_no in range(rounds):
                for name in (list(ports) if round_no % 2 == 0 else list(ports)[::-1]):
                    if cache == "cold":
                        evict(path)
                    results.setdefault((cache, name), []).append(fetch(ports[name], size))
        print()
        print(f"{size_mib} MiB, the client in its own process dropping the bytes, median of {rounds} "
              f"round{'s' if rounds > 1 else ''}")
        print()
        print("| page cache | server | seconds | best | MiB/s | vs nginx |")
        print("|---|---|---:|---:|---:|---:|")
        for (cache, name), values in results.items():
            median = statistics.median(values)
            base = results.get((cache, "nginx (sendfile)"))
            vs = f"{statistics.median(base) / median:.2f}x" if base else ""
            print(f"| {cache} | {name} | {median:.3f} | {min(values):.3f} | {size / MiB / median:.0f} | {vs} |")
        if nginx_note:
            print(nginx_note)
        return 0
    finally:
        if nginx is not None:
            nginx.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
