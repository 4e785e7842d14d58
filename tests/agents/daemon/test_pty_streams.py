"""Streams over the manager link, daemon side: a real ``ManagerLink`` with its
``StreamMux`` and the local backend, against a small websockets server that
plays the manager and speaks the frames of ``docs/agent-protocol.md``."""
from __future__ import annotations

import json
import os
import queue
import re
import shutil
import threading
import time
import uuid

import pytest
from websockets.sync.server import serve

from agents.daemon.backends.base import BackendSettings
from agents.daemon.backends.local import LocalBackend, _group_members
from agents.daemon.link import ManagerLink
from agents.daemon.streams import StreamMux
from agents.protocol import DEFAULT_WINDOW, KernelSpec, ack_threshold, decode_data, encode_data

PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else shutil.which("python3")


class FakeManagerLink:
    """A websocket server for one link at a time.

    Control frames (dicts) queue up in ``control``; data per stream
    accumulates in ``data`` (and ``frames`` counts the data frames).  Like the
    manager (sessions/kernel_io.py), it acknowledges the data frames it got by
    groups of ``ack_threshold(window)``, except on the streams in ``silent``:
    without acks the agent stops after a window of frames, and how many frames
    a terminal's output takes depends on how the reads fall.
    """

    def __init__(self):
        self.control: queue.Queue = queue.Queue()
        self.data: dict[str, bytes] = {}
        self.frames: dict[str, int] = {}
        self.windows: dict[str, int] = {}  # from the stream.open frames sent
        self.silent: set[str] = set()
        self._unacked: dict[str, int] = {}
        self.changed = threading.Condition()
        self.conn = None
        self.connected = threading.Event()
        self.server = serve(self._handler, "127.0.0.1", 0)
        self.port = self.server.socket.getsockname()[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self, conn):
        self.conn = conn
        self.connected.set()
        try:
            for message in conn:
                if isinstance(message, bytes):
                    stream, payload = decode_data(message)
                    with self.changed:
                        self.data[stream] = self.data.get(stream, b"") + payload
                        self.frames[stream] = self.frames.get(stream, 0) + 1
                        self.changed.notify_all()
                    self._acknowledge(conn, stream)
                else:
                    self.control.put(json.loads(message))
        except Exception:  # noqa: BLE001 - the connection dropped
            pass

    def _acknowledge(self, conn, stream):
        if stream in self.silent:
            return
        self._unacked[stream] = n = self._unacked.get(stream, 0) + 1
        if n >= ack_threshold(self.windows.get(stream, DEFAULT_WINDOW)):
            self._unacked[stream] = 0
            conn.send(json.dumps({"type": "stream.ack", "stream": stream, "n": n}))

    def send(self, frame):
        if isinstance(frame, dict) and frame.get("type") == "stream.open":
            self.windows[frame["stream"]] = frame.get("window", DEFAULT_WINDOW)
        self.conn.send(frame if isinstance(frame, bytes) else json.dumps(frame))

    def next(self, timeout=10.0, skip=("stream.ack",)):
        """The next control frame (skipping acks unless asked for)."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.control.get(timeout=max(deadline - time.monotonic(), 0.01))
            if frame.get("type") not in skip:
                return frame

    def output_until(self, stream_id, pattern: bytes, timeout=10.0) -> re.Match:
        """Wait until the stream's output matches the regular expression ``pattern``."""
        with self.changed:
            found = self.changed.wait_for(lambda: re.search(pattern, self.data.get(stream_id, b""), re.S), timeout)
            assert found, f"{pattern!r} never came; got {self.data.get(stream_id, b'')!r}"
            return found

    def close(self):
        self.server.shutdown()


@pytest.fixture
def backend(tmp_path):
    backend = LocalBackend(BackendSettings(agent_id="link-pty", scratch_root=tmp_path / "scratch",
                                           port_range=(31400, 31449), stop_timeout=2))
    yield backend
    for state in backend.list_kernels():
        backend.stop(state.kernel_id, "test-cleanup")


