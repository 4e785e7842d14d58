"""Committing a session to an image (``sessions.commit``): ``POST|GET /session/{s}/commit``,
``POST /session/{s}/imagify``, the background task that drives the agent's ``commit`` stream (played
here by a stand-in for ``KernelIO``: the stream itself is tested in ``test_kernel_io`` and end to end
in ``tests/e2e/test_commit_e2e.py``), the catalogue entry and who may start sessions from it, and the
web UI's button."""
from __future__ import annotations

import json
import re

import pytest

from accounts.models import Domain
from agents import services as agent_services
from agents.models import Agent, Image
from backendai import bgtasks
from backendai.models import BackgroundTask
from helpers import seed_http_image_and_agent
from permission_matrix import ROLES, Case, World, check, params
from sessions import commit
from sessions import services as session_services
from sessions.kernel_io import KernelIOError
from sessions.models import Session

pytestmark = pytest.mark.django_db

NAME_RE = re.compile(r"bai-test/http-commit:[0-9a-f]{8}-\d{8}-\d{6}-[0-9a-f]{4}")
OWNER_OK = {**{role: 404 for role in ROLES}, "owner": 200, "superadmin": 200}


@pytest.fixture
def node(defaults):
    group = agent_services.ensure_default_scaling_group()
    _, agent = seed_http_image_and_agent(group)
    return agent


def running_session(user, name="tocommit", status="RUNNING"):
    session = session_services.create_session_on_agent(user=user, image="bai-test/http:1.0",
                                                       agent=Agent.objects.get(pk="node-1"), slots={"cpu": "1"},
                                                       name=name)
    session.kernels.update(status="RUNNING" if status == "RUNNING" else status, kernel_host="127.0.0.1")
    Session.objects.filter(pk=session.pk).update(status=status)
    return Session.objects.get(pk=session.pk)


class FakeIO:
    """Stands in for ``KernelIO``: answers the lines in ``FakeIO.answer`` (or raises ``FakeIO.fail``)."""

    answer: list[dict] = []
    fail: KernelIOError | None = None
    opened: list["FakeIO"] = []

    def __init__(self, target, kind, fields):
        self.target, self.kind, self.fields = target, kind, fields
        self.chunks = [(json.dumps(line) + "\n").encode() for line in self.answer]
        self.closed = False
        FakeIO.opened.append(self)

    async def open(self, timeout=None):
        if self.fail is not None:
            raise self.fail
        return self

    async def read(self, timeout=None):
        return self.chunks.pop(0) if self.chunks else None

    async def close(self):
        self.closed = True


@pytest.fixture
def agent_answers(monkeypatch):
    """``agent_answers(result_labels=None)``: the fake agent commits whatever image it is asked for."""
    FakeIO.opened, FakeIO.fail = [], None
    monkeypatch.setattr(commit, "KernelIO", FakeIO)

    def answer(lines):
        FakeIO.answer = lines

    return answer


def good_answer(image, labels):
    return [{"type": "progress", "current": 0, "total": 3, "message": "reading"},
            {"type": "progress", "current": 1, "total": 3, "message": "committing"},
            {"type": "progress", "current": 3, "total": 3, "message": "done"},
            {"type": "result", "image": image, "digest": "sha256:" + "ab" * 32, "size": 123456,
             "architecture": "x86_64", "labels": {"ai.backend.service-ports": "web:http:8080", **labels}}]


def run_commit(task_id):
    """Run the queued task as the worker would, the fake agent answering with what it was asked."""
    task = BackgroundTask.objects.get(pk=task_id)
    kwargs = task.kwargs
    FakeIO.answer = good_answer(f"{kwargs['repository']}:{kwargs['tag']}", kwargs["labels"])
    return bgtasks.run(task_id)


