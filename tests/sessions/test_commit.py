"""Committing a session to an image (``sessions.commit``): ``POST|GET /session/{s}/commit``,
``POST /session/{s}/imagify``, the background task that drives the agent's ``commit`` stream, the
catalogue entry and who may start sessions from it, and the web UI's button.

The agent's side is real: ``sessions.commit`` talks through ``InProcessKernelIO``
(``kernel_io_support``: ``KernelIO``'s place, the link boundary) to the agent's ``commit``
opener on a real ``DockerBackend``, which commits a real container of ``bai-test/http``
(one kernel per module: each test's session is placed on it, its main kernel taking the
container's kernel id) into a real image, removed at teardown.  A local-backend agent's
real refusal and a kernel gone from its agent are real too; the link itself is tested in
``test_kernel_io`` and end to end in ``tests/e2e/test_commit_e2e.py``.
"""
from __future__ import annotations

import re
import uuid

import pytest

from accounts.models import Domain
from agents import services as agent_services
from agents.daemon.backends.docker import LABEL_AGENT, DockerBackend
from agents.models import Agent, Image
from agents.protocol import KernelSpec
from backendai import bgtasks
from backendai.models import BackgroundTask
from helpers import seed_http_image_and_agent
from permission_matrix import ROLES, Case, World, check, params
from sessions import commit
from sessions import services as session_services
from sessions.models import Kernel, Session

from .kernel_io_support import (  # noqa: F401 - fixtures
    InProcessKernelIO,
    backend,
    kernel_io,
    local_settings,
    start_local_kernel,
)

pytestmark = pytest.mark.django_db

NAME_RE = re.compile(r"bai-test/http-commit:[0-9a-f]{8}-\d{8}-\d{6}-[0-9a-f]{4}")
OWNER_OK = {**{role: 404 for role in ROLES}, "owner": 200, "superadmin": 200}
#: The kernel id of the module's Docker kernel; a test's session placed on it takes this id.
DOCKER_KERNEL = str(uuid.uuid4())
BAI_TEST_HTTP = "bai-test/http:1.0"


@pytest.fixture
def node(defaults):
    group = agent_services.ensure_default_scaling_group()
    _, agent = seed_http_image_and_agent(group)
    return agent


def running_session(user, name="tocommit", status="RUNNING"):
    session = session_services.create_session_on_agent(user=user, image=BAI_TEST_HTTP,
                                                       agent=Agent.objects.get(pk="node-1"), slots={"cpu": "1"},
                                                       name=name)
    session.kernels.update(status="RUNNING" if status == "RUNNING" else status, kernel_host="127.0.0.1")
    Session.objects.filter(pk=session.pk).update(status=status)
    return Session.objects.get(pk=session.pk)


@pytest.fixture(scope="module")
def docker_agent(docker_client, test_images, tmp_path_factory):
    """A Docker backend (its containers labelled with an agent id of its own) running one kernel of
    ``bai-test/http``, for the whole module; removed at the end."""
    agent_id = f"pytest-commit-{uuid.uuid4().hex[:8]}"
    docker = DockerBackend(local_settings(tmp_path_factory.mktemp("commit"), agent_id), client=docker_client)
    try:
        docker.create(kernel_spec(DOCKER_KERNEL, test_images["http"]))
        yield docker
    finally:
        for container in docker_client.containers.list(all=True, filters={"label": f"{LABEL_AGENT}={agent_id}"}):
            container.remove(force=True, v=True)


def kernel_spec(kernel_id, image, session_id=None):
    return KernelSpec.from_wire({"kernel_id": kernel_id, "session_id": session_id or str(uuid.uuid4()),
                                 "image": image, "session_type": "interactive", "cluster_hostname": "main1",
                                 "slots": {"cpu": "0.5", "mem": str(2**26)}, "startup_command": None})


@pytest.fixture
def agent(node, docker_agent, docker_client, kernel_io):  # noqa: F811
    """The agent ``node-1`` served by the module's Docker backend; the images the test committed are removed."""
    kernel_io.backends["node-1"] = docker_agent
    yield docker_agent
    for session_id in Session.objects.values_list("pk", flat=True):
        for image in docker_client.images.list(filters={"label": f"{commit.SESSION_LABEL}={session_id}"}):
            for tag in image.tags:
                docker_client.images.remove(tag, force=True)


