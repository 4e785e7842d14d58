"""The coordinator: worker API (tokens, register, heartbeat, circuit table with
revisions), worker selection, start-service, cleanup sweeps, LOST detection."""
import time
from datetime import timedelta

import pytest
from coordinator_support import make_worker
from django.utils import timezone

from appproxy import services, tokens
from appproxy.models import Circuit, CircuitTombstone, SetupToken, Worker, WorkerStatus, WorkerToken
from helpers import problem, slug
from sessions import services as session_services
from sessions.models import Session

pytestmark = pytest.mark.django_db

SERVICE_PORTS = [{"name": "web", "protocol": "http", "container_ports": [8080], "host_ports": [31001]},
                 {"name": "echo", "protocol": "tcp", "container_ports": [9000], "host_ports": [31002]},
                 {"name": "later", "protocol": "http", "container_ports": [7000], "host_ports": []},
                 {"name": "pty", "protocol": "pty", "container_ports": [2000], "host_ports": [31003]}]


@pytest.fixture
def hint_receiver():
    """A real HTTP endpoint standing where a worker's hint URL points."""
    import json as _json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received = []
    arrived = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers["X-AppProxy-Signature"], body, _json.loads(body)))
            self.send_response(204)
            self.end_headers()
            arrived.set()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.url = f"http://127.0.0.1:{server.server_port}/v1/hint"
    server.received, server.arrived = received, arrived
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def running(agent):
    def make(user, name="s1", status="RUNNING"):
        session = session_services.create_session_on_agent(user=user, image="bai-test/http:1.0", agent=agent,
                                                           slots={"cpu": "1"}, name=name)
        Session.objects.filter(pk=session.pk).update(status=status)
        session.kernels.update(status="RUNNING", service_ports=SERVICE_PORTS, kernel_host="127.0.0.1")
        return Session.objects.get(pk=session.pk)
    return make


@pytest.fixture
def worker_token():
    return services.issue_token("tests")[1]


def worker_api(client, token, method, path, data=None):
    kwargs = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return client.generic(method, f"/appproxy-api/v1/workers/{path}", data=b"" if data is None else
                          __import__("json").dumps(data), content_type="application/json", **kwargs)


def register(client, token, name="w1", **overrides):
    body = {"frontend_mode": "port", "advertised_host": "127.0.0.1", "api_endpoint": "http://127.0.0.1:6130",
            "hint_url": "http://127.0.0.1:6130/v1/hint", "port_range": [40000, 40009], **overrides}
    return worker_api(client, token, "PUT", name, body)


# --- the worker API -------------------------------------------------------------------------

def test_registration_is_idempotent_and_hands_a_stable_secret(client, worker_token):
    first = register(client, worker_token)
    assert first.status_code == 200, first.content
    again = register(client, worker_token, advertised_host="proxy.example")
    assert again.status_code == 200
    assert first.json()["secret"] == again.json()["secret"] and len(first.json()["secret"]) >= 32
    worker = Worker.objects.get()
    assert worker.advertised_host == "proxy.example" and worker.status == "ALIVE"
    assert again.json()["worker"]["capacity"] == 10 and again.json()["permit_ttl"] > 0


@pytest.mark.parametrize("overrides, message", [
    ({"port_range": None}, "port range"),
    ({"port_range": [5, 3]}, "not a range"),
    ({"frontend_mode": "wildcard", "port_range": None}, "wildcard_domain"),
    ({"frontend_mode": "wildcard", "wildcard_domain": "apps.test", "wildcard_port": 80, "protocols": ["tcp"]},
     "raw TCP"),
    ({"frontend_mode": "mesh"}, "frontend_mode"),
    ({"api_endpoint": "not a url"}, "api_endpoint"),
])
def test_bad_registrations_are_refused_and_record_nothing(client, worker_token, overrides, message):
    response = register(client, worker_token, **overrides)
    assert response.status_code == 400 and slug(response) == "invalid-api-params"
    assert message in problem(response)["msg"]
    assert not Worker.objects.exists()


