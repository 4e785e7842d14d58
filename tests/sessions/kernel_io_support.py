"""The agent's side of the manager's kernel streams, in process: for the tests of ``sessions.files``,
``sessions.execution`` and ``sessions.commit``.

:class:`InProcessKernelIO` takes ``sessions.kernel_io.KernelIO``'s place (the link
boundary, and nothing else): its calls are served by the agent's REAL openers (the
kinds registered with ``agents.daemon.streams.register_kind``: ``execute``, ``files``,
``download``, ``upload``, ``commit``) on a real backend, without a link.  As on the
agent, an opener's refusal (``KernelError``) becomes the ``"<reason>: <detail>"``
message of a failed open, and the blocking endpoint calls run in threads (the agent
runs each stream in threads of its own).  The link itself is covered by
``test_kernel_io`` and end to end by ``tests/e2e``.

Fixtures (import them into a test module):

* ``backend``: a ``LocalBackend`` under ``tmp_path``; its kernels are stopped at teardown.
* ``kernel_io``: patches ``KernelIO`` in ``sessions.files``, ``sessions.execution`` and
  ``sessions.commit``; the list of every stream opened (``[]``: nothing reached an agent).
  ``kernel_io.backends`` maps an agent id to the backend serving it (``backend`` for
  any agent not named there).
"""
from __future__ import annotations

import asyncio
import json

import pytest

# the daemon's modules register their kinds when imported, as the agent's entry point does
from agents.daemon import commit as _commit_kind  # noqa: F401
from agents.daemon import execution as agent_execution
from agents.daemon import files as _files_kind  # noqa: F401
from agents.daemon import streams as agent_streams
from agents.daemon.backends.base import BackendSettings, KernelError
from agents.daemon.backends.local import LocalBackend
from agents.protocol import CHUNK, KernelSpec
from sessions import commit as commit_service
from sessions import execution as execution_service
from sessions import files as files_service
from sessions.kernel_io import KernelIOError

__all__ = ["InProcessKernelIO", "backend", "kernel_io", "start_local_kernel"]


class InProcessKernelIO:
    """``KernelIO``'s calls over the agent's real openers, without a link."""

    def __init__(self, backend, target, kind, fields):
        self.backend, self.target, self.kind = backend, target, kind
        self.fields = dict(fields or {})
        self.frame = {"type": "stream.open", "kind": kind, "kernel_id": target.kernel_id, **self.fields}
        self.endpoint = None
        self.ended = False
        self.closed = False
        self.exit_code = None

    def __repr__(self):
        return f"<InProcessKernelIO {self.kind} kernel={self.target.kernel_id}>"

    async def open(self, timeout=None):
        opener = agent_streams._OPENERS[self.kind]  # the agent's registry of stream kinds
        frame = json.loads(json.dumps(self.frame))  # what the link would carry
        try:
            self.endpoint = await asyncio.to_thread(opener, self.backend, self.target.kernel_id, frame)
        except (KernelError, OSError) as exc:  # the agent's stream.error message (agents.daemon.streams)
            raise KernelIOError(str(exc)) from None
        return self

    async def write(self, data):
        try:
            await asyncio.to_thread(self.endpoint.write, data)
        except OSError:
            self.ended = True
            raise KernelIOError(f"the {self.kind} stream ended before it took all the data") from None

    async def eof(self):
        await asyncio.to_thread(self.endpoint.write_eof)

    async def read(self, timeout=None):
        data = await asyncio.to_thread(self.endpoint.read, CHUNK)
        if not data:
            self.ended, self.exit_code = True, self.endpoint.exit_code()
            return None
        return data

    async def read_all(self, limit, timeout=None):
        parts, size = [], 0
        while (chunk := await self.read(timeout)) is not None:
            size += len(chunk)
            if size > limit:
                await self.close()
                raise KernelIOError(f"the {self.kind} answer is larger than {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def close(self):
        self.closed = True
        if self.endpoint is not None and not self.ended:
            self.endpoint.close()


class OpenedStreams(list):
    """Every :class:`InProcessKernelIO` made, in order; ``backends``: agent id -> backend."""

    def __init__(self, default):
        super().__init__()
        self.default = default
        self.backends = {}

    def make(self, target, kind, fields=None):
        io = InProcessKernelIO(self.backends.get(target.agent_id, self.default), target, kind, fields)
        self.append(io)
        return io


def local_settings(tmp_path, agent_id="node-1"):
    return BackendSettings(agent_id=agent_id, scratch_root=tmp_path / "scratch", port_range=(31400, 31420),
                           stop_timeout=2)


@pytest.fixture
def backend(tmp_path):
    backend = LocalBackend(local_settings(tmp_path))
    yield backend
    for state in backend.list_kernels():
        agent_execution.forget_runner(backend, state.kernel_id)
        backend.stop(state.kernel_id, "test-cleanup")


@pytest.fixture
def kernel_io(backend, monkeypatch):
    opened = OpenedStreams(backend)
    for module in (files_service, execution_service, commit_service):
        monkeypatch.setattr(module, "KernelIO", opened.make)
    return opened


def start_local_kernel(backend, session):
    """A local kernel for the session's main kernel (same id); returns its work directory."""
    kernel = session.kernels.get()
    spec = KernelSpec.from_wire({"kernel_id": str(kernel.pk), "session_id": str(session.pk),
                                 "image": "local/shell:1.0", "session_type": "interactive",
                                 "cluster_hostname": "main1", "slots": {"cpu": "1", "mem": str(2**28)},
                                 "startup_command": None})
    backend.create(spec)
    return backend._dir(str(kernel.pk)) / "home" / "work"
