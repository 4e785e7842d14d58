"""Callback webhooks (at least once, in order) and the idle checkers."""
import ipaddress
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
    """A real HTTP server on loopback that records what callbacks POST to it."""

    def __init__(self, fail_first: int = 0, redirect_to: str | None = None):
        received = self.received = []
        hosts = self.hosts = []
        state = {"fail": fail_first}

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hosts.append(self.headers["Host"])
                if redirect_to:
                    self.send_response(307)
                    self.send_header("Location", redirect_to)
                elif state["fail"] > 0:
                    state["fail"] -= 1
                    self.send_response(503)
                else:
                    received.append(body)
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(settings):
    # the receivers listen on loopback, which callbacks may reach only when the operator allows it
    settings.CALLBACK_ALLOWED_NETWORKS = [ipaddress.ip_network("127.0.0.0/8")]
    made = []

    def make(fail_first=0, redirect_to=None):
        made.append(Receiver(fail_first, redirect_to))
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


def test_a_failed_callback_is_retried_after_its_backoff(placed, receiver, settings):
    hook = receiver(fail_first=1)
    Session.objects.filter(pk=placed.pk).update(callback_url=hook.url)
    now = timezone.now()
    assert services.deliver_callbacks(now=now) == 0
    session = Session.objects.get(pk=placed.pk)
    assert session.callbacks_delivered == 0 and session.callback_attempts == 1
    assert session.callback_last_error == "HTTP 503"
    assert session.callback_next_attempt_at == now + timedelta(seconds=settings.CALLBACK_BACKOFF_BASE)
    assert services.deliver_callbacks(now=now + timedelta(seconds=1)) == 0  # still backing off
    assert services.deliver_callbacks(now=session.callback_next_attempt_at) == 2
    assert [e["event"] for e in hook.received] == ["enqueued", "scheduled"]
    session = Session.objects.get(pk=placed.pk)
    assert (session.callback_attempts, session.callback_next_attempt_at, session.callback_last_error) == (0, None, "")


def _other_session(owner, name):
    agent = Agent.objects.get(id="n1")
    return services.create_session_on_agent(user=owner, image="x/y:1", agent=agent, slots={"cpu": "1"}, name=name)


@pytest.mark.parametrize("bad_url", ["http://[::1", "ftp://example.com/hook", "http:///nohost", "http://exa mple.com/"])
def test_a_malformed_legacy_url_never_stops_other_sessions_callbacks(placed, owner, receiver, bad_url):
    hook = receiver()
    Session.objects.filter(pk=placed.pk).update(callback_url=bad_url)  # stored before URLs were checked
    good = _other_session(owner, "good-one")
    Session.objects.filter(pk=good.pk).update(callback_url=hook.url)
    assert services.deliver_callbacks() == 2
    assert {e["session_id"] for e in hook.received} == {str(good.pk)}
    bad = Session.objects.get(pk=placed.pk)
    assert bad.callback_gave_up_at is not None and bad.callback_attempts == 1
    assert bad.callback_last_error.startswith("invalid callback URL")
    assert services.deliver_callbacks() == 0  # given up: not tried again every few seconds


def test_an_unexpected_error_in_one_delivery_is_recorded_and_the_batch_goes_on(placed, owner, receiver, monkeypatch):
    hook = receiver()
    good = _other_session(owner, "good-one")
    Session.objects.filter(pk__in=[placed.pk, good.pk]).update(callback_url=hook.url)
    real = services._post_callback

    def flaky(client, session, body):
        if session.pk == placed.pk:
            raise RuntimeError("boom")
        return real(client, session, body)

    monkeypatch.setattr(services, "_post_callback", flaky)
    assert services.deliver_callbacks() == 2
    assert {e["session_id"] for e in hook.received} == {str(good.pk)}
    failed = Session.objects.get(pk=placed.pk)
    assert failed.callback_attempts == 1 and failed.callback_last_error == "internal error"


def test_loopback_is_refused_by_default(placed, receiver, settings):
    hook = receiver()
    settings.CALLBACK_ALLOWED_NETWORKS = []
    Session.objects.filter(pk=placed.pk).update(callback_url=hook.url)
    assert services.deliver_callbacks() == 0
    assert hook.hosts == []  # never connected
    session = Session.objects.get(pk=placed.pk)
    assert "may not reach" in session.callback_last_error and session.callbacks_delivered == 0


