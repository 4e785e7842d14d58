"""The agent API on the manager: registration, capacity, idempotent replay,
desired state, events, shutdown, liveness, and refusals that record nothing."""
import copy
import json
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from agents import services
from agents.models import Agent, AgentStatus, Image, ScalingGroup
from helpers import slug
from sessions import services as session_services
from sessions.models import Kernel, Session

pytestmark = pytest.mark.django_db


@pytest.fixture
def group(defaults):
    return services.ensure_default_scaling_group()


@pytest.fixture
def group_token(group):
    return services.issue_token("nodes", scaling_group=group)[1]


def body(agent_id="node-1", **overrides):
    payload = {
        "agent_id": agent_id, "scaling_group": "default", "region": "local", "address": "127.0.0.1",
        "version": "0.1.0", "architecture": "x86_64", "backend": "docker",
        "capacity": {"cpu": "4", "mem": "8589934592"}, "slot_types": {"cpu": "count", "mem": "bytes"},
        "devices": [], "images": [{"name": "bai-test/http:1.0", "digest": "sha256:abc", "size": 1000,
                                   "labels": {"ai.backend.kernelspec": "1",
                                              "ai.backend.service-ports": "web:http:8080,echo:tcp:9000",
                                              "ai.backend.resource.min.cpu": "0.1",
                                              "ai.backend.resource.min.mem": "32m"}}],
        "stats": {"cpu_util": "3.5", "mem_used": "1048576"}, "kernels": [],
    }
    payload.update(overrides)
    return payload


def post(client, path, token, payload):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return client.post(path, data, content_type="application/json", **headers)


def sync(client, token, payload):
    return post(client, "/agent-api/v1/sync", token, payload)


def test_an_unknown_agent_registers_on_its_first_sync(client, group_token):
    response = sync(client, group_token, body())
    assert response.status_code == 200, response.content
    agent = Agent.objects.get(pk="node-1")
    assert agent.status == AgentStatus.ALIVE and agent.scaling_group_id == "default"
    assert agent.available_slots == {"cpu": "4", "mem": "8589934592"}
    assert agent.occupied_slots == {} or all(v == "0" for v in agent.occupied_slots.values())
    answer = response.json()
    assert isinstance(answer.pop("fingerprint"), str) and answer.pop("max_wait") >= 0  # the long poll's fields
    assert answer == {"agent_id": "node-1", "status": "ALIVE", "schedulable": True, "sync_interval": 5,
                      "desired": [], "stop": [], "restart": [], "want_logs": []}


def test_local_images_are_recorded_with_what_their_labels_say(client, group_token):
    sync(client, group_token, body())
    image = Image.objects.get(name="bai-test/http:1.0")
    assert image.is_local and image.repository == "bai-test/http" and image.tag == "1.0"
    assert [p["name"] for p in image.service_ports] == ["web", "echo"]
    assert image.resources["cpu"]["min"] == "0.1" and image.resources["mem"]["min"] == str(32 * 2**20)
    assert list(image.agents.values_list("pk", flat=True)) == ["node-1"]


def test_a_later_sync_updates_capacity(client, group_token):
    sync(client, group_token, body())
    sync(client, group_token, body(capacity={"cpu": "8", "mem": "17179869184", "cuda.device": "2"},
                                   slot_types={"cpu": "count", "mem": "bytes", "cuda.device": "count"}))
    agent = Agent.objects.get(pk="node-1")
    assert agent.available_slots == {"cpu": "8", "mem": "17179869184", "cuda.device": "2"}
    from backendai.services import known_slot_types

    assert known_slot_types()["cuda.device"] == "count"


def _snapshot():
    agents = list(Agent.objects.values("id", "status", "available_slots", "occupied_slots", "scaling_group_id"))
    kernels = list(Kernel.objects.values("id", "status", "status_history", "container_id", "service_ports"))
    sessions = list(Session.objects.values("id", "status", "status_history"))
    return agents, kernels, sessions, Image.objects.count()


@pytest.fixture
def placed(client, group_token, owner):
    sync(client, group_token, body())
    agent = Agent.objects.get(pk="node-1")
    session = session_services.create_session_on_agent(
        user=owner, image="bai-test/http:1.0", agent=agent, slots={"cpu": "1", "mem": "268435456"},
        environ={"FOO": "bar"}, service_ports=[{"name": "web", "protocol": "http", "container_ports": [8080]}])
    return session, session.kernels.get()


