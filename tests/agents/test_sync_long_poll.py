"""The agent sync as a long poll (sessions/agent_longpoll.py): a sync that names the
fingerprint of the desired state it has is held until a hint for its agent
comes or its wait elapses, answered at once when the desired state differs,
and holds no database connection while it waits.

Held syncs run in a thread of their own (as under daphne); every wait here is
bounded and ends as soon as its condition holds."""
from __future__ import annotations

import json
import threading
import time

import pytest
from django.db import connection, connections
from django.test import Client

from agents import services
from agents.models import Agent
from backendai import hints
from helpers import require, slug
from sessions import agent_longpoll as longpoll
from sessions import services as session_services

pytestmark = pytest.mark.django_db(transaction=True)

JOIN = 60  # seconds a held sync may take to answer once it should (a slow CI machine)
LONG = 120  # a wait no test lets run out


@pytest.fixture
def token(defaults):
    group = services.ensure_default_scaling_group()
    return services.issue_token("nodes", scaling_group=group)[1]


def body(agent_id="node-1", **extra):
    return {"agent_id": agent_id, "scaling_group": "default", "address": "127.0.0.1", "backend": "local",
            "capacity": {"cpu": "4", "mem": "8589934592"}, "slot_types": {"cpu": "count", "mem": "bytes"},
            "kernels": [], **extra}


def sync(token, payload):
    return Client().post("/agent-api/v1/sync", json.dumps(payload), content_type="application/json",
                         HTTP_AUTHORIZATION=f"Bearer {token}")


class SyncThread(threading.Thread):
    """One sync in its own thread, with its own database connection (kept for inspection)."""

    def __init__(self, token, payload):
        super().__init__(daemon=True)
        self.token, self.payload = token, payload
        self.response = None
        self.error: BaseException | None = None
        self.db = None

    def run(self):
        self.db = connections["default"]  # the wrapper this thread's view uses
        try:
            self.response = sync(self.token, self.payload)
        except BaseException as exc:  # noqa: BLE001 - reported by answer()
            self.error = exc
        finally:
            connections.close_all()

    def answer(self) -> dict:
        self.join(JOIN)
        assert not self.is_alive(), "the held sync did not answer"
        assert self.error is None, self.error
        assert self.response.status_code == 200, self.response.content
        return self.response.json()


def start(token, payload) -> SyncThread:
    thread = SyncThread(token, payload)
    thread.start()
    return thread


def wait_until(predicate, what, timeout=JOIN):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def held_now(agent_id="node-1"):
    return longpoll.held(agent_id) == 1


def place(owner):
    """A session placed on node-1 (commits, then pokes the agent: the scheduler's hint)."""
    return session_services.create_session_on_agent(user=owner, image="local/shell:1.0",
                                                     agent=Agent.objects.get(pk="node-1"),
                                                     slots={"cpu": "1", "mem": "268435456"})


def test_a_sync_without_wait_is_answered_at_once_with_its_fingerprint(token):
    first = sync(token, body())
    assert first.status_code == 200, first.content
    answer = first.json()
    assert answer["fingerprint"] and answer["max_wait"] == longpoll.max_wait()
    again = sync(token, body(fingerprint=answer["fingerprint"])).json()  # a fingerprint without wait: no hold
    assert again["fingerprint"] == answer["fingerprint"]


def test_a_held_sync_answers_when_a_hint_for_its_agent_comes(token, owner):
    known = sync(token, body()).json()["fingerprint"]
    held = start(token, body(wait=LONG, fingerprint=known))
    wait_until(held_now, "the sync to be held")
    assert held.is_alive()
    session = place(owner)
    answer = held.answer()
    assert [d["kernel_id"] for d in answer["desired"]] == [str(session.kernels.get().pk)]
    assert answer["fingerprint"] != known
    assert longpoll.held("node-1") == 0


def test_a_bare_hint_ends_the_wait_with_the_unchanged_state(token):
    known = sync(token, body()).json()["fingerprint"]
    held = start(token, body(wait=LONG, fingerprint=known))
    wait_until(held_now, "the sync to be held")
    hints.hint_agents(["another-node"])  # not this agent's
    services.poke_agent("node-1")
    assert held.answer()["fingerprint"] == known


