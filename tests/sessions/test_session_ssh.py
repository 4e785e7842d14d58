"""SSH into sessions, the manager's half (sessions/ssh.py): the ``sshd`` service port of images labelled
``ai.backend.ssh``, the session's keypair in the kernel spec only while the kernel is being created,
``GET /session/{s}/direct-access-info`` (permission matrix, bad input) and the session page's SSH hint."""
from __future__ import annotations

import pytest
from django.urls import reverse

from agents import protocol
from agents import services as agent_services
from agents.models import Agent, Image
from helpers import problem, seed_http_image_and_agent
from permission_matrix import Case, World, check, params
from sessions import agent_sync, ssh
from sessions.enqueue import EnqueueRequest, enqueue
from sessions.models import Kernel, Session

pytestmark = pytest.mark.django_db

SSH_IMAGE = "bai-test/ssh:1.0"
OWNER_AND_SUPERADMIN = {"owner": 200, "member": 404, "outsider": 404, "foreign_admin": 404, "superadmin": 200}


@pytest.fixture
def group(defaults):
    group = agent_services.ensure_default_scaling_group()
    seed_http_image_and_agent(group, addr="tcp://10.9.8.7:6001")
    Image.objects.create(
        name=SSH_IMAGE, repository="bai-test/ssh", tag="1.0", architecture="x86_64", is_local=True,
        labels={"ai.backend.ssh": "dropbear"},
        resources={"cpu": {"min": "0.1", "max": None}, "mem": {"min": str(32 * 2**20), "max": None}})
    return group


def start(user, name, image=SSH_IMAGE, **fields) -> Session:
    return enqueue(user, user.main_keypair, EnqueueRequest(image=image, name=name, enqueue_only=True,
                                                           resources={"cpu": "1", "mem": "256m"}, **fields)).session


def place(session: Session, status: str = "SCHEDULED", host_port: int | None = None) -> Kernel:
    """The main kernel on node-1 in ``status`` (with its sshd published on ``host_port``)."""
    kernel = session.kernels.get(cluster_role="main")
    kernel.agent = Agent.objects.get(pk="node-1")
    kernel.status = status
    kernel.kernel_host = "10.9.8.7"
    if host_port:
        kernel.service_ports = [{**p, "host_ports": [host_port]} if p["name"] == "sshd" else p
                                for p in kernel.service_ports]
    kernel.save()
    if status == "RUNNING":
        Session.objects.filter(pk=session.pk).update(status="RUNNING")
    return kernel


def desired_for(kernel: Kernel) -> dict:
    answer = agent_sync.desired_state(Agent.objects.get(pk="node-1"))
    return next(d for d in answer["desired"] if d["kernel_id"] == str(kernel.pk))


# --- the sshd service port --------------------------------------------------------------------

def test_it_gives_a_session_of_an_image_with_an_ssh_server_the_sshd_port(group, owner):
    session = start(owner, "withssh")
    ports = session.kernels.get().service_ports
    assert {"name": "sshd", "protocol": "tcp", "container_ports": [2200]} in ports


def test_it_gives_no_sshd_port_to_an_image_without_an_ssh_server(group, owner):
    session = start(owner, "nossh", image="bai-test/http:1.0")
    assert [p["name"] for p in session.kernels.get().service_ports] == ["web"]


@pytest.mark.parametrize("labels, ports", [
    ({"ai.backend.ssh": "telnet"}, []),
    ({"ai.backend.ssh": ""}, []),
    ({"ai.backend.ssh": "dropbear"}, [{"name": "sshd", "protocol": "tcp", "container_ports": [8022]}]),
    ({"ai.backend.ssh": "dropbear"}, [{"name": "x", "protocol": "preopen", "container_ports": [2200]}]),
])
def test_it_leaves_the_sshd_port_out_for_an_unknown_server_or_a_taken_name_or_port(labels, ports):
    image = Image(name="x:1", labels=labels)
    assert ssh.sshd_service_port(image, ports) is None


def test_it_starts_the_agent_side_sshd_from_the_spec_it_sends(group, owner):
    kernel = place(start(owner, "specd"))
    assert protocol.KernelSpec.from_wire(desired_for(kernel)).sshd


# --- the keypair in the spec -------------------------------------------------------------------

def test_it_sends_the_owner_keypairs_ssh_key_while_the_kernel_is_being_created(group, owner):
    kernel = place(start(owner, "keyed"))
    keypair = owner.main_keypair
    keypair.refresh_from_db()
    sent = desired_for(kernel)["ssh_keypair"]
    assert sent == {"public_key": keypair.ssh_public_key.strip() + "\n",
                    "private_key": keypair.ssh_private_key.strip() + "\n"}
    spec = protocol.KernelSpec.from_wire(desired_for(kernel))
    assert spec.ssh_keypair.public_key.startswith("ssh-ed25519 ")


def test_it_stops_sending_the_key_once_the_kernel_runs(group, owner):
    kernel = place(start(owner, "running"), status="RUNNING", host_port=30022)
    assert desired_for(kernel)["ssh_keypair"] is None