def test_token_refusals_are_problems_and_record_nothing(client):
    token, raw = services.issue_token("bound", authority="w1")
    assert slug(register(client, None)) == "auth-failed"
    assert register(client, "bpt_wrong").status_code == 401
    refused = register(client, raw, name="w2")
    assert refused.status_code == 403 and slug(refused) == "generic-forbidden"
    services.revoke_tokens([token])
    assert register(client, raw).status_code == 401
    assert not Worker.objects.exists()
    assert WorkerToken.objects.get().token_hash == services.hash_token(raw)
    assert WorkerToken.objects.get().last_used is None
    unknown = worker_api(client, services.issue_token("any")[1], "POST", "ghost/heartbeat", {})
    assert unknown.status_code == 404 and slug(unknown) == "object-not-found"


def test_the_circuit_table_syncs_incrementally_by_revision(client, worker_token, running, owner):
    register(client, worker_token)
    session = running(owner)
    empty = worker_api(client, worker_token, "GET", "w1/circuits").json()
    assert empty == {"revision": 0, "full": True, "removed": [], "circuits": []}
    web = services.start_service(owner, session, "web")
    echo = services.start_service(owner, session, "echo")
    full = worker_api(client, worker_token, "GET", "w1/circuits").json()
    assert full["full"] and [c["app"] for c in full["circuits"]] == ["web", "echo"]
    first = full["circuits"][0]
    assert first["target_host"] == "127.0.0.1" and first["target_port"] == 31001 and first["port"] == 40000
    assert first["owner_id"] == str(owner.pk) and first["open_to_public"] is False
    assert full["circuits"][1]["protocol"] == "tcp" and full["circuits"][1]["port"] == 40001
    since = full["revision"]
    assert worker_api(client, worker_token, "GET", f"w1/circuits?since={since}").json() == {
        "revision": since, "full": False, "circuits": [], "removed": []}
    services.update_circuit(Circuit.objects.get(pk=web["circuit_id"]), open_to_public=True)
    services.remove_circuits([echo["circuit_id"]], reason="test")
    delta = worker_api(client, worker_token, "GET", f"w1/circuits?since={since}").json()
    assert not delta["full"] and delta["revision"] == since + 2
    assert [c["open_to_public"] for c in delta["circuits"]] == [True]
    assert delta["removed"] == [echo["circuit_id"]]
    assert worker_api(client, worker_token, "GET", "w1/circuits?since=999").json()["full"]
    assert slug(worker_api(client, worker_token, "GET", "w1/circuits?since=x")) == "invalid-api-params"
    services.prune_tombstones(retention_seconds=0, now=timezone.now() + timedelta(seconds=1))
    assert worker_api(client, worker_token, "GET", f"w1/circuits?since={since}").json()["full"], \
        "a sync older than the pruned tombstones gets the whole table"


def test_heartbeats_revive_record_access_and_feed_the_idle_checks(client, worker_token, running, owner):
    register(client, worker_token)
    session = running(owner)
    circuit_id = services.start_service(owner, session, "web")["circuit_id"]
    Worker.objects.update(status=WorkerStatus.LOST, last_heartbeat=timezone.now() - timedelta(minutes=5))
    seen = time.time() - 5
    answer = worker_api(client, worker_token, "POST", "w1/heartbeat", {"circuits": {circuit_id: seen,
                                                                                    "not-a-circuit": seen}})
    assert answer.status_code == 200 and answer.json()["status"] == "ALIVE"
    assert Worker.objects.get().status == "ALIVE"
    circuit = Circuit.objects.get()
    assert abs(circuit.last_access.timestamp() - seen) < 0.01
    assert Session.objects.get(pk=session.pk).last_access == circuit.last_access
    worker_api(client, worker_token, "POST", "w1/heartbeat", {"circuits": {circuit_id: seen - 100}})
    assert Circuit.objects.get().last_access == circuit.last_access, "never moved back"
    bad = worker_api(client, worker_token, "POST", "w1/heartbeat", {"failed_ports": ["x"]})
    assert bad.status_code == 400