def test_the_answer_lists_the_kernels_the_manager_wants(client, group_token, placed):
    session, kernel = placed
    answer = sync(client, group_token, body()).json()
    assert [d["kernel_id"] for d in answer["desired"]] == [str(kernel.pk)]
    spec = answer["desired"][0]
    assert spec["image"] == "bai-test/http:1.0" and spec["slots"] == {"cpu": "1", "mem": "268435456"}
    assert spec["environ"] == {"FOO": "bar"} and spec["session_id"] == str(session.pk)
    assert spec["service_ports"] == [{"name": "web", "protocol": "http", "container_ports": [8080]}]
    assert Agent.objects.get(pk="node-1").occupied_slots == {"cpu": "1", "mem": "268435456"}


def test_replaying_the_same_sync_changes_nothing(client, group_token, placed):
    _, kernel = placed
    report = body(kernels=[{"kernel_id": str(kernel.pk), "status": "RUNNING", "container_id": "c0ffee",
                            "service_ports": [{"name": "web", "protocol": "http", "container_ports": [8080],
                                               "host_ports": [30001]}]}])
    first = sync(client, group_token, report).json()
    before = _snapshot()
    second = sync(client, group_token, copy.deepcopy(report)).json()
    assert _snapshot() == before and first == second
    kernel.refresh_from_db()
    assert kernel.status == "RUNNING" and kernel.service_ports[0]["host_ports"] == [30001]
    assert kernel.session.status == "RUNNING"


def test_events_move_a_kernel_through_its_lifecycle(client, group_token, placed):
    session, kernel = placed
    for status in ("PULLING", "PREPARING", "RUNNING"):
        response = post(client, "/agent-api/v1/events", group_token,
                        {"agent_id": "node-1", "events": [{"kernel_id": str(kernel.pk), "status": status}]})
        assert response.status_code == 200 and response.json() == {"accepted": 1}
    session.refresh_from_db()
    assert session.status == "RUNNING"
    assert [h["status"] for h in session.status_history] == ["PENDING", "SCHEDULED", "PULLING", "PREPARING", "RUNNING"]


def test_termination_is_ordered_and_the_exit_code_recorded(client, group_token, placed):
    session, kernel = placed
    sync(client, group_token, body(kernels=[{"kernel_id": str(kernel.pk), "status": "RUNNING"}]))
    session_services.request_termination(session)
    answer = sync(client, group_token, body(kernels=[{"kernel_id": str(kernel.pk), "status": "RUNNING"}])).json()
    assert answer["desired"] == [] and answer["stop"] == [{"kernel_id": str(kernel.pk), "reason": "user-requested"}]
    sync(client, group_token, body(kernels=[{"kernel_id": str(kernel.pk), "status": "TERMINATED", "exit_code": 137,
                                             "last_logs": "bye\n"}]))
    kernel.refresh_from_db()
    session.refresh_from_db()
    assert (kernel.status, kernel.exit_code, kernel.container_log) == ("TERMINATED", 137, "bye\n")
    assert session.status == "TERMINATED" and session.terminated_at is not None
    assert Agent.objects.get(pk="node-1").occupied_slots == {}


def test_an_illegal_report_is_ignored(client, group_token, placed):
    session, kernel = placed
    sync(client, group_token, body(kernels=[{"kernel_id": str(kernel.pk), "status": "TERMINATED", "exit_code": 0}]))
    sync(client, group_token, body(kernels=[{"kernel_id": str(kernel.pk), "status": "PULLING"}]))
    kernel.refresh_from_db()
    assert kernel.status == "TERMINATED" and kernel.status_info == "self-terminated"


def test_a_container_the_manager_does_not_know_is_ordered_to_stop(client, group_token):
    stranger = str(uuid.uuid4())
    answer = sync(client, group_token, body(kernels=[{"kernel_id": stranger, "status": "RUNNING"}])).json()
    assert answer["stop"] == [{"kernel_id": stranger, "reason": "terminated-unknown-container"}]


@pytest.mark.parametrize("token", [None, "bat_wrong", "garbage"])
def test_a_bad_token_is_refused_and_nothing_is_recorded(client, group, token):
    response = sync(client, token, body())
    assert response.status_code == 401 and slug(response) == "auth-failed"
    assert not Agent.objects.exists()


