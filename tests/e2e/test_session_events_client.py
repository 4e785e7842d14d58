"""``backend.ai session events <id>`` (the official client's CLI, in a background
process) against the real-process stack: it parses the whole stream, from its
opening to ``server_close``, and prints the lifecycle of a session from
PENDING (``session_enqueued``) to TERMINATED (``session_terminated``) while the
session is created, runs on a local agent and is destroyed."""
from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from agents.models import Agent, AgentStatus
from backendai.signing import signed_headers
from sessions.models import Session

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

AGENT = "e2e-events"
BOUND = 120  # seconds: the longest any wait below may take (it ends as soon as the condition holds)


def api(live_stack, keypair, method, target, body=None):
    headers = signed_headers(keypair.access_key, keypair.secret_key, method, target, live_stack.host,
                             content_type="application/json" if body is not None else "text/plain")
    return httpx.request(method, live_stack.url + target, headers=headers,
                         content=json.dumps(body) if body is not None else None, timeout=90)


class Lines:
    """Every line a background process prints, as it prints it."""

    def __init__(self, process):
        self.process = process
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def event_lines(self) -> list[str]:
        """The lines the CLI prints per event (``<name> <json>``), not its warnings."""
        return [line for line in self.lines if line.startswith(("session_", "kernel_", "server_close"))]

    def events(self) -> list[str]:
        return [line.split(" ", 1)[0] for line in self.event_lines()]

    def wait_for(self, event: str, timeout: float = BOUND) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while event not in self.events():
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self.reader.is_alive()):
                    raise AssertionError(f"no {event!r} line; the client printed:\n" + "\n".join(self.lines))
                self.changed.wait(min(left, 1.0))


def test_session_events_prints_the_lifecycle_from_pending_to_terminated(live_stack, cluster, owner, stack_client):
    _, token = cluster
    keypair = owner.main_keypair
    live_stack.start_agent(AGENT, "local", token)
    live_stack.wait_for(lambda: Agent.objects.filter(pk=AGENT, status=AgentStatus.ALIVE,
                                                     images__name="local/shell:1.0").exists(),
                        timeout=BOUND, what="the local agent with its images")
    created = api(live_stack, keypair, "POST", "/session",
                  {"image": "local/shell:1.0", "name": "evsess", "enqueueOnly": True, "type": "interactive",
                   "config": {"resources": {"cpu": "0.1", "mem": "256m"}}})
    assert created.status_code == 201, created.text
    session_id = created.json()["sessionId"]

    client = stack_client.popen(keypair, "session", "events", session_id)
    try:
        output = Lines(client)
        output.wait_for("session_started")  # the client parses the stream while the session comes up
        assert api(live_stack, keypair, "DELETE", f"/session/{session_id}").status_code == 200
        output.wait_for("session_terminated")
        output.wait_for("server_close")
        assert client.wait(timeout=BOUND) == 0, "\n".join(output.lines)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(timeout=10)
    events = output.events()
    printed = "\n".join(output.lines)
    assert "Traceback" not in printed and "Error" not in printed, printed
    session_events = [e for e in events if e.startswith("session_")]
    assert session_events[0] == "session_enqueued" and session_events[-1] == "session_terminated", printed
    order = [session_events.index(e) for e in ("session_enqueued", "session_scheduled", "session_started",
                                               "session_terminating", "session_terminated")]
    assert order == sorted(order), printed
    assert events[-1] == "server_close"
    for line in output.event_lines():  # every event line carries the JSON the server sent
        name, _, data = line.partition(" ")
        assert json.loads(data) is not None, line
        if name.startswith("session_"):
            assert json.loads(data)["sessionId"] == session_id
    assert Session.objects.get(pk=session_id).status == "TERMINATED"