def test_only_the_allowed_networks_are_reached_when_the_setting_is_set(placed, receiver, settings):
    hook = receiver()
    settings.CALLBACK_ALLOWED_NETWORKS = [ipaddress.ip_network("10.0.0.0/8")]
    Session.objects.filter(pk=placed.pk).update(callback_url=hook.url)
    assert services.deliver_callbacks() == 0 and hook.hosts == []
    settings.CALLBACK_ALLOWED_NETWORKS = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32")]
    Session.objects.filter(pk=placed.pk).update(callback_next_attempt_at=None)
    assert services.deliver_callbacks() == 2


def test_a_redirect_is_not_followed_and_counts_as_a_failure(placed, receiver):
    target = receiver()
    hook = receiver(redirect_to=target.url.replace("http://", "https://"))
    Session.objects.filter(pk=placed.pk).update(callback_url=hook.url)
    assert services.deliver_callbacks() == 0
    assert len(hook.hosts) == 1 and target.hosts == []
    session = Session.objects.get(pk=placed.pk)
    assert session.callback_last_error.startswith("HTTP 307") and session.callbacks_delivered == 0


def test_a_host_name_is_resolved_checked_and_connected_to_at_the_checked_address(placed, receiver):
    hook = receiver()
    url, headers, _ = services.callback_target(f"http://localhost:{hook.port}/hook")
    assert str(url) == f"http://127.0.0.1:{hook.port}/hook" and headers == {"Host": f"localhost:{hook.port}"}
    Session.objects.filter(pk=placed.pk).update(callback_url=f"http://localhost:{hook.port}/hook")
    assert services.deliver_callbacks() == 2
    assert hook.hosts == [f"localhost:{hook.port}"] * 2  # the original Host header


def test_a_host_name_with_any_forbidden_address_is_refused(placed, receiver, settings):
    with pytest.raises(services.CallbackRefused, match="169.254.169.254"):
        services.checked_callback_address("rebind.example.test", ["127.0.0.1", "169.254.169.254"])
    hook = receiver()
    settings.CALLBACK_ALLOWED_NETWORKS = [ipaddress.ip_network("10.0.0.0/8")]
    Session.objects.filter(pk=placed.pk).update(callback_url=f"http://localhost:{hook.port}/hook")
    assert services.deliver_callbacks() == 0
    assert hook.hosts == []
    assert "127.0.0.1" in Session.objects.get(pk=placed.pk).callback_last_error


def test_failures_back_off_exponentially_and_give_up_after_the_last_attempt(placed, receiver, settings):
    hook = receiver(fail_first=100)
    settings.CALLBACK_MAX_ATTEMPTS = 4
    Session.objects.filter(pk=placed.pk).update(callback_url=hook.url)
    now = timezone.now()
    waits = []
    for attempt in range(1, 5):
        services.deliver_callbacks(now=now)
        session = Session.objects.get(pk=placed.pk)
        assert session.callback_attempts == attempt
        if session.callback_next_attempt_at is not None:
            waits.append((session.callback_next_attempt_at - now).total_seconds())
            now = session.callback_next_attempt_at
    base = settings.CALLBACK_BACKOFF_BASE
    assert waits == [base, base * 2, base * 4]
    assert session.callback_gave_up_at is not None and session.callback_last_error == "HTTP 503"
    assert services.deliver_callbacks(now=now + timedelta(days=1)) == 0
    assert len(hook.hosts) == 4


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


def test_an_https_callback_is_pinned_to_the_checked_address_with_its_name_for_tls(settings):
    settings.CALLBACK_ALLOWED_NETWORKS = [ipaddress.ip_network("127.0.0.0/8")]
    url, headers, extensions = services.callback_target("https://LocalHost:8443/x?y=1")
    assert str(url) == "https://127.0.0.1:8443/x?y=1"
    assert headers == {"Host": "localhost:8443"} and extensions == {"sni_hostname": "localhost"}