def on_the_docker_kernel(session):
    """Place the session's main kernel on the module's Docker kernel (the agent runs it under its id)."""
    Kernel.objects.filter(session=session).update(id=DOCKER_KERNEL)
    return Session.objects.get(pk=session.pk)


def committing_session(user, name="tocommit"):
    return on_the_docker_kernel(running_session(user, name))


def run_commit(task_id):
    """Run the queued task as the worker would."""
    return bgtasks.run(task_id)


def test_the_owner_commits_a_running_session_and_starts_a_session_from_the_registered_image(
        owner, member, signed, agent, kernel_io, docker_client):  # noqa: F811
    session = committing_session(owner)
    response = signed(owner).post(f"/session/{session.name}/commit")
    assert response.status_code == 200, response.content
    body = response.json()
    task_id, image = body["task_id"], body["image"]
    assert NAME_RE.fullmatch(image) and image.split(":")[1].startswith(owner.pk.hex[:8])
    task = BackgroundTask.objects.get(pk=task_id)
    assert (task.name, task.owner_id, task.status) == ("session_commit", str(owner.pk), "pending")
    assert signed(owner).get(f"/session/{session.name}/commit").json()["status"] == "ongoing"
    assert kernel_io == []  # the task does the work, not the request

    assert run_commit(task_id) == "done"

    [io] = kernel_io
    assert (io.kind, io.target.kernel_id, io.target.agent_id) == ("commit", DOCKER_KERNEL, "node-1")
    assert io.ended and io.exit_code == 0 and io.closed
    labels = {"ai.backend.customized-image.owner": f"user:{owner.pk}",
              "ai.backend.customized-image.name": image.split(":")[0],
              "ai.backend.customized-image.source": BAI_TEST_HTTP,
              "ai.backend.customized-image.session": str(session.pk)}
    assert io.fields["labels"] == labels
    made = docker_client.images.get(image)  # the real image, labelled as asked
    assert {k: made.labels.get(k) for k in labels} == labels
    task.refresh_from_db()
    assert (task.current_progress, task.total_progress) == (4, 4)
    assert task.message == f"Session tocommit committed to the image {image}"
    recorded = Image.objects.get(name=image)
    assert recorded.is_local and recorded.registry_name == "" and recorded.repository == "bai-test/http-commit"
    assert recorded.config_digest == made.id and recorded.size_bytes == made.attrs["Size"] > 0
    assert recorded.service_ports == [{"name": "web", "protocol": "http", "container_ports": [8080]},
                                      {"name": "echo", "protocol": "tcp", "container_ports": [9000]}]
    assert list(recorded.agents.values_list("pk", flat=True)) == ["node-1"]
    assert list(agent_services.customized_images(owner)) == [recorded]
    assert list(agent_services.customized_images(member)) == []

    status = signed(owner).get(f"/session/{session.pk}/commit").json()
    assert (status["status"], status["task_id"], status["image"], status["kernel"]) == (
        "done", task_id, image, DOCKER_KERNEL)

    created = signed(owner).post("/session", {"name": "fromcommit", "image": image, "enqueueOnly": True,
                                              "config": {"resources": {"cpu": "1", "mem": "1g"}}})
    assert created.status_code == 201, created.content
    from_image = Session.objects.get(pk=created.json()["sessionId"])
    assert from_image.image == image and from_image.agent_ids == ["node-1"]  # where the image is
    refused = signed(member).post("/session", {"name": "notmine", "image": image, "enqueueOnly": True,
                                               "config": {"resources": {"cpu": "1", "mem": "1g"}}})
    assert refused.status_code == 404 and "Unknown image" in refused.json()["msg"]
    assert not Session.objects.filter(name="notmine").exists()


def test_the_agents_sync_reporting_the_committed_image_changes_nothing_in_its_entry(owner, agent, docker_client):
    session = committing_session(owner)
    task_id, image = commit.start_commit(owner, owner.main_keypair, session.name)
    assert run_commit(task_id) == "done"
    before = Image.objects.filter(name=image).values().get()
    made = docker_client.images.get(image)
    agent_services.record_local_images(Agent.objects.get(pk="node-1"), [  # what the agent's sync reports
        {"name": BAI_TEST_HTTP, "digest": "sha256:" + "cd" * 32, "size": 1, "architecture": "x86_64",
         "labels": {"ai.backend.service-ports": "web:http:8080"}},
        {"name": image, "digest": made.id, "size": made.attrs["Size"], "architecture": "x86_64",
         "labels": made.labels}])
    after = Image.objects.filter(name=image).values().get()
    assert {k: v for k, v in after.items() if k != "modified_at"} == {
        k: v for k, v in before.items() if k != "modified_at"}
    assert Image.objects.filter(name=image).count() == 1
    assert list(Image.objects.get(name=image).agents.values_list("pk", flat=True)) == ["node-1"]