def test_a_port_the_worker_cannot_use_moves_its_circuit(client, worker_token, running, owner):
    register(client, worker_token)
    session = running(owner)
    services.start_service(owner, session, "web")
    assert Circuit.objects.get().port == 40000
    worker_api(client, worker_token, "POST", "w1/heartbeat", {"failed_ports": [40000]})
    assert Circuit.objects.get().port == 40001
    other = running(owner, name="s2")
    assert services.start_service(owner, other, "web")["app_url"] == "http://127.0.0.1:40002"


def test_silent_workers_become_lost_and_get_no_new_circuits(running, owner):
    alive = make_worker("alive")
    make_worker("silent", last_heartbeat=timezone.now() - timedelta(seconds=90))
    assert services.mark_lost_workers(timeout_seconds=30) == 1
    silent = Worker.objects.get(authority="silent")
    assert silent.status == "LOST" and silent.lost_at is not None
    assert services.mark_lost_workers(timeout_seconds=30) == 0
    assert services.pick_worker("http") == alive


# --- worker selection and ports ------------------------------------------------------------

def test_worker_selection_follows_the_reference(running, owner):
    few = make_worker("few-ports", port_range_start=40000, port_range_end=40001)
    many = make_worker("many-ports", port_range_start=41000, port_range_end=41099)
    assert services.pick_worker("http") == many, "port workers: the most free ports first"
    wildcard = make_worker("wild", mode="wildcard")
    assert services.pick_worker("http") == wildcard, "wildcard workers come first for HTTP"
    assert services.pick_worker("tcp") == many, "raw TCP needs a port worker"
    services.set_schedulable([wildcard, many], False)
    assert services.pick_worker("http") == few
    Worker.objects.filter(pk=few.pk).update(failed_ports=[40000, 40001])
    with pytest.raises(services.WorkerNotAvailable):
        services.pick_worker("http")
    group_only = make_worker("group-only", scaling_group_id="default")
    assert services.pick_worker("http", "default") == group_only
    with pytest.raises(services.WorkerNotAvailable):
        services.pick_worker("http", "elsewhere")


def test_ports_come_from_the_range_and_skip_used_ones(running, owner):
    worker = make_worker(port_range_start=40000, port_range_end=40002)
    sessions = [running(owner, name=f"s{i}") for i in range(4)]
    ports = [services.start_service(owner, s, "web")["app_url"].rsplit(":", 1)[1] for s in sessions[:3]]
    assert ports == ["40000", "40001", "40002"]
    with pytest.raises(services.WorkerNotAvailable):
        services.start_service(owner, sessions[3], "web")
    services.remove_session_circuits(sessions[1])
    assert services.start_service(owner, sessions[3], "web")["app_url"].endswith(":40001")
    assert Worker.objects.get(pk=worker.pk).occupancy == 3


def test_wildcard_circuits_get_a_subdomain(running, owner):
    make_worker("wild", mode="wildcard")
    session = running(owner)
    result = services.start_service(owner, session, "web")
    circuit = Circuit.objects.get()
    assert circuit.port is None and circuit.subdomain == f"web-{session.pk.hex[:12]}"
    assert result["app_url"] == f"http://{circuit.subdomain}.apps.test:8443"


# --- start-service -------------------------------------------------------------------------

def test_start_service_answers_the_backendai_shape_and_reuses_the_circuit(signed, running, owner):
    worker = make_worker()
    session = running(owner)
    response = signed(owner).post("/session/s1/start-service", {"app": "web", "envs": '{"A": "1"}',
                                                                "arguments": "{}", "login_session_token": None})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["wsproxy_addr"] == "http://w1:6130"
    assert body["url"] == f"http://w1:6130/setup?token={body['token']}"
    claims = tokens.verify(worker.secret, "setup", body["token"])
    assert claims.user == str(owner.pk) and claims.circuit == body["circuit_id"] and claims.redirect == "/"
    assert claims.expires - time.time() <= services.setup_token_ttl() + 1
    again = signed(owner).post(f"/session/{session.pk}/start-service", {"app": "web"}).json()
    assert again["circuit_id"] == body["circuit_id"] and again["token"] != body["token"]
    circuit = Circuit.objects.get()
    assert circuit.envs == {"A": "1"} and circuit.container_port == 8080


