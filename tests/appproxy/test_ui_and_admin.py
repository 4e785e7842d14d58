"""The session page's app button endpoint and the admin pages of the app proxy."""
import pytest
from django.utils import timezone

from agents import services as agent_services
from agents.models import Agent
from appproxy import services, tokens
from appproxy.models import Circuit, Worker, WorkerToken
from sessions import services as session_services
from sessions.models import Session

pytestmark = pytest.mark.django_db


@pytest.fixture
def session(defaults, owner):
    group = agent_services.ensure_default_scaling_group()
    agent = Agent.objects.create(id="node-1", scaling_group=group, available_slots={"cpu": "4"},
                                 last_heartbeat=timezone.now())
    created = session_services.create_session_on_agent(user=owner, image="bai-test/http:1.0", agent=agent,
                                                       slots={"cpu": "1"}, name="s1")
    Session.objects.filter(pk=created.pk).update(status="RUNNING")
    created.kernels.update(status="RUNNING", kernel_host="127.0.0.1", service_ports=[
        {"name": "web", "protocol": "http", "container_ports": [8080], "host_ports": [31001]}])
    return Session.objects.get(pk=created.pk)


@pytest.fixture
def worker():
    return Worker.objects.create(authority="w1", advertised_host="127.0.0.1", api_endpoint="http://127.0.0.1:6130",
                                 secret="s" * 40, protocols=["http", "tcp"], port_range_start=40000,
                                 port_range_end=40009, last_heartbeat=timezone.now())


def test_the_app_button_opens_the_app_through_the_setup_link(client, owner, session, worker):
    client.force_login(owner)
    response = client.post(f"/ui/sessions/{session.pk}/apps/web/open")
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith("http://127.0.0.1:6130/setup?token=")
    claims = tokens.verify(worker.secret, "setup", location.split("token=", 1)[1])
    assert claims.user == str(owner.pk) and claims.circuit == str(Circuit.objects.get().pk)


def test_the_app_button_is_for_the_owner_and_explains_failures(client, owner, member, session, worker):
    client.force_login(member)
    assert client.post(f"/ui/sessions/{session.pk}/apps/web/open").status_code == 404
    client.force_login(owner)
    assert client.get(f"/ui/sessions/{session.pk}/apps/web/open").status_code == 405
    missing = client.post(f"/ui/sessions/{session.pk}/apps/nope/open", follow=True)
    assert b"Could not open nope" in missing.content and b"no app" in missing.content
    client.logout()
    assert client.post(f"/ui/sessions/{session.pk}/apps/web/open")["Location"].startswith("/ui/login")
    assert not Circuit.objects.exists()


@pytest.fixture
def admin_client(client, superadmin):
    client.force_login(superadmin)
    return client


def test_every_app_proxy_admin_page_opens(admin_client, owner, session, worker):
    services.start_service(owner, session, "web")
    circuit = Circuit.objects.get()
    for url in ("/admin/appproxy/worker/", f"/admin/appproxy/worker/{worker.pk}/change/",
                "/admin/appproxy/circuit/", f"/admin/appproxy/circuit/{circuit.pk}/change/",
                "/admin/appproxy/circuit/add/", "/admin/appproxy/workertoken/", "/admin/appproxy/workertoken/add/",
                "/admin/appproxy/circuittombstone/"):
        assert admin_client.get(url).status_code == 200, url
    listing = admin_client.get("/admin/appproxy/worker/").content.decode()
    assert "127.0.0.1:40000-40009" in listing and "1 / 10" in listing
    assert "s" * 40 not in admin_client.get(f"/admin/appproxy/worker/{worker.pk}/change/").content.decode()


def test_a_worker_token_is_shown_once_and_stored_hashed(admin_client):
    response = admin_client.post("/admin/appproxy/workertoken/add/", {"name": "edge-1", "authority": "edge-1"},
                                 follow=True)
    text = response.content.decode()
    raw = text.split("Proxy worker token (shown once): ", 1)[1].split("<", 1)[0].strip()
    token = WorkerToken.objects.get()
    assert raw.startswith("bpt_") and token.token_hash == services.hash_token(raw)
    assert raw not in admin_client.get(f"/admin/appproxy/workertoken/{token.pk}/change/").content.decode()
    admin_client.post("/admin/appproxy/workertoken/", {"action": "revoke", "_selected_action": [token.pk]})
    assert services.token_for(raw) is None


def test_editing_a_circuit_in_the_admin_goes_through_the_services(admin_client, owner, session, worker):
    services.start_service(owner, session, "web")
    circuit = Circuit.objects.get()
    revision = circuit.revision
    response = admin_client.post(f"/admin/appproxy/circuit/{circuit.pk}/change/", {
        "target_host": "127.0.0.1", "target_port": "31001", "worker": worker.pk, "open_to_public": "on",
        "allowed_client_ips": "10.0.0.0/8, 192.168.1.5", "granted_users": "[]"})
    assert response.status_code == 302, response.content.decode()[:2000]
    circuit.refresh_from_db()
    assert circuit.open_to_public and circuit.allowed_client_ips == ["10.0.0.0/8", "192.168.1.5/32"]
    assert circuit.revision > revision
    bad = admin_client.post(f"/admin/appproxy/circuit/{circuit.pk}/change/", {
        "target_host": "127.0.0.1", "target_port": "31001", "worker": worker.pk, "allowed_client_ips": "nope",
        "granted_users": "[]"})
    assert bad.status_code == 200 and "not an IP address" in bad.content.decode()
    admin_client.post("/admin/appproxy/circuit/", {"action": "remove", "_selected_action": [circuit.pk]})
    assert not Circuit.objects.exists()
    assert services.CircuitTombstone.objects.filter(circuit_id=circuit.pk, reason="removed-by-admin").exists()


def test_workers_can_be_drained_from_the_admin(admin_client, worker):
    admin_client.post("/admin/appproxy/worker/", {"action": "drain", "_selected_action": [worker.pk]})
    assert not Worker.objects.get().schedulable
    admin_client.post("/admin/appproxy/worker/", {"action": "undrain", "_selected_action": [worker.pk]})
    assert Worker.objects.get().schedulable


def test_purging_a_user_removes_the_circuits_they_own_in_other_users_sessions(signed, make_user, superadmin,
                                                                             owner, session, worker):
    from accounts.models import User, UserRole
    from appproxy.models import CircuitTombstone

    opener = make_user("opener@example.com", role=UserRole.SUPERADMIN)
    services.start_service(owner, session, "web")
    circuit = Circuit.objects.get()
    Circuit.objects.filter(pk=circuit.pk).update(owner=opener)  # as a superadmin may set it in the admin
    done = signed(superadmin).post("/admin/gql", {"query": (
        "mutation($email: String!) { purge_user(email: $email, props: {purge_shared_vfolders: false}) { ok msg } }"),
        "variables": {"email": opener.email}})
    assert done.status_code == 200 and done.json()["data"]["purge_user"]["ok"], done.content
    assert not User.objects.filter(pk=opener.pk).exists() and not Circuit.objects.exists()
    assert CircuitTombstone.objects.filter(circuit_id=circuit.pk, reason="owner-purged").exists()
    assert Session.objects.filter(pk=session.pk, status="RUNNING").exists()  # the owner's session stays