def test_a_session_from_a_committed_image_goes_to_the_agents_holding_it_or_is_refused(owner, signed, agent):
    session = committing_session(owner)
    task_id, image = commit.start_commit(owner, owner.main_keypair, session.name)
    assert run_commit(task_id) == "done"
    node = Agent.objects.get(pk="node-1")
    other = Agent.objects.create(id="node-2", scaling_group=node.scaling_group, available_slots={"cpu": "4"},
                                 last_heartbeat=node.last_heartbeat)
    Image.objects.get(name=image).agents.add(other)
    body = {"name": "twoagents", "image": image, "enqueueOnly": True, "config": {"resources": {"cpu": "1", "mem": "1g"}}}
    created = signed(owner).post("/session", body)
    assert created.status_code == 201, created.content
    assert Session.objects.get(pk=created.json()["sessionId"]).agent_ids == ["node-1", "node-2"]
    Image.objects.get(name=image).agents.clear()
    refused = signed(owner).post("/session", {**body, "name": "nowhere"})
    assert refused.status_code == 400 and "held only by agents outside" in refused.json()["msg"]
    assert not Session.objects.filter(name="nowhere").exists()
    plain = signed(owner).post("/session", {**body, "name": "plain", "image": BAI_TEST_HTTP})
    assert plain.status_code == 201 and Session.objects.get(name="plain").agent_ids == []


def test_imagify_names_the_image_as_asked_and_validates_the_name(owner, signed, agent, kernel_io,  # noqa: F811
                                                                 docker_client):
    session = committing_session(owner)
    for bad in ("", "Upper", "cr.example.com:5000/x", "x:tag", "a" * 101, "-x"):
        response = signed(owner).post(f"/session/{session.name}/imagify?image_name={bad}")
        assert response.status_code == 400, (bad, response.content)
        assert response["Content-Type"].startswith("application/problem+json")
        assert "image_name" in response.json()["msg"]
    assert signed(owner).post(f"/session/{session.name}/imagify").status_code == 400
    assert not BackgroundTask.objects.exists() and kernel_io == []
    response = signed(owner).post(f"/session/{session.name}/imagify?image_name=my/python-env")
    assert response.status_code == 200, response.content
    image = response.json()["image"]
    assert re.fullmatch(r"my/python-env:[0-9a-f]{8}-\d{8}-\d{6}-[0-9a-f]{4}", image)
    assert run_commit(response.json()["task_id"]) == "done"
    assert Image.objects.get(name=image).labels["ai.backend.customized-image.name"] == "my/python-env"
    assert docker_client.images.get(image).labels["ai.backend.customized-image.name"] == "my/python-env"


def test_only_a_running_session_on_a_docker_agent_can_be_committed_once_at_a_time(owner, signed, agent,
                                                                                  kernel_io):  # noqa: F811
    pending = running_session(owner, name="notyet", status="PREPARING")
    response = signed(owner).post(f"/session/{pending.name}/commit")
    assert response.status_code == 403 and "RUNNING" in response.json()["msg"]

    node = Agent.objects.get(pk="node-1")
    local = Agent.objects.create(id="node-local", scaling_group=node.scaling_group, backend="local",
                                 available_slots={"cpu": "4"}, last_heartbeat=node.last_heartbeat)
    on_local = running_session(owner, name="onlocal")
    on_local.kernels.update(agent=local)
    response = signed(owner).post(f"/session/{on_local.name}/commit")
    assert response.status_code == 403 and "Docker" in response.json()["msg"]

    session = committing_session(owner)
    first = signed(owner).post(f"/session/{session.name}/commit")
    assert first.status_code == 200
    second = signed(owner).post(f"/session/{session.name}/commit")
    assert second.status_code == 409 and second.json()["data"]["task_id"] == first.json()["task_id"]
    assert BackgroundTask.objects.count() == 1 and kernel_io == []
    assert run_commit(first.json()["task_id"]) == "done"
    assert signed(owner).post(f"/session/{session.name}/commit").status_code == 200  # the first one ended