@pytest.fixture
def manager():
    fake = FakeManagerLink()
    yield fake
    fake.close()


@pytest.fixture
def link(manager, backend):
    stop = threading.Event()
    mux = StreamMux(backend)
    link = ManagerLink(f"ws://127.0.0.1:{manager.port}/agent-api/v1/link?agent_id=a1", "Bearer t", lambda: None,
                       stop, streams=mux)
    link.start()
    assert manager.connected.wait(5) and link.connected.wait(5)
    yield mux
    stop.set()
    link.join(timeout=3)


def kernel(backend, command=None, **extra):
    data = {"kernel_id": str(uuid.uuid4()), "session_id": str(uuid.uuid4()), "image": "x",
            "slots": {"cpu": "1"}, "startup_command": command}
    data.update(extra)
    return backend.create(KernelSpec.from_wire(data)).kernel_id


def open_pty(manager, kernel_id, window=16, rows=24, cols=80, acks=True):
    stream = uuid.uuid4().hex
    if not acks:
        manager.silent.add(stream)
    manager.send({"type": "stream.open", "stream": stream, "kind": "pty", "kernel_id": kernel_id,
                  "rows": rows, "cols": cols, "window": window})
    assert manager.next() == {"type": "stream.opened", "stream": stream}
    return stream


def test_a_terminal_over_the_link_echoes_resizes_and_reports_its_exit(manager, link, backend):
    kid = kernel(backend)
    sid = open_pty(manager, kid, rows=33, cols=99)
    manager.send(encode_data(sid, b'echo hel""lo; stty size\n'))
    manager.output_until(sid, rb"hello\r\n33 99")
    manager.send({"type": "stream.resize", "stream": sid, "rows": 44, "cols": 111})
    manager.send(encode_data(sid, b"stty size\n"))
    manager.output_until(sid, b"44 111")
    manager.send(encode_data(sid, b"exit 5\n"))
    frame = manager.next()
    assert frame == {"type": "stream.close", "stream": sid, "exit_code": 5, "reason": "exited"}
    assert link.active == 0


def test_a_terminal_reports_its_exit_after_more_output_than_its_window(manager, link, backend):
    """The agent sends a window of data frames, then waits for the manager's acks (docs/agent-protocol.md):
    a terminal whose output comes in more pieces than that still ends with its exit code, after all of it."""
    kid = kernel(backend)
    sid = open_pty(manager, kid, window=2)
    manager.send(encode_data(sid, b"for i in $(seq 40); do echo li''ne$i; sleep 0.01; done; exit 7\n"))
    frame = manager.next()
    assert frame == {"type": "stream.close", "stream": sid, "exit_code": 7, "reason": "exited"}
    assert b"line40\r\n" in manager.data[sid] and manager.frames[sid] > 2
    assert link.active == 0


def test_closing_a_stream_from_the_manager_kills_the_terminal(manager, link, backend):
    kid = kernel(backend)
    sid = open_pty(manager, kid)
    manager.send(encode_data(sid, b"echo pid=$$\n"))
    pid = int(manager.output_until(sid, rb"pid=(\d+)\r\n")[1])
    manager.send({"type": "stream.close", "stream": sid})
    deadline = time.monotonic() + 5
    while _group_members(pid):
        assert time.monotonic() < deadline, "the shell survived the close"
        time.sleep(0.05)
    assert link.active == 0


def test_the_agent_sends_at_most_a_window_of_frames_before_an_ack(manager, link, backend):
    kid = kernel(backend)
    sid = open_pty(manager, kid, window=3, acks=False)
    manager.send(encode_data(sid, b"yes 0123456789abcdef | head -c 3000000\n"))
    time.sleep(1.0)
    assert manager.frames[sid] == 3
    manager.send({"type": "stream.ack", "stream": sid, "n": 2})
    time.sleep(0.5)
    assert manager.frames[sid] == 5
    manager.send({"type": "stream.close", "stream": sid})