def test_the_owner_commits_a_running_session_and_starts_a_session_from_the_registered_image(
        owner, member, node, signed, agent_answers):
    session = running_session(owner)
    response = signed(owner).post(f"/session/{session.name}/commit")
    assert response.status_code == 200, response.content
    body = response.json()
    task_id, image = body["task_id"], body["image"]
    assert NAME_RE.fullmatch(image) and image.split(":")[1].startswith(owner.pk.hex[:8])
    task = BackgroundTask.objects.get(pk=task_id)
    assert (task.name, task.owner_id, task.status) == ("session_commit", str(owner.pk), "pending")
    assert signed(owner).get(f"/session/{session.name}/commit").json()["status"] == "ongoing"

    assert run_commit(task_id) == "done"

    io = FakeIO.opened[0]
    kernel = session.kernels.get()
    assert (io.kind, io.target.kernel_id, io.target.agent_id) == ("commit", str(kernel.pk), "node-1") and io.closed
    assert io.fields["labels"] == {"ai.backend.customized-image.owner": f"user:{owner.pk}",
                                   "ai.backend.customized-image.name": image.split(":")[0],
                                   "ai.backend.customized-image.source": "bai-test/http:1.0",
                                   "ai.backend.customized-image.session": str(session.pk)}
    task.refresh_from_db()
    assert (task.current_progress, task.total_progress) == (4, 4)
    assert task.message == f"Session tocommit committed to the image {image}"
    recorded = Image.objects.get(name=image)
    assert recorded.is_local and recorded.registry_name == "" and recorded.repository == "bai-test/http-commit"
    assert recorded.config_digest == "sha256:" + "ab" * 32 and recorded.size_bytes == 123456
    assert recorded.service_ports == [{"name": "web", "protocol": "http", "container_ports": [8080]}]
    assert list(recorded.agents.values_list("pk", flat=True)) == ["node-1"]
    assert list(agent_services.customized_images(owner)) == [recorded]
    assert list(agent_services.customized_images(member)) == []

    status = signed(owner).get(f"/session/{session.pk}/commit").json()
    assert (status["status"], status["task_id"], status["image"], status["kernel"]) == (
        "done", task_id, image, str(kernel.pk))

    created = signed(owner).post("/session", {"name": "fromcommit", "image": image, "enqueueOnly": True,
                                              "config": {"resources": {"cpu": "1", "mem": "1g"}}})
    assert created.status_code == 201, created.content
    from_image = Session.objects.get(pk=created.json()["sessionId"])
    assert from_image.image == image and from_image.agent_ids == ["node-1"]  # where the image is
    refused = signed(member).post("/session", {"name": "notmine", "image": image, "enqueueOnly": True,
                                               "config": {"resources": {"cpu": "1", "mem": "1g"}}})
    assert refused.status_code == 404 and "Unknown image" in refused.json()["msg"]
    assert not Session.objects.filter(name="notmine").exists()


def test_the_agents_sync_reporting_the_committed_image_changes_nothing_in_its_entry(owner, node, agent_answers):
    session = running_session(owner)
    task_id, image = commit.start_commit(owner, owner.main_keypair, session.name)
    assert run_commit(task_id) == "done"
    before = Image.objects.filter(name=image).values().get()
    labels = before["labels"]
    agent_services.record_local_images(Agent.objects.get(pk="node-1"), [
        {"name": "bai-test/http:1.0", "digest": "sha256:" + "cd" * 32, "size": 1, "architecture": "x86_64",
         "labels": {"ai.backend.service-ports": "web:http:8080"}},
        {"name": image, "digest": "sha256:" + "ab" * 32, "size": 123456, "architecture": "x86_64", "labels": labels}])
    after = Image.objects.filter(name=image).values().get()
    assert {k: v for k, v in after.items() if k != "modified_at"} == {
        k: v for k, v in before.items() if k != "modified_at"}
    assert Image.objects.filter(name=image).count() == 1
    assert list(Image.objects.get(name=image).agents.values_list("pk", flat=True)) == ["node-1"]


def test_a_session_from_a_committed_image_goes_to_the_agents_holding_it_or_is_refused(owner, node, signed,
                                                                                     agent_answers):
    session = running_session(owner)
    task_id, image = commit.start_commit(owner, owner.main_keypair, session.name)
    assert run_commit(task_id) == "done"
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
    plain = signed(owner).post("/session", {**body, "name": "plain", "image": "bai-test/http:1.0"})
    assert plain.status_code == 201 and Session.objects.get(name="plain").agent_ids == []


def test_imagify_names_the_image_as_asked_and_validates_the_name(owner, node, signed, agent_answers):
    session = running_session(owner)
    for bad in ("", "Upper", "cr.example.com:5000/x", "x:tag", "a" * 101, "-x"):
        response = signed(owner).post(f"/session/{session.name}/imagify?image_name={bad}")
        assert response.status_code == 400, (bad, response.content)
        assert response["Content-Type"].startswith("application/problem+json")
        assert "image_name" in response.json()["msg"]
    assert signed(owner).post(f"/session/{session.name}/imagify").status_code == 400
    assert not BackgroundTask.objects.exists()
    response = signed(owner).post(f"/session/{session.name}/imagify?image_name=my/python-env")
    assert response.status_code == 200, response.content
    image = response.json()["image"]
    assert re.fullmatch(r"my/python-env:[0-9a-f]{8}-\d{8}-\d{6}-[0-9a-f]{4}", image)
    assert run_commit(response.json()["task_id"]) == "done"
    assert Image.objects.get(name=image).labels["ai.backend.customized-image.name"] == "my/python-env"


