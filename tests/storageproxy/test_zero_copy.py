"""The fast paths of the client API, with the proxy's web apps in this process (a thread with its
own event loop) so that the system calls can be watched through spies: downloads leave through
``os.sendfile`` (and stay byte-identical, whole or by ranges, also on the fallback path without
sendfile), uploads are written in batches by ``pwritev`` with one fsync per PATCH, and stay
byte-identical through uneven, chunked, cut-off and resumed PATCHes."""
from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
import time
import uuid

import httpx
import pytest
from aiohttp import web

from storageproxy import client_api, fs
from storageproxy.app import ProxyContext
from storageproxy.client_api import build_client_app
from storageproxy.config import load_config
from storageproxy.manager_api import build_manager_app
from storageproxy.server import make_volumes

from .conftest import SECRET
from .test_manager_api import folder_dir
from .test_transfers import PATCH_HEADERS, TUS

MiB = 2**20


class InProcessProxy:
    """Both listeners of a storage proxy on free ports, served by a thread's event loop."""

    def __init__(self, volume_dir):
        config = load_config(["--volume", f"v1={volume_dir}", "--secret", SECRET, "--max-chunk-size", "64m",
                              "--metrics-listen", "off"], env={})
        volumes = make_volumes(config)
        for volume in volumes.values():
            volume.startup()
        self.ctx = ProxyContext(config, volumes)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(30), "the in-process proxy did not start"

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.runners = []
        self.ports = []

        async def start():
            for app in (build_manager_app(self.ctx), build_client_app(self.ctx)):
                runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5)
                await runner.setup()
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", 0))
                    port = probe.getsockname()[1]
                await web.TCPSite(runner, "127.0.0.1", port).start()
                self.runners.append(runner)
                self.ports.append(port)

        self.loop.run_until_complete(start())
        self.ready.set()
        self.loop.run_forever()

    def stop(self):
        async def cleanup():
            for runner in self.runners:
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()

    @property
    def manager_url(self):
        return f"http://127.0.0.1:{self.ports[0]}"

    @property
    def client_url(self):
        return f"http://127.0.0.1:{self.ports[1]}"


@pytest.fixture
def inproc(tmp_path):
    volume = tmp_path / "v1"
    volume.mkdir()
    proxy = InProcessProxy(volume)
    try:
        yield proxy, volume
    finally:
        proxy.stop()


@pytest.fixture
def apis(inproc):
    proxy, volume = inproc
    with httpx.Client(base_url=proxy.manager_url, headers={"X-BackendAI-Storage-Auth-Token": SECRET},
                      timeout=60) as manager, httpx.Client(base_url=proxy.client_url, timeout=60) as client:
        vfid = f"user:{uuid.uuid4()}/{uuid.uuid4().hex}"
        assert manager.post("/folder/create", json={"volume": "v1", "vfid": vfid}).status_code == 204
        yield manager, client, folder_dir(volume, vfid), vfid


def _token(manager, op, vfid, relpath, **extra):
    response = manager.post(f"/folder/file/{op}", json={"volume": "v1", "vfid": vfid, "relpath": relpath, **extra})
    assert response.status_code == 200, response.text
    return response.json()["token"]


@pytest.fixture
def sendfile_calls(monkeypatch):
    """Every os.sendfile call (out fd, in fd, offset, count) and what it sent."""
    calls = []
    real = os.sendfile

    def spy(out_fd, in_fd, offset, count):
        sent = real(out_fd, in_fd, offset, count)
        calls.append((offset, count, sent))
        return sent

    monkeypatch.setattr(os, "sendfile", spy)
    return calls


def _check_ranges(client, token, data):
    size = len(data)
    whole = client.get("/download", params={"token": token})
    assert whole.status_code == 200 and whole.content == data
    for first, last in ((0, 0), (1, 4 * MiB), (size - 1, size - 1), (3 * MiB + 7, size - 2)):
        part = client.get("/download", params={"token": token}, headers={"Range": f"bytes={first}-{last}"})
        assert part.status_code == 206, part.text
        assert part.content == data[first:last + 1]
        assert part.headers["Content-Range"] == f"bytes {first}-{last}/{size}"
    tail = client.get("/download", params={"token": token}, headers={"Range": "bytes=-1000"})
    assert tail.status_code == 206 and tail.content == data[-1000:]


def test_it_sends_a_download_with_sendfile_byte_identical_also_by_ranges(apis, sendfile_calls):
    manager, client, folder, vfid = apis
    data = os.urandom(9 * MiB + 123)
    (folder / "big.bin").write_bytes(data)
    token = _token(manager, "download", vfid, "big.bin")
    _check_ranges(client, token, data)
    assert sendfile_calls, "the download did not go through os.sendfile"
    ranges = 1 + 4 * MiB + 1 + (len(data) - 2 - (3 * MiB + 7) + 1) + 1000
    # the server thread records a call after the client may already hold its bytes: wait for it
    deadline = time.monotonic() + 10
    while sum(sent for _, _, sent in sendfile_calls) < len(data) + ranges and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sum(sent for _, _, sent in sendfile_calls) == len(data) + ranges
    # the ranges' first sendfile starts at the range's first byte
    offsets = {offset for offset, _, _ in sendfile_calls}
    assert {0, 1, len(data) - 1, 3 * MiB + 7, len(data) - 1000} <= offsets


