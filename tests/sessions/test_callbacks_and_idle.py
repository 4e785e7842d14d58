"""Callback webhooks (at least once, in order) and the idle checkers."""
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from accounts.models import KeypairResourcePolicy
from agents import services as agent_services
from agents.models import Agent
from sessions import idle, services
from sessions.models import Session

pytestmark = pytest.mark.django_db


class Receiver:
    def __init__(self, fail_first: int = 0):
        received = self.received = []
        state = {"fail": fail_first}

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if state["fail"] > 0:
                    state["fail"] -= 1
                    self.send_response(503)
                else:
                    received.append(body)
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(fail_first=0):
        made.append(Receiver(fail_first))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def placed(owner):
    group = agent_services.ensure_default_scaling_group()
    agent = Agent.objects.create(id="n1", scaling_group=group, available_slots={"cpu": "4", "mem": "8589934592"})
    return services.create_session_on_agent(user=owner, image="x/y:1", agent=agent, slots={"cpu": "1"})


def test_callbacks_deliver_each_lifecycle_event_once_in_order(placed, receiver):
    hook = receiver()
    Session.objects.filter(pk=placed.pk).update(callback_url=hook.url)
    assert services.deliver_callbacks() == 2
    assert [e["event"] for e in hook.received] == ["enqueued", "scheduled"]
    assert hook.received[0] == {"type": "session_lifecycle", "event": "enqueued", "session_id": str(placed.pk),
                                "when": placed.status_history[0]["timestamp"]}
    assert services.deliver_callbacks() == 0
    services.request_termination(placed, forced=True)
    services.deliver_callbacks()
    assert [e["event"] for e in hook.received] == ["enqueued", "scheduled", "terminated"]


def test_a_failed_callback_is_retried_on_the_next_run(placed, receiver):
    hook = receiver(fail_first=1)
    Session.objects.filter(pk=placed.pk).update(callback_url=hook.url)
    assert services.deliver_callbacks() == 0
    assert Session.objects.get(pk=placed.pk).callbacks_delivered == 0
    assert services.deliver_callbacks() == 2
    assert [e["event"] for e in hook.received] == ["enqueued", "scheduled"]


def _running(session, minutes_ago):
    when = timezone.now() - timedelta(minutes=minutes_ago)
    Session.objects.filter(pk=session.pk).update(status="RUNNING", status_changed=when, created_at=when)
    return Session.objects.select_related("access_key__resource_policy").get(pk=session.pk)


def test_the_session_lifetime_ends_old_sessions(placed):
    KeypairResourcePolicy.objects.filter(name="default").update(max_session_lifetime=600)
    session = _running(placed, minutes_ago=11)
    assert idle.report(session, timezone.now())["session_lifetime"]["remaining"] < 0
    assert [(s.pk, reason) for s, reason in idle.find_idle()] == [(session.pk, "idle-session-lifetime")]
    assert services.terminate_idle() == 1
    assert Session.objects.get(pk=session.pk).status in ("TERMINATING", "TERMINATED")


def test_the_network_timeout_counts_from_the_last_access(placed, settings):
    KeypairResourcePolicy.objects.filter(name="default").update(idle_timeout=300)
    session = _running(placed, minutes_ago=10)
    assert idle.find_idle() and idle.find_idle()[0][1] == "idle-timeout"
    Session.objects.filter(pk=session.pk).update(last_access=timezone.now() - timedelta(minutes=1))
    assert idle.find_idle() == []
    remaining = idle.report(Session.objects.get(pk=session.pk), timezone.now())["network_timeout"]["remaining"]
    assert 230 < remaining <= 240


def test_a_policy_of_zero_disables_the_network_timeout(placed, settings):
    settings.IDLE_NETWORK_TIMEOUT = 60
    KeypairResourcePolicy.objects.filter(name="default").update(idle_timeout=0)
    _running(placed, minutes_ago=10)
    assert idle.find_idle() == []


def test_utilization_below_thresholds_for_a_window_is_idle(placed, settings):
    settings.IDLE_UTILIZATION_THRESHOLDS = {"cpu_util": 5.0}
    settings.IDLE_UTILIZATION_WINDOW = 60
    session = _running(placed, minutes_ago=5)
    kernel = session.kernels.get()
    now = timezone.now()
    kernel.status_data = {"util_series": [{"t": (now - timedelta(seconds=s)).timestamp(), "cpu_util": 1.0}
                                          for s in (50, 35, 20, 5)]}
    kernel.save()
    assert [reason for _, reason in idle.find_idle(now)] == ["idle-utilization"]
    kernel.status_data["util_series"].append({"t": now.timestamp(), "cpu_util": 90.0})
    kernel.save()
    assert idle.find_idle(now) == []


def test_samples_are_kept_once_per_interval_and_within_the_window(placed, settings):
    settings.IDLE_UTILIZATION_WINDOW = 60
    kernel = placed.kernels.get()
    now = timezone.now()
    assert idle.record_sample(kernel, {"cpu_util": "3.5"}, now)
    assert not idle.record_sample(kernel, {"cpu_util": "4"}, now + timedelta(seconds=5))
    assert idle.record_sample(kernel, {"cpu_util": "4"}, now + timedelta(seconds=120))
    assert [s["cpu_util"] for s in kernel.status_data["util_series"]] == [4.0]