def test_start_service_is_for_the_owner_and_admins_only(signed, running, owner, member, outsider, domain_admin,
                                                        superadmin):
    make_worker()
    session = running(owner)
    assert signed(owner).post("/session/s1/start-service", {"app": "web"}).status_code == 200
    for stranger in (member, outsider):
        refused = signed(stranger).post(f"/session/{session.pk}/start-service", {"app": "web"})
        assert refused.status_code == 404 and slug(refused) == "object-not-found"
        assert signed(stranger).post("/session/s1/start-service", {"app": "web"}).status_code == 404
    for admin in (domain_admin, superadmin):
        answer = signed(admin).post(f"/session/{session.pk}/start-service", {"app": "web"})
        assert answer.status_code == 200, answer.content
    circuit = Circuit.objects.get()
    assert circuit.owner == owner, "the circuit stays the session owner's"
    assert set(circuit.granted_users) == {str(domain_admin.pk), str(superadmin.pk)}
    assert Circuit.objects.count() == 1


@pytest.mark.parametrize("body, status, expected", [
    ({"app": "nope"}, 404, "object-not-found"),
    ({"app": "later"}, 503, "app-not-ready"),
    ({"app": "pty"}, 400, "invalid-api-params"),
    ({"app": "web", "port": 9999}, 400, "invalid-api-params"),
    ({"app": "web", "envs": "{broken"}, 400, "invalid-api-params"),
    ({"app": "web", "allowed_client_ips": ["300.1.1.1"]}, 400, "invalid-api-params"),
    ({"app": "web", "redirect": "//evil.example"}, 400, "invalid-api-params"),
    ({"app": "web", "redirect": "https://evil.example/"}, 400, "invalid-api-params"),
    ({"app": "web", "redirect": "/\\evil.example"}, 400, "invalid-api-params"),
    ({"app": "web", "redirect": "/lab\r\nSet-Cookie: stolen=1"}, 400, "invalid-api-params"),
    ({"app": "web", "redirect": "/lab\n"}, 400, "invalid-api-params"),
    ({"app": "web", "redirect": "lab"}, 400, "invalid-api-params"),
    ({}, 400, "invalid-api-params"),
])
def test_bad_start_service_requests_get_clear_errors(signed, running, owner, body, status, expected):
    make_worker()
    running(owner)
    response = signed(owner).post("/session/s1/start-service", body)
    assert response.status_code == status and slug(response) == expected, response.content
    assert problem(response)["title"]
    assert not Circuit.objects.exists()


def test_start_service_needs_a_running_session_and_a_worker(signed, running, owner):
    running(owner, name="pending", status="PREPARING")
    assert slug(signed(owner).post("/session/pending/start-service", {"app": "web"})) == "invalid-session-state"
    running(owner)
    refused = signed(owner).post("/session/s1/start-service", {"app": "web"})
    assert refused.status_code == 503 and slug(refused) == "worker-not-available"


def test_options_change_the_reused_circuit_and_a_lost_worker_hands_it_over(signed, running, owner):
    first = make_worker("first")
    session = running(owner)
    services.start_service(owner, session, "web")
    revision = Circuit.objects.get().revision
    services.start_service(owner, session, "web", open_to_public=True, allowed_client_ips="10.0.0.1, 10.1.0.0/16")
    circuit = Circuit.objects.get()
    assert circuit.open_to_public and circuit.allowed_client_ips == ["10.0.0.1/32", "10.1.0.0/16"]
    assert circuit.revision > revision
    Worker.objects.filter(pk=first.pk).update(status=WorkerStatus.LOST)
    second = make_worker("second", port_range_start=42000, port_range_end=42009)
    moved = services.start_service(owner, session, "web")
    assert Circuit.objects.get().worker == second and moved["wsproxy_addr"] == "http://second:6130"
    assert CircuitTombstone.objects.filter(worker=first, circuit_id=circuit.pk).exists()