def test_it_falls_back_to_reads_when_the_loop_cannot_sendfile(apis, sendfile_calls, monkeypatch):
    manager, client, folder, vfid = apis

    async def no_sendfile(self, transport, file, offset=0, count=None, *, fallback=True):
        raise NotImplementedError

    monkeypatch.setattr(asyncio.BaseEventLoop, "sendfile", no_sendfile)
    data = os.urandom(5 * MiB + 9)
    (folder / "f.bin").write_bytes(data)
    _check_ranges(client, _token(manager, "download", vfid, "f.bin"), data)
    assert not sendfile_calls


def test_it_pads_a_download_whose_file_shrank_to_its_announced_length(apis, sendfile_calls, monkeypatch):
    manager, client, folder, vfid = apis
    data = os.urandom(2 * MiB)
    path = folder / "shrinks.bin"
    path.write_bytes(data)
    real_prepare = web.StreamResponse.prepare

    async def prepare_then_shrink(self, request):
        writer = await real_prepare(self, request)
        if request.path == "/download":
            os.truncate(path, MiB)  # after the length was announced
        return writer

    monkeypatch.setattr(web.StreamResponse, "prepare", prepare_then_shrink)
    response = client.get("/download", params={"token": _token(manager, "download", vfid, "shrinks.bin")})
    assert response.status_code == 200 and response.headers["Content-Length"] == str(2 * MiB)
    assert response.content == data[:MiB] + bytes(MiB)
    deadline = time.monotonic() + 10
    while sum(sent for _, _, sent in sendfile_calls) < MiB and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sum(sent for _, _, sent in sendfile_calls) == MiB


@pytest.fixture
def write_calls(monkeypatch):
    """Every batch write (offset, bytes) and fsync of the upload path."""
    seen = {"writes": [], "fsync": 0}
    real_write, real_fsync = fs.write_pieces, os.fsync

    def write(fd, pieces, offset):
        done = real_write(fd, pieces, offset)
        seen["writes"].append((offset, done))
        return done

    def fsync(fd):
        seen["fsync"] += 1
        return real_fsync(fd)

    monkeypatch.setattr(fs, "write_pieces", write)
    monkeypatch.setattr(client_api.os, "fsync", fsync)
    return seen


def _patch(client, token, offset, body, **headers):
    return client.patch("/upload", params={"token": token}, content=body,
                        headers={**PATCH_HEADERS, "Upload-Offset": str(offset), **headers})


def test_it_writes_uploads_in_ordered_batches_with_one_fsync_per_patch(apis, write_calls):
    manager, client, folder, vfid = apis
    data = os.urandom(40 * MiB + 5)
    token = _token(manager, "upload", vfid, "up.bin", size=len(data))
    offset, patches = 0, 0
    for size in (1, 16 * MiB, 3, 16 * MiB, len(data)):
        response = _patch(client, token, offset, data[offset:offset + size])
        assert response.status_code == 204, response.text
        offset = int(response.headers["Upload-Offset"])
        patches += 1
        if offset == len(data):
            break
    assert (folder / "up.bin").read_bytes() == data
    writes = write_calls["writes"]
    # contiguous, in order, each written once, batches rather than one write per socket read
    position = 0
    for at, done in writes:
        assert at == position
        position += done
    assert position == len(data)
    assert len(writes) <= len(data) // (256 * 1024)  # asyncio reads at most 256 KiB per recv
    # one fsync per PATCH (the acknowledged offset is on the disk), plus the staging directory once
    # (the staged file's name) and the folder's directory at the end (the renamed file)
    assert write_calls["fsync"] == patches + 2


def test_it_keeps_chunked_cut_off_and_resumed_uploads_byte_identical(apis):
    manager, client, folder, vfid = apis
    data = os.urandom(13 * MiB + 77)
    token = _token(manager, "upload", vfid, "resumed.bin", size=len(data))

    def pieces(blob, size):
        for start in range(0, len(blob), size):
            yield blob[start:start + size]

    # chunked transfer encoding (no Content-Length), uneven HTTP chunks
    response = _patch(client, token, 0, pieces(data[:5 * MiB + 1], 333_333))
    assert response.status_code == 204, response.text
    offset = int(response.headers["Upload-Offset"])
    assert offset == 5 * MiB + 1

    # a PATCH cut off mid-body: what arrived is kept as a prefix, HEAD says where to resume
    with socket.create_connection(("127.0.0.1", int(client.base_url.port))) as raw:
        raw.sendall((f"PATCH /upload?token={token} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
                     f"Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n"
                     f"Content-Length: {4 * MiB}\r\n\r\n").encode() + data[offset:offset + 3 * MiB])
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while True:
        head = client.head("/upload", params={"token": token}, headers=TUS)
        resumed = int(head.headers["Upload-Offset"])
        if resumed == offset + 3 * MiB or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert resumed == offset + 3 * MiB
    offset = resumed
    while offset < len(data):
        response = _patch(client, token, offset, data[offset:offset + 4 * MiB - 1])
        assert response.status_code == 204, response.text
        offset = int(response.headers["Upload-Offset"])
    stored = folder / "resumed.bin"
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()


def test_it_writes_what_a_paused_client_sent_before_its_patch_ends(inproc, apis):
    proxy, volume = inproc
    manager, client, folder, vfid = apis
    data = os.urandom(2 * MiB)
    token = _token(manager, "upload", vfid, "slow.bin", size=4 * MiB)
    staged = lambda: sum(p.stat().st_size for p in (volume / ".staging").rglob("*.part"))  # noqa: E731
    with socket.create_connection(("127.0.0.1", int(client.base_url.port))) as raw:
        raw.sendall((f"PATCH /upload?token={token} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
                     f"Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
                     f"Content-Length: {4 * MiB}\r\n\r\n").encode() + data)
        deadline = time.monotonic() + 10  # the body is not over: the batch is written all the same
        while staged() < len(data) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert staged() == len(data)
