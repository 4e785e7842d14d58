"""Request/response stream kinds over the manager link, daemon side: ``register_kind``,
``stream.eof`` and ``ChunksEndpoint``, with a real ``ManagerLink`` and ``StreamMux``
against the fake manager of ``test_pty_streams``."""
from __future__ import annotations

import hashlib
import threading
import uuid

import pytest

from agents.daemon import streams as mux_module
from agents.daemon.backends.base import ChunksEndpoint, KernelError, StreamEndpoint
from agents.daemon.streams import register_kind
from agents.protocol import CHUNK, encode_data

from .test_pty_streams import backend, link, manager  # noqa: F401 - fixtures


class DigestEndpoint(StreamEndpoint):
    """Takes bytes until ``stream.eof``, then answers their SHA-256 and ends."""

    def __init__(self):
        super().__init__()
        self.digest = hashlib.sha256()
        self.writes = 0
        self.answer: bytes | None = None
        self.ready = threading.Event()

    def write(self, data):
        self.writes += 1
        self.digest.update(data)

    def write_eof(self):
        self.answer = self.digest.hexdigest().encode()
        self.ready.set()

    def read(self, size):
        while not self.ready.wait(0.1):
            if self.closed:
                return b""
        answer, self.answer = self.answer or b"", b""
        return answer

    def exit_code(self):
        return 0

    def close(self):
        self._closed.set()


@pytest.fixture
def kinds(monkeypatch):
    opened = []

    def upload(backend, kernel_id, frame):
        if frame.get("path") == "../escape":
            raise KernelError("invalid-path", "the path leaves the work directory")
        endpoint = DigestEndpoint()
        opened.append((kernel_id, frame, endpoint))
        return endpoint

    def files(backend, kernel_id, frame):
        def chunks():
            yield b"one,"
            if frame.get("fail"):
                raise OSError("disk on fire")
            yield b"two"
        return ChunksEndpoint(chunks, error_chunk=lambda exc: f"error: {exc}".encode())

    monkeypatch.setitem(mux_module._OPENERS, "upload", upload)
    monkeypatch.setitem(mux_module._OPENERS, "files", files)
    return opened


def open_stream(manager, kind, **fields):  # noqa: F811
    stream = uuid.uuid4().hex
    manager.send({"type": "stream.open", "stream": stream, "kind": kind, "kernel_id": "k1", "window": 4, **fields})
    return stream


def test_a_registered_kind_takes_the_data_then_answers_after_eof(manager, link, kinds):  # noqa: F811
    sid = open_stream(manager, "upload", path="a.bin")
    assert manager.next() == {"type": "stream.opened", "stream": sid}
    payload = bytes(range(256)) * 1024
    for start in range(0, len(payload), CHUNK):
        manager.send(encode_data(sid, payload[start:start + CHUNK]))
    manager.send({"type": "stream.eof", "stream": sid})
    manager.output_until(sid, hashlib.sha256(payload).hexdigest().encode())
    assert manager.next() == {"type": "stream.close", "stream": sid, "exit_code": 0, "reason": "done"}
    kernel_id, frame, endpoint = kinds[0]
    assert (kernel_id, frame["path"], endpoint.writes) == ("k1", "a.bin", len(payload) // CHUNK)
    assert link.active == 0


def test_the_agent_acknowledges_data_of_a_registered_kind(manager, link, kinds):  # noqa: F811
    sid = open_stream(manager, "upload", path="a.bin")
    manager.next()
    for _ in range(8):
        manager.send(encode_data(sid, b"x" * 100))
    acknowledged = 0
    while acknowledged < 8:  # a window of 4 is acknowledged 2 frames at a time
        frame = manager.next(skip=())
        assert frame["type"] == "stream.ack" and frame["n"] == 2, frame
        acknowledged += frame["n"]


def test_an_opener_that_refuses_answers_a_stream_error(manager, link, kinds):  # noqa: F811
    open_stream(manager, "upload", path="../escape")
    frame = manager.next()
    assert frame["type"] == "stream.error" and "leaves the work directory" in frame["message"]
    assert link.active == 0


def test_an_unregistered_kind_is_refused(manager, link, monkeypatch):  # noqa: F811
    monkeypatch.delitem(mux_module._OPENERS, "commit", raising=False)
    sid = open_stream(manager, "commit")
    assert manager.next() == {"type": "stream.error", "stream": sid, "message": "unknown stream kind 'commit'"}


def test_a_chunks_endpoint_sends_every_chunk_and_ends_with_exit_code_0(manager, link, kinds):  # noqa: F811
    sid = open_stream(manager, "files")
    assert manager.next()["type"] == "stream.opened"
    manager.output_until(sid, b"^one,two$")
    assert manager.next() == {"type": "stream.close", "stream": sid, "exit_code": 0, "reason": "done"}


def test_a_chunks_endpoint_that_fails_midway_sends_the_error_and_exit_code_1(manager, link, kinds):  # noqa: F811
    sid = open_stream(manager, "files", fail=True)
    assert manager.next()["type"] == "stream.opened"
    manager.output_until(sid, b"^one,error: disk on fire$")
    assert manager.next() == {"type": "stream.close", "stream": sid, "exit_code": 1, "reason": "done"}


def test_only_the_protocols_kinds_can_be_registered():
    with pytest.raises(ValueError):
        register_kind("pty", lambda *a: None)
    with pytest.raises(ValueError):
        register_kind("shell-as-root", lambda *a: None)


def test_a_chunks_endpoint_closed_early_closes_its_iterator():
    closed = threading.Event()

    def chunks():
        try:
            while True:
                yield b"x"
        finally:
            closed.set()

    endpoint = ChunksEndpoint(chunks)
    assert endpoint.read(10) == b"x"
    endpoint.close()
    assert closed.is_set() and endpoint.read(10) == b""