def test_changes_are_pushed_to_the_worker_as_hints(running, owner, hint_receiver, django_capture_on_commit_callbacks):
    from appproxy import tokens

    worker = make_worker(hint_url=hint_receiver.url)
    session = running(owner)
    with django_capture_on_commit_callbacks(execute=True):
        services.start_service(owner, session, "web")
    assert hint_receiver.arrived.wait(10)
    path, signature, body, data = hint_receiver.received[-1]
    assert path == "/v1/hint" and tokens.verify_hint(worker.secret, body, signature)
    assert not tokens.verify_hint("another-secret", body, signature)
    assert data["revision"] == Worker.objects.get(pk=worker.pk).revision


# --- cleanup -------------------------------------------------------------------------------

def test_a_session_end_removes_its_circuits_with_tombstones(running, owner):
    make_worker()
    session = running(owner)
    web = services.start_service(owner, session, "web")["circuit_id"]
    services.start_service(owner, session, "echo")
    assert services.remove_session_circuits(session) == 2
    assert not Circuit.objects.exists() and Worker.objects.get().occupancy == 0
    assert CircuitTombstone.objects.filter(circuit_id=web, reason="session-ended").exists()


def test_the_heartbeat_and_the_sweep_remove_circuits_of_ended_sessions(client, worker_token, running, owner):
    register(client, worker_token)
    ended, alive = running(owner, name="ended"), running(owner, name="alive")
    services.start_service(owner, ended, "web")
    services.start_service(owner, alive, "web")
    Session.objects.filter(pk=ended.pk).update(status="TERMINATING")
    worker_api(client, worker_token, "POST", "w1/heartbeat", {})
    assert list(Circuit.objects.values_list("session__name", flat=True)) == ["alive"]
    Session.objects.filter(pk=alive.pk).update(status="TERMINATED")
    assert services.sweep_circuits()["ended"] == 1
    assert not Circuit.objects.exists()


def test_the_sweep_collects_idle_circuits_and_follows_moved_ports(running, owner):
    make_worker()
    idle, busy, public = running(owner, name="idle"), running(owner, name="busy"), running(owner, name="public")
    for session in (idle, busy):
        services.start_service(owner, session, "web")
    services.start_service(owner, public, "web", open_to_public=True)
    long_ago = timezone.now() - timedelta(hours=2)
    Circuit.objects.update(created_at=long_ago)
    Circuit.objects.filter(session=busy).update(last_access=timezone.now())
    busy.kernels.update(service_ports=[{**SERVICE_PORTS[0], "host_ports": [31555]}], kernel_host="10.0.0.7")
    result = services.sweep_circuits()
    assert result["idle"] == 1 and result["retargeted"] == 1
    assert sorted(Circuit.objects.values_list("session__name", flat=True)) == ["busy", "public"]
    moved = Circuit.objects.get(session=busy)
    assert (moved.target_host, moved.target_port) == ("10.0.0.7", 31555)


def test_the_periodic_tasks_call_the_services(running, owner):
    from appproxy import tasks

    make_worker("silent", last_heartbeat=timezone.now() - timedelta(hours=1))
    assert tasks.mark_lost_workers() == 1
    assert tasks.sweep_circuits() == {"ended": 0, "retargeted": 0, "endpoints": 0, "samples": 0, "idle": 0,
                                      "tombstones": 0, "setup_tokens": 0}


# --- setup links are redeemed once, at the coordinator ---------------------------------------

def redeem(client, token, raw, name="w1"):
    return worker_api(client, token, "POST", f"{name}/setup-tokens/redeem", {"token": raw})


def test_a_setup_link_is_redeemed_once_whichever_worker_process_asks(client, worker_token, running, owner):
    register(client, worker_token)
    worker = Worker.objects.get()
    circuit = services.create_circuit(session=running(owner), app="web", protocol="http", target_host="127.0.0.1",
                                      target_port=30001, worker=worker)
    link = services.issue_setup(circuit, owner, redirect="/lab")
    row = SetupToken.objects.get()
    assert row.token_hash == tokens.token_digest(link["token"]) and row.used_at is None
    assert link["token"] not in str(SetupToken.objects.values().get()), "only the hash is kept"

    first = redeem(client, worker_token, link["token"])
    assert first.status_code == 200, first.content
    assert first.json() == {"circuit": str(circuit.pk), "user": str(owner.pk), "redirect": "/lab",
                            "expires": first.json()["expires"]}
    used_at = SetupToken.objects.get().used_at
    assert used_at is not None
    # a restarted worker forgot everything; the row did not
    register(client, worker_token)
    again = redeem(client, worker_token, link["token"])
    assert again.status_code == 410 and slug(again) == "setup-token-used"
    assert SetupToken.objects.get().used_at == used_at