def test_a_domain_that_would_not_allow_the_committed_image_refuses_the_commit(owner, node, signed,
                                                                             kernel_io):  # noqa: F811
    session = running_session(owner)
    Domain.objects.filter(pk=owner.domain_id).update(allowed_docker_registries=["cr.example.com"])
    response = signed(owner).post(f"/session/{session.name}/commit")
    assert response.status_code == 403 and "agent-local" in response.json()["msg"]
    Domain.objects.filter(pk=owner.domain_id).update(allowed_docker_registries=["cr.example.com", "local"],
                                                     allowed_images=["bai-test/http:*"])
    response = signed(owner).post(f"/session/{session.name}/commit")
    assert response.status_code == 403 and "does not allow the image" in response.json()["msg"]
    assert not BackgroundTask.objects.exists()
    Domain.objects.filter(pk=owner.domain_id).update(allowed_images=["bai-test/*"])
    assert signed(owner).post(f"/session/{session.name}/commit").status_code == 200
    assert kernel_io == []


# --- failures: each the agent's real answer to a real condition ---------------------------------------

def failed_with(task_id):
    assert run_commit(task_id) == "failed"
    return BackgroundTask.objects.get(pk=task_id).message


def test_a_kernel_gone_from_its_agent_fails_the_task_with_the_agents_message_and_registers_nothing(
        owner, agent, kernel_io):  # noqa: F811
    session = running_session(owner)  # its kernel id runs nowhere on the agent
    task_id, image = commit.start_commit(owner, owner.main_keypair, session.name)
    message = failed_with(task_id)
    assert "node-1" in message and "kernel-not-running:" in message and str(session.kernels.get().pk) in message
    assert kernel_io[-1].kind == "commit" and kernel_io[-1].closed
    assert not Image.objects.filter(name=image).exists()
    assert signed_status(owner, session)["status"] == "failed"


def test_a_kernel_that_stops_while_it_is_committed_fails_the_task_with_the_agents_error_line(
        owner, agent, kernel_io, docker_client, test_images, monkeypatch):  # noqa: F811
    session = running_session(owner, "stopping")
    kernel_id = str(session.kernels.get().pk)
    state = agent.create(kernel_spec(kernel_id, test_images["http"], str(session.pk)))
    opened = InProcessKernelIO.open

    async def open_then_the_kernel_stops(self, timeout=None):  # times the real stop: after the agent's opener
        await opened(self, timeout)
        docker_client.containers.get(state.container_id).kill()
        return self

    monkeypatch.setattr(InProcessKernelIO, "open", open_then_the_kernel_stops)
    task_id, image = commit.start_commit(owner, owner.main_keypair, session.name)
    message = failed_with(task_id)
    assert message == f"The commit failed on agent node-1: kernel {kernel_id} stopped before the commit"
    assert kernel_io[-1].closed and not Image.objects.filter(name=image).exists()
    assert not docker_client.images.list(filters={"reference": image})


def test_a_local_backend_agent_refuses_the_commit_and_the_task_fails_with_its_reason(
        owner, node, backend, kernel_io):  # noqa: F811
    """The agent serving ``node-1`` is a local-process one (the catalogue still says Docker): its real opener
    refuses before any work."""
    session = running_session(owner)
    start_local_kernel(backend, session)
    task_id, image = commit.start_commit(owner, owner.main_keypair, session.name)
    message = failed_with(task_id)
    assert "not-supported: the local backend cannot commit" in message
    assert kernel_io[-1].endpoint is None and not Image.objects.filter(name=image).exists()


def test_a_stream_that_ends_without_a_result_fails_the_task(owner, agent, kernel_io, monkeypatch):  # noqa: F811
    """Fault injected at the link boundary (the real agent always ends with a result or an error line):
    the stream ends after the agent's first line."""
    session = committing_session(owner)
    read = InProcessKernelIO.read

    async def ends_after_the_first_line(self, timeout=None):
        if getattr(self, "lines_read", 0) >= 1:
            self.ended, self.exit_code = True, 0
            return None
        self.lines_read = 1
        chunk = await read(self, timeout)
        return chunk.split(b"\n", 1)[0] + b"\n"

    monkeypatch.setattr(InProcessKernelIO, "read", ends_after_the_first_line)
    task_id, image = commit.start_commit(owner, owner.main_keypair, session.name)
    assert "without a result" in failed_with(task_id)
    assert not Image.objects.filter(name=image).exists()