def test_the_agent_acknowledges_what_it_wrote(manager, link, backend):
    kid = kernel(backend)
    sid = open_pty(manager, kid, window=8)  # acknowledged by fours
    for _ in range(8):
        manager.send(encode_data(sid, b":\n"))
    acks = []
    deadline = time.monotonic() + 5
    while sum(a["n"] for a in acks) < 8:
        assert time.monotonic() < deadline, acks
        acks.append(manager.next(5, skip=()))
    assert acks == [{"type": "stream.ack", "stream": sid, "n": 4}] * 2
    manager.send({"type": "stream.close", "stream": sid})


def test_several_streams_run_at_once_and_tcp_reaches_the_service_port(manager, link, backend):
    web = kernel(backend, f"exec {PYTHON} -m http.server $PORT --bind 127.0.0.1",
                 service_ports=[{"name": "web", "protocol": "http", "container_ports": [8080]}])
    shell = kernel(backend)
    one, two = open_pty(manager, shell), open_pty(manager, shell)
    manager.send(encode_data(two, b"echo tw\"\"o\n"))
    manager.output_until(two, b"two\r\n")
    manager.send(encode_data(one, b"echo on\"\"e\n"))
    manager.output_until(one, b"one\r\n")
    assert b"two" not in manager.data[one] and b"one" not in manager.data[two]
    tcp = uuid.uuid4().hex
    deadline = time.monotonic() + 10
    while True:  # the http server needs a moment to listen
        manager.send({"type": "stream.open", "stream": tcp, "kind": "tcp", "kernel_id": web, "port": 8080})
        frame = manager.next()
        if frame == {"type": "stream.opened", "stream": tcp}:
            break
        assert frame["type"] == "stream.error" and time.monotonic() < deadline, frame
        time.sleep(0.2)
    manager.send(encode_data(tcp, b"GET / HTTP/1.0\r\n\r\n"))
    frame = manager.next()
    assert frame["type"] == "stream.close" and frame["stream"] == tcp
    assert manager.data[tcp].startswith(b"HTTP/1.0 200") and b"Directory listing" in manager.data[tcp]
    assert link.active == 2


@pytest.mark.parametrize("frame, words", [
    ({"kind": "pty", "kernel_id": "no-such-kernel"}, "kernel-not-running"),
    ({"kind": "tcp", "kernel_id": "no-such-kernel", "port": 80}, "kernel-not-running"),
    ({"kind": "tcp", "kernel_id": "k"}, "no port"),
    ({"kind": "bogus", "kernel_id": "k"}, "unknown stream kind"),
])
def test_a_stream_that_cannot_open_gets_an_error(manager, link, frame, words):
    manager.send({"type": "stream.open", "stream": "s1", **frame})
    answer = manager.next()
    assert answer["type"] == "stream.error" and answer["stream"] == "s1" and words in answer["message"]
    assert link.active == 0


def test_a_dropped_link_ends_every_stream(manager, link, backend):
    kid = kernel(backend)
    sid = open_pty(manager, kid)
    manager.send(encode_data(sid, b"echo pid=$$\n"))
    pid = int(manager.output_until(sid, rb"pid=(\d+)\r\n")[1])
    manager.conn.close()
    deadline = time.monotonic() + 5
    while _group_members(pid) or link.active:
        assert time.monotonic() < deadline, "the terminal outlived the link"
        time.sleep(0.05)


def test_the_mux_refuses_streams_past_its_limit(backend):
    sent = []
    mux = StreamMux(backend, max_streams=0)
    mux.attach(sent.append)
    mux.handle_text({"type": "stream.open", "stream": "x", "kind": "pty", "kernel_id": "k"})
    assert json.loads(sent[0]) == {"type": "stream.error", "stream": "x",
                                   "message": "this agent already serves 0 streams"}