def test_forged_unknown_expired_and_foreign_setup_links_are_refused_and_change_nothing(
        client, worker_token, running, owner):
    register(client, worker_token)
    register(client, worker_token, name="w2", port_range=[40010, 40019])
    worker = Worker.objects.get(authority="w1")
    circuit = services.create_circuit(session=running(owner), app="web", protocol="http", target_host="127.0.0.1",
                                      target_port=30001, worker=worker)
    link = services.issue_setup(circuit, owner)
    never_issued = tokens.make_setup_token(worker.secret, str(circuit.pk), str(owner.pk), 60)
    refused = redeem(client, worker_token, never_issued)
    assert refused.status_code == 403 and slug(refused) == "setup-token-invalid"
    forged = tokens.make_setup_token("not-the-secret", str(circuit.pk), str(owner.pk), 60)
    assert slug(redeem(client, worker_token, forged)) == "setup-token-invalid"
    assert slug(redeem(client, worker_token, link["token"], name="w2")) == "setup-token-invalid", \
        "a link is for the worker it was issued on"
    bound = services.issue_token("bound", authority="w2")[1]
    assert slug(redeem(client, bound, link["token"])) == "generic-forbidden"
    assert slug(redeem(client, None, link["token"])) == "auth-failed"
    assert redeem(client, worker_token, "").status_code == 400
    assert SetupToken.objects.get().used_at is None, "no refusal used the link up"
    SetupToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert slug(redeem(client, worker_token, link["token"])) == "setup-token-invalid"
    assert services.sweep_circuits()["setup_tokens"] == 1 and not SetupToken.objects.exists()


# --- signing -------------------------------------------------------------------------------

def test_setup_tokens_and_permits_refuse_tampering_expiry_and_mixing():
    token = tokens.make_setup_token("k" * 32, "c1", "u1", 60, redirect="/lab")
    assert tokens.verify("k" * 32, "setup", token).redirect == "/lab"
    body, _, mac = token.partition(".")
    for bad in (token + "x", body + "." + mac[::-1], "garbage", "", "a.b.c", body[:-2] + "." + mac):
        with pytest.raises(tokens.TokenError):
            tokens.verify("k" * 32, "setup", bad)
    with pytest.raises(tokens.TokenError, match="bad signature"):
        tokens.verify("other", "setup", token)
    with pytest.raises(tokens.TokenError, match="bad signature"):
        tokens.verify("k" * 32, "permit", token)
    old = tokens.make_setup_token("k" * 32, "c1", "u1", 60, now=time.time() - 120)
    with pytest.raises(tokens.TokenError, match="expired"):
        tokens.verify("k" * 32, "setup", old)
    for target in ("https://evil.example/", "//evil.example", "/\\evil.example", "/a\r\nSet-Cookie: x=1", "/a b",
                   "", "/" + "a" * 1024):
        with pytest.raises(ValueError):
            tokens.make_setup_token("k" * 32, "c1", "u1", 60, redirect=target)
        assert tokens.redirect_problem(target)
    assert tokens.redirect_problem("/lab/tree?file=a%20b#x") is None
    permit = tokens.make_permit("k" * 32, "c1", "u1", 60)
    assert tokens.verify("k" * 32, "permit", permit).user == "u1"
    body = b'{"revision": 3}'
    header = tokens.sign_hint("k" * 32, body)
    assert tokens.verify_hint("k" * 32, body, header)
    assert not tokens.verify_hint("k" * 32, body + b" ", header)
    assert not tokens.verify_hint("k" * 32, body, tokens.sign_hint("k" * 32, body, timestamp=1))