def test_no_agent_on_the_link_fails_the_task_with_the_links_message(owner, node, settings):
    """The real ``KernelIO`` (no ``kernel_io`` fixture here): nobody serves the agent's group."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.STREAM_OPEN_TIMEOUT = 0.3
    session = running_session(owner)
    task_id, image = commit.start_commit(owner, owner.main_keypair, session.name)
    message = failed_with(task_id)
    assert message.startswith("The commit failed on agent node-1: agent node-1 did not open the stream")
    assert not Image.objects.filter(name=image).exists()


def test_a_session_no_longer_running_fails_the_task_before_asking_the_agent(owner, node, signed,
                                                                           kernel_io):  # noqa: F811
    session = running_session(owner)
    task_id, _ = commit.start_commit(owner, owner.main_keypair, session.name)
    Session.objects.filter(pk=session.pk).update(status="TERMINATING")
    assert "not running any more" in failed_with(task_id)
    assert kernel_io == []  # nothing asked of the agent
    assert signed_status(owner, session)["status"] == "failed"


def signed_status(user, session):
    return commit.commit_status(user, user.main_keypair, str(session.pk))


def test_a_session_never_committed_reports_clean(owner, node, signed):
    session = running_session(owner)
    body = signed(owner).get(f"/session/{session.name}/commit").json()
    assert body == {"status": "clean", "kernel": str(session.kernels.get().pk), "session_id": str(session.pk)}


# --- who may ---------------------------------------------------------------------------------------

@pytest.fixture
def world(owner, member, outsider, foreign_admin, superadmin, node):
    session = running_session(owner)
    return World(users={"owner": owner, "member": member, "outsider": outsider, "foreign_admin": foreign_admin,
                        "superadmin": superadmin}, objects={"session": str(session.pk)})


def tasks(world):
    return BackgroundTask.objects.count()


CASES = [
    Case("POST /session/{owner's}/commit", lambda api, w, r: api.post(f"/session/{w.objects['session']}/commit"),
         OWNER_OK, unchanged=tasks),
    Case("POST /session/{owner's}/imagify",
         lambda api, w, r: api.post(f"/session/{w.objects['session']}/imagify?image_name=mine"), OWNER_OK,
         unchanged=tasks),
    Case("GET /session/{owner's}/commit", lambda api, w, r: api.get(f"/session/{w.objects['session']}/commit"),
         OWNER_OK, marker=lambda w: str(Session.objects.get(pk=w.objects["session"]).kernels.get().pk)),
]


@pytest.mark.parametrize("case,role", params(CASES))
def test_the_commit_endpoints_answer_each_role_as_the_matrix_says(case, role, world, signed, kernel_io):  # noqa: F811
    check(case, role, world, signed)
    assert kernel_io == []  # a commit's work is its task's


def test_a_superadmins_commit_is_the_owners_image_and_the_superadmins_task(owner, superadmin, node, signed,
                                                                        kernel_io):  # noqa: F811
    session = running_session(owner)
    body = signed(superadmin).post(f"/session/{session.pk}/commit").json()
    task = BackgroundTask.objects.get(pk=body["task_id"])
    assert task.owner_id == str(superadmin.pk) and task.kwargs["labels"][commit.OWNER_LABEL] == f"user:{owner.pk}"
    assert body["image"].split(":")[1].startswith(owner.pk.hex[:8])
    assert kernel_io == []


# --- the web UI ------------------------------------------------------------------------------------

def test_the_session_page_has_a_commit_button_that_starts_the_task_and_shows_its_page(owner, member, node, client,
                                                                                    kernel_io):  # noqa: F811
    session = running_session(owner)
    client.force_login(owner)
    page = client.get(f"/ui/sessions/{session.pk}/")
    assert page.status_code == 200
    assert b'id="commit-session"' in page.content and f"/ui/sessions/{session.pk}/commit/".encode() in page.content
    response = client.post(f"/ui/sessions/{session.pk}/commit/")
    task = BackgroundTask.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/ui/tasks/{task.pk}/"
    assert client.get(response["Location"]).status_code == 200
    page = client.get(f"/ui/sessions/{session.pk}/")
    assert b"in progress" in page.content and f"/ui/tasks/{task.pk}/".encode() in page.content
    assert b'id="commit-session" disabled' in page.content

    client.force_login(member)
    assert client.post(f"/ui/sessions/{session.pk}/commit/").status_code == 404
    assert BackgroundTask.objects.count() == 1 and kernel_io == []