def test_a_hint_sent_by_another_process_over_redis_ends_the_wait(token, settings):
    require(bool(settings.REDIS_URL), "Redis (a channel layer that crosses processes)")
    from asgiref.sync import async_to_sync
    from channels.layers import channel_layers

    known = sync(token, body()).json()["fingerprint"]
    held = start(token, body(wait=LONG, fingerprint=known))
    wait_until(held_now, "the sync to be held")
    other_process = channel_layers.make_backend("default")  # a layer instance of its own, as another process has
    async_to_sync(other_process.group_send)(hints.waiter_group("node-1"), {"type": hints.WAKE_TYPE, "agent": "node-1"})
    assert held.answer()["fingerprint"] == known


def test_a_held_sync_answers_when_its_wait_elapses(token):
    known = sync(token, body()).json()["fingerprint"]
    answer = start(token, body(wait=1, fingerprint=known)).answer()
    assert answer["fingerprint"] == known and answer["desired"] == []


def test_a_changed_desired_state_is_answered_at_once(token, owner):
    known = sync(token, body()).json()["fingerprint"]
    session = place(owner)  # while the agent was not waiting: no hint will come for it
    answer = start(token, body(wait=LONG, fingerprint=known)).answer()
    assert [d["kernel_id"] for d in answer["desired"]] == [str(session.kernels.get().pk)]
    assert answer["fingerprint"] != known


def test_a_termination_during_the_wait_answers_with_the_stop(token, owner):
    sync(token, body())
    session = place(owner)
    known = sync(token, body()).json()["fingerprint"]
    held = start(token, body(wait=LONG, fingerprint=known))
    wait_until(held_now, "the sync to be held")
    session_services.request_termination(session)
    kernel_id = str(session.kernels.get().pk)
    answer = held.answer()
    assert kernel_id in [s["kernel_id"] for s in answer["stop"]]
    assert kernel_id not in [d["kernel_id"] for d in answer["desired"]]


def test_the_heartbeat_is_recorded_when_a_held_sync_arrives(token):
    known = sync(token, body()).json()["fingerprint"]
    before = Agent.objects.get(pk="node-1").last_heartbeat
    held = start(token, body(wait=LONG, fingerprint=known))
    wait_until(held_now, "the sync to be held")
    assert Agent.objects.get(pk="node-1").last_heartbeat > before
    services.poke_agent("node-1")
    held.answer()


def test_a_held_sync_holds_no_database_connection(token):
    known = sync(token, body()).json()["fingerprint"]
    connections.close_all()
    held = start(token, body(wait=LONG, fingerprint=known))
    wait_until(held_now, "the sync to be held")
    assert held.db is not None and held.db.connection is None, "the waiting thread keeps a connection"
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:  # nothing of this database is busy but this query
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction')")
            assert cursor.fetchone()[0] == 0
    services.poke_agent("node-1")
    held.answer()


def test_the_wait_is_bounded_by_the_setting_and_half_the_heartbeat_timeout(settings):
    settings.AGENT_SYNC_MAX_WAIT = 20
    settings.AGENT_HEARTBEAT_TIMEOUT = 30
    assert longpoll.effective_wait(3600) == 15
    assert longpoll.effective_wait(4) == 4
    settings.AGENT_HEARTBEAT_TIMEOUT = 60
    assert longpoll.effective_wait(3600) == 20
    assert longpoll.effective_wait(None) == 0


def test_a_manager_that_holds_nothing_answers_at_once(token, settings):
    settings.AGENT_SYNC_MAX_WAIT = 0
    known = sync(token, body()).json()
    assert known["max_wait"] == 0
    answer = start(token, body(wait=LONG, fingerprint=known["fingerprint"])).answer()
    assert answer["fingerprint"] == known["fingerprint"]


@pytest.mark.parametrize("extra", [{"wait": -1}, {"wait": "soon"}, {"wait": 10**6}, {"fingerprint": "x" * 200},
                                   {"fingerprint": ["x"]}],
                         ids=["negative", "text", "huge", "long-fingerprint", "list-fingerprint"])
def test_a_malformed_long_poll_field_is_a_400_problem(token, extra):
    response = sync(token, body(**extra))
    assert response.status_code == 400 and slug(response) == "invalid-api-params", response.content