def test_a_revoked_token_is_refused(client, group):
    token, raw = services.issue_token("old", scaling_group=group)
    services.revoke_tokens([token])
    assert sync(client, raw, body()).status_code == 401
    assert not Agent.objects.exists()


def test_an_agent_token_is_bound_to_its_agent_id(client, group):
    _, raw = services.issue_token("one", agent_id="node-7")
    refused = sync(client, raw, body("node-8"))
    assert refused.status_code == 403 and slug(refused) == "generic-forbidden"
    assert sync(client, raw, body("node-7")).status_code == 200
    assert list(Agent.objects.values_list("pk", flat=True)) == ["node-7"]


def test_a_group_token_cannot_register_into_another_group(client, group):
    ScalingGroup.objects.create(name="gpu")
    _, raw = services.issue_token("default nodes", scaling_group=group)
    response = sync(client, raw, body(scaling_group="gpu"))
    assert response.status_code == 403 and not Agent.objects.exists()


def test_an_unknown_scaling_group_is_refused(client, group):
    _, raw = services.issue_token("one", agent_id="node-1")
    response = sync(client, raw, body(scaling_group="nope"))
    assert response.status_code == 404 and slug(response) == "object-not-found"
    assert not Agent.objects.exists()


@pytest.mark.parametrize("payload", [
    "{not json",
    {"agent_id": "node-1"},
    body(agent_id="bad id with spaces"),
    body(capacity={"cpu": "lots"}),
    body(capacity={"cpu": "-1"}),
    body(kernels=[{"kernel_id": "not-a-uuid", "status": "RUNNING"}]),
    body(kernels=[{"kernel_id": str(uuid.uuid4()), "status": "DANCING"}]),
])
def test_a_malformed_body_is_refused_with_problem_json_and_nothing_recorded(client, group_token, payload):
    response = sync(client, group_token, payload)
    assert response.status_code == 400 and slug(response) == "invalid-api-params"
    assert not Agent.objects.exists() and not Image.objects.exists()


def test_a_silent_agent_becomes_lost_and_a_sync_revives_it(client, group_token):
    sync(client, group_token, body())
    Agent.objects.filter(pk="node-1").update(last_heartbeat=timezone.now() - timedelta(seconds=31))
    assert services.mark_lost_agents(30) == 1
    agent = Agent.objects.get(pk="node-1")
    assert agent.status == AgentStatus.LOST and agent.lost_at is not None
    assert services.mark_lost_agents(30) == 0
    sync(client, group_token, body())
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ALIVE and agent.lost_at is None


def test_a_clean_shutdown_marks_the_agent_terminated(client, group_token):
    sync(client, group_token, body())
    assert post(client, "/agent-api/v1/shutdown", group_token, {"agent_id": "node-1"}).status_code == 204
    assert Agent.objects.get(pk="node-1").status == AgentStatus.TERMINATED
    sync(client, group_token, body())
    assert Agent.objects.get(pk="node-1").status == AgentStatus.ALIVE


def test_a_forced_termination_ends_the_session_at_once_and_the_agent_is_told(client, group_token, placed):
    session, kernel = placed
    sync(client, group_token, body(kernels=[{"kernel_id": str(kernel.pk), "status": "RUNNING"}]))
    session_services.request_termination(session, "force-terminated", forced=True)
    session.refresh_from_db()
    assert session.status == "TERMINATED"
    answer = sync(client, group_token, body(kernels=[{"kernel_id": str(kernel.pk), "status": "RUNNING"}])).json()
    assert answer["stop"] == [{"kernel_id": str(kernel.pk), "reason": "force-terminated"}]


def test_scheduler_options_are_validated(group):
    from django.core.exceptions import ValidationError

    group.scheduler_opts = {"allowed_session_types": ["interactive"], "pending_timeout": 60,
                            "config": {"num_retries_to_skip": 2}, "agent_selection_strategy": "concentrated"}
    group.full_clean()
    for bad in ({"allowed_session_types": ["nope"]}, {"pending_timeout": -1}, {"agent_selection_strategy": "x"},
                {"config": {"num_retries_to_skip": "two"}}, {"surprise": 1}):
        group.scheduler_opts = bad
        with pytest.raises(ValidationError):
            group.full_clean()