def test_it_generates_a_key_for_a_keypair_that_has_none(group, owner):
    from accounts.models import Keypair

    Keypair.objects.filter(pk=owner.main_keypair_id).update(ssh_public_key="", ssh_private_key="")
    owner.main_keypair.refresh_from_db()
    kernel = place(start(owner, "fresh"))
    keypair = Keypair.objects.get(pk=owner.main_keypair_id)
    assert keypair.ssh_public_key.startswith("ssh-ed25519 ") and "PRIVATE KEY" in keypair.ssh_private_key
    assert desired_for(kernel)["ssh_keypair"]["public_key"] == keypair.ssh_public_key.strip() + "\n"


def test_it_keeps_an_uploaded_key(group, owner, signed):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    uploaded = signed(owner).post("/auth/ssh-keypair", {"pubkey": public, "privkey": private})
    assert uploaded.status_code == 200, uploaded.content
    kernel = place(start(owner, "uploaded"))
    assert desired_for(kernel)["ssh_keypair"]["public_key"].strip() == public.strip()


def test_no_session_answer_shows_the_private_key_even_to_its_owner(group, owner, signed):
    session = start(owner, "quiet")
    place(session, status="RUNNING", host_port=30022)
    owner.main_keypair.refresh_from_db()
    body = "".join(owner.main_keypair.ssh_private_key.strip().splitlines()[1:-1])
    api = signed(owner)
    for path in (f"/session/{session.pk}", f"/session/{session.pk}/direct-access-info",
                 f"/stream/session/{session.pk}/apps"):
        response = api.get(path)
        assert response.status_code == 200, (path, response.content)
        assert body[:40] not in response.content.decode(), path


# --- GET /session/{s}/direct-access-info --------------------------------------------------------

def test_it_says_where_the_sessions_ssh_server_listens(group, owner, signed):
    session = start(owner, "direct")
    place(session, status="RUNNING", host_port=30022)
    response = signed(owner).get(f"/session/{session.name}/direct-access-info")
    assert response.status_code == 200, response.content
    assert response.json() == {"kernel_role": "COMPUTE", "session_type": "interactive", "public_host": "10.9.8.7",
                               "sshd_ports": [30022], "ssh_user": "work"}


def test_it_answers_an_empty_object_for_a_session_without_an_ssh_server(group, owner, signed):
    session = start(owner, "plain", image="bai-test/http:1.0")
    response = signed(owner).get(f"/session/{session.pk}/direct-access-info")
    assert response.status_code == 200 and response.json() == {}


@pytest.mark.parametrize("path, status", [
    ("/session/nosuchsession/direct-access-info", 404),
    ("/session/" + "x" * 200 + "/direct-access-info", 400),
    ("/session/direct/direct-access-info?owner_access_key=" + "A" * 300, 400),
])
def test_it_refuses_an_unknown_session_or_overlong_input_with_a_problem(group, owner, signed, path, status):
    start(owner, "direct")
    response = signed(owner).get(path)
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    assert problem(response)["title"]


@pytest.fixture
def world(group, owner, member, outsider, foreign_admin, superadmin):
    session = start(owner, "ownerssh")
    place(session, status="RUNNING", host_port=30022)
    users = {"owner": owner, "member": member, "outsider": outsider, "foreign_admin": foreign_admin,
             "superadmin": superadmin}
    return World(users=users, objects={"session": str(session.pk)})


CASES = [
    Case("GET /session/{owner's}/direct-access-info",
         lambda api, w, r: api.get(f"/session/{w.objects['session']}/direct-access-info"),
         OWNER_AND_SUPERADMIN, marker=lambda w: "30022"),
]


@pytest.mark.parametrize("case, role", params(CASES))
def test_direct_access_info_answers_each_role_as_the_matrix_says(case, role, world, signed):
    check(case, role, world, signed)


# --- the session page ------------------------------------------------------------------------------

def test_the_session_page_shows_the_ssh_commands_for_a_session_with_an_ssh_server(group, owner, client):
    session = start(owner, "pagessh")
    place(session, status="RUNNING", host_port=30022)
    client.force_login(owner)
    page = client.get(reverse("ui-sessions:detail", kwargs={"session_id": session.pk})).content.decode()
    assert 'id="ssh"' in page
    assert "backend.ai session ssh pagessh" in page
    assert "backend.ai session scp pagessh ./local.txt work@localhost:remote.txt" in page
    assert "30022" not in page  # never the raw host port: the CLI tunnels through the manager
    owner.main_keypair.refresh_from_db()
    assert owner.main_keypair.ssh_private_key.strip().splitlines()[1] not in page


def test_the_session_page_has_no_ssh_section_without_an_ssh_server(group, owner, client):
    session = start(owner, "pageplain", image="bai-test/http:1.0")
    client.force_login(owner)
    page = client.get(reverse("ui-sessions:detail", kwargs={"session_id": session.pk})).content.decode()
    assert 'id="ssh"' not in page