def test_only_a_running_session_on_a_docker_agent_can_be_committed_once_at_a_time(owner, node, signed,
                                                                                  agent_answers):
    pending = running_session(owner, name="notyet", status="PREPARING")
    response = signed(owner).post(f"/session/{pending.name}/commit")
    assert response.status_code == 403 and "RUNNING" in response.json()["msg"]

    local = Agent.objects.create(id="node-local", scaling_group=node.scaling_group, backend="local",
                                 available_slots={"cpu": "4"}, last_heartbeat=node.last_heartbeat)
    on_local = running_session(owner, name="onlocal")
    on_local.kernels.update(agent=local)
    response = signed(owner).post(f"/session/{on_local.name}/commit")
    assert response.status_code == 403 and "Docker" in response.json()["msg"]

    session = running_session(owner)
    first = signed(owner).post(f"/session/{session.name}/commit")
    assert first.status_code == 200
    second = signed(owner).post(f"/session/{session.name}/commit")
    assert second.status_code == 409 and second.json()["data"]["task_id"] == first.json()["task_id"]
    assert BackgroundTask.objects.count() == 1
    assert run_commit(first.json()["task_id"]) == "done"
    assert signed(owner).post(f"/session/{session.name}/commit").status_code == 200  # the first one ended


def test_a_domain_that_would_not_allow_the_committed_image_refuses_the_commit(owner, node, signed, agent_answers):
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


def test_an_agent_error_or_a_lost_link_fails_the_task_with_its_message_and_registers_nothing(owner, node,
                                                                                           agent_answers):
    session = running_session(owner)
    task_id, image = commit.start_commit(owner, owner.main_keypair, session.name)
    agent_answers([{"type": "progress", "current": 1, "total": 3, "message": "committing"},
                   {"type": "error", "reason": "commit-failed", "message": "no space left on device"}])
    assert bgtasks.run(task_id) == "failed"
    task = BackgroundTask.objects.get(pk=task_id)
    assert "no space left on device" in task.message and "node-1" in task.message
    assert FakeIO.opened[-1].closed and not Image.objects.filter(name=image).exists()

    task_id, image = commit.start_commit(owner, owner.main_keypair, session.name)
    FakeIO.fail = KernelIOError("not-supported: the local backend cannot commit")
    assert bgtasks.run(task_id) == "failed"
    assert "not-supported" in BackgroundTask.objects.get(pk=task_id).message

    FakeIO.fail = None
    task_id, image = commit.start_commit(owner, owner.main_keypair, session.name)
    agent_answers([{"type": "progress", "current": 1, "total": 3, "message": "committing"}])
    assert bgtasks.run(task_id) == "failed"
    assert "without a result" in BackgroundTask.objects.get(pk=task_id).message

    task_id, image = commit.start_commit(owner, owner.main_keypair, session.name)
    Session.objects.filter(pk=session.pk).update(status="TERMINATING")
    opened = len(FakeIO.opened)
    assert run_commit(task_id) == "failed"
    assert "not running any more" in BackgroundTask.objects.get(pk=task_id).message
    assert len(FakeIO.opened) == opened  # nothing asked of the agent
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
def test_the_commit_endpoints_answer_each_role_as_the_matrix_says(case, role, world, signed):
    check(case, role, world, signed)


def test_a_superadmins_commit_is_the_owners_image_and_the_superadmins_task(owner, superadmin, node, signed,
                                                                        agent_answers):
    session = running_session(owner)
    body = signed(superadmin).post(f"/session/{session.pk}/commit").json()
    task = BackgroundTask.objects.get(pk=body["task_id"])
    assert task.owner_id == str(superadmin.pk) and task.kwargs["labels"][commit.OWNER_LABEL] == f"user:{owner.pk}"
    assert body["image"].split(":")[1].startswith(owner.pk.hex[:8])


# --- the web UI ------------------------------------------------------------------------------------

def test_the_session_page_has_a_commit_button_that_starts_the_task_and_shows_its_page(owner, member, node, client,
                                                                                    agent_answers):
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
    assert BackgroundTask.objects.count() == 1
