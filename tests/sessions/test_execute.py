"""Executing code in a session, manager side: ``POST /session/{s}`` (validation, the permission
matrix, errors, the query counter), ``/complete``, ``/interrupt`` and the ``/stream/session/{s}/execute``
websocket loop.

Nothing here is played: ``sessions.execution`` talks through ``InProcessKernelIO``
(``kernel_io_support``: ``KernelIO``'s place, the link boundary) to the agent's real
``execute`` opener, which runs the real in-kernel code runner in a real local-backend
kernel (an image without a code runtime: a real Docker kernel of ``bai-test/shell``).
Refusals are real conditions: an unknown run, a kernel that is gone, too many runs, too
many runners (the agent's bound lowered to 1), no agent on the link (the real
``KernelIO`` times out), a link that drops (the real link consumer).  The official client
end to end: ``tests/e2e/test_execute_client.py``.
"""
from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from agents.daemon import execution as agent_execution
from agents.daemon.backends.docker import LABEL_AGENT, DockerBackend
from agents.models import Agent
from agents.protocol import KernelSpec
from permission_matrix import Case, World, check, params
from sessions import execution
from sessions import services as session_services
from sessions.kernel_io import KernelIOError
from sessions.models import Session
from sessions.streams import http_target

from .kernel_io_support import backend, kernel_io, local_settings, start_local_kernel  # noqa: F401 - fixtures
from .test_terminal_consumers import (  # noqa: F401 - fixtures and helpers
    agent_frame,
    agent_link,
    client,
    node,
    run,
    running_session,
)

pytestmark = pytest.mark.django_db(transaction=True)

COMPLETE_OPTIONS = {"row": 0, "col": 3, "line": "pri", "post": ""}
#: Prints "a", then waits until the test creates the file ``go`` in the work directory.
WAIT_FOR_GO = 'import os, time\nprint("a", flush=True)\nwhile not os.path.exists("go"):\n    time.sleep(0.02)\n'
LONG = 'import time\nprint("started", flush=True)\ntime.sleep(60)'


@pytest.fixture(autouse=True)
def _in_memory_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture
def live(backend, kernel_io):  # noqa: F811
    """``live(user, name)``: a RUNNING session whose main kernel runs in the local backend."""
    def make(user, name):
        session = running_session(user, name)
        session.work = start_local_kernel(backend, session)
        return session

    return make


def ids(session):
    return str(session.pk), str(session.kernels.get().pk)


def queries(session):
    return Session.objects.get(pk=session.pk).num_queries


def modes(kernel_io):  # noqa: F811
    return [io.fields["mode"] for io in kernel_io]


@pytest.fixture
def world(owner, member, outsider, foreign_admin, superadmin, node, live):  # noqa: F811
    session = live(owner, "execsess")
    users = {"owner": owner, "member": member, "outsider": outsider, "foreign_admin": foreign_admin,
             "superadmin": superadmin}
    return World(users=users, objects={"session": str(session.pk), "kernel": str(session.kernels.get().pk)})


def counters(world):
    return tuple(Session.objects.filter(pk=world.objects["session"]).values_list("num_queries", "last_access").get())


OWNER_AND_SUPERADMIN = {"owner": 200, "member": 404, "outsider": 404, "foreign_admin": 404, "superadmin": 200}
CASES = [
    Case("POST /session/{owner's} (query)",
         lambda api, w, r: api.post(f"/session/{w.objects['session']}", {
             "mode": "query", "code": 'import os\nprint("ran in", os.environ["BACKENDAI_KERNEL_ID"])',
             "runId": "r1"}),
         OWNER_AND_SUPERADMIN, marker=lambda w: f"ran in {w.objects['kernel']}", unchanged=counters),
    Case("POST /session/{owner's} (batch)",
         lambda api, w, r: api.post(f"/session/{w.objects['session']}", {
             "mode": "batch", "code": "", "runId": None,
             "options": {"clean": None, "build": "echo built", "buildLog": False, "exec": "echo ran"}}),
         OWNER_AND_SUPERADMIN, unchanged=counters),
    Case("POST /session/{owner's}/complete",
         lambda api, w, r: api.post(f"/session/{w.objects['session']}/complete", {
             "code": "pri", "options": COMPLETE_OPTIONS}),
         OWNER_AND_SUPERADMIN, marker=lambda w: "print(", unchanged=counters),
    Case("POST /session/{owner's}/interrupt",
         lambda api, w, r: api.post(f"/session/{w.objects['session']}/interrupt"),
         {**OWNER_AND_SUPERADMIN, "owner": 204, "superadmin": 204}, unchanged=counters),
]


@pytest.mark.parametrize("case,role", params(CASES))
def test_it_answers_each_role_as_the_matrix_says(case, role, world, signed, kernel_io):  # noqa: F811
    check(case, role, world, signed)
    if OWNER_AND_SUPERADMIN[role] == 404:
        assert kernel_io == []  # refused before anything reached the agent


def test_a_query_answers_the_clients_result_document_counts_a_query_and_touches_the_session(
        owner, node, signed, live, kernel_io):  # noqa: F811
    session = live(owner, "counted")
    response = signed(owner).post(f"/session/{session.name}", {"mode": "query", "code": "print(1)", "runId": None})
    assert response.status_code == 200, response.content
    result = response.json()["result"]
    assert set(result) >= {"status", "runId", "exitCode", "console", "options", "files"}
    assert (result["status"], result["exitCode"], result["console"]) == ("finished", 0, [["stdout", "1\n"]])
    assert len(result["runId"]) == 16  # a fresh id when the client gave none
    io = kernel_io[0]
    assert (io.kind, io.target.session_id, io.target.kernel_id) == ("execute", *ids(session))
    assert (io.fields["mode"], io.fields["code"], io.fields["run_id"]) == ("query", "print(1)", result["runId"])

    code = WAIT_FOR_GO + 'print("b")'
    slow = signed(owner).post(f"/session/{session.name}", {"mode": "query", "code": code, "runId": "r1"})
    assert slow.json()["result"]["status"] == "continued"  # the run goes on (until "go" exists)
    assert slow.json()["result"]["console"] == [["stdout", "a\n"]]
    (session.work / "go").touch()
    again = signed(owner).post(f"/session/{session.name}", {"mode": "continue", "code": "", "runId": "r1"})
    assert again.status_code == 200, again.content
    assert (again.json()["result"]["status"], again.json()["result"]["console"]) == ("finished", [["stdout", "b\n"]])
    session.refresh_from_db()
    assert session.num_queries == 2 and session.last_access is not None  # continue is no new query


def test_the_sdks_complete_request_without_a_mode_is_a_completion(owner, node, signed, live, kernel_io):  # noqa: F811
    session = live(owner, "completes")
    response = signed(owner).post(f"/session/{session.name}", {"code": "pri", "options": COMPLETE_OPTIONS})
    assert response.status_code == 200, response.content
    assert "print(" in response.json()["result"]["completions"]
    assert modes(kernel_io) == ["complete"]


def test_a_batch_runs_its_build_then_its_exec_command(owner, node, signed, live, kernel_io):  # noqa: F811
    session = live(owner, "batch")
    body = {"mode": "batch", "code": "", "runId": "b1", "options": {"build": "echo built", "exec": "echo ran"}}
    built = signed(owner).post(f"/session/{session.name}", body).json()["result"]
    assert (built["status"], built["exitCode"], built["runId"]) == ("build-finished", 0, "b1")
    assert kernel_io[0].fields["options"] == {"clean": None, "build": "echo built", "exec": "echo ran",
                                              "buildLog": False}
    console, result = [], built
    while result["status"] != "finished":
        result = signed(owner).post(f"/session/{session.name}", {"mode": "continue", "runId": "b1"}).json()["result"]
        console += result["console"]
    assert result["exitCode"] == 0 and "ran\n" in "".join(text for _, text in built["console"] + console)
    assert queries(session) == 1


@pytest.mark.parametrize("body,message", [
    ({"mode": "shell", "code": "ls", "runId": "r1"}, "mode: must be one of"),
    ({"code": "print(1)", "runId": "r1"}, "mode: must be one of"),
    ({"mode": "query", "code": "1", "runId": "../x"}, "runId: must be"),
    ({"mode": "query", "code": "1", "runId": "r" * 65}, "runId: must be"),
    ({"mode": "query", "code": "1", "runId": 7}, "runId: must be"),
    ({"mode": "continue", "code": ""}, "runId: is required"),
    ({"mode": "input", "code": "x", "runId": ""}, "runId: is required"),
    ({"mode": "query", "code": ["print(1)"], "runId": "r1"}, "code: must be a string"),
    ({"mode": "query", "code": "x" * (execution.MAX_CODE + 1), "runId": "r1"}, "code: longer than"),
    ({"mode": "batch", "code": "", "runId": "r1", "options": "make"}, "options: must be an object"),
    ({"mode": "batch", "code": "", "runId": "r1", "options": {"exec": ["ls"]}}, "options.exec: must be"),
    ({"mode": "complete", "code": "", "options": {"row": -1}}, "options.row: must be"),
    ([1, 2], "must be a JSON object"),
])
def test_bad_requests_are_refused_with_400_before_any_work(owner, node, signed, kernel_io, body,  # noqa: F811
                                                           message):
    session = running_session(owner, "validated")
    response = signed(owner).post(f"/session/{session.pk}", body)
    assert response.status_code == 400, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    assert message in response.json()["msg"]
    assert kernel_io == []  # no stream was opened
    assert queries(session) == 0


def test_a_session_that_is_not_running_is_403_and_an_unknown_one_404(owner, node, signed, kernel_io):  # noqa: F811
    session = running_session(owner, "stopped", status="TERMINATED")
    body = {"mode": "query", "code": "print(1)", "runId": "r1"}
    assert signed(owner).post(f"/session/{session.pk}", body).status_code == 403
    assert signed(owner).post("/session/no-such-session", body).status_code == 404
    assert kernel_io == []


# --- the agent's refusals, each a real condition ----------------------------------------------------

def problem(response, status, slug):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    assert response.json()["type"].endswith("/" + slug)
    return response.json()["msg"]


def test_an_unknown_run_or_a_run_not_waiting_for_input_is_a_400_and_counts_nothing(
        owner, node, signed, live, kernel_io):  # noqa: F811
    session = live(owner, "unknownrun")
    api = signed(owner)
    msg = problem(api.post(f"/session/{session.pk}", {"mode": "continue", "code": "", "runId": "r9"}), 400,
                  "invalid-api-params")
    assert msg.startswith("unknown-run: no run 'r9'")
    assert api.post(f"/session/{session.pk}", {"mode": "query", "code": LONG, "runId": "r2"}).status_code == 200
    msg = problem(api.post(f"/session/{session.pk}", {"mode": "input", "code": "x", "runId": "r2"}), 400,
                  "invalid-api-params")
    assert msg.startswith("not-waiting-input:")
    assert queries(session) == 1  # the one query that ran


def test_a_kernel_that_is_gone_from_its_agent_is_a_403_and_counts_nothing(
        owner, node, signed, live, backend, kernel_io):  # noqa: F811
    session = live(owner, "gone")
    backend.stop(str(session.kernels.get().pk), "test")  # the agent lost it; the manager still thinks it runs
    msg = problem(signed(owner).post(f"/session/{session.pk}", {"mode": "query", "code": "1", "runId": "r1"}), 403,
                  "generic-forbidden")
    assert msg.startswith("kernel-not-running:")
    assert len(kernel_io) == 1 and queries(session) == 0


def test_too_many_unfinished_runs_in_a_session_is_a_429(owner, node, signed, live, kernel_io):  # noqa: F811
    session = live(owner, "manyruns")
    target = http_target(owner, owner.main_keypair, session.name)

    async def fill():
        for n in range(agent_execution.MAX_RUNS):  # each one waits behind the first: none finishes
            request = execution.parse_request({"mode": "query", "code": "import time; time.sleep(60)",
                                               "runId": f"fill{n}"})
            assert (await execution.execute(target, request, flush_timeout=0.05))["status"] == "continued"

    run(fill)
    response = signed(owner).post(f"/session/{session.pk}", {"mode": "query", "code": "1", "runId": "one-more"})
    assert problem(response, 429, "rate-limit-exceeded").startswith("too-many-runs:")
    assert queries(session) == 0  # the runs above went to the agent directly, not through the API


def test_too_many_code_runners_on_the_agent_is_a_503(owner, node, signed, live, kernel_io, monkeypatch):  # noqa: F811
    monkeypatch.setattr(agent_execution, "MAX_RUNNERS", 1)  # the agent's bound, lowered: one runner is the limit
    first, second = live(owner, "runner1"), live(owner, "runner2")
    body = {"mode": "query", "code": "print(1)", "runId": "r1"}
    assert signed(owner).post(f"/session/{first.pk}", body).status_code == 200
    response = signed(owner).post(f"/session/{second.pk}", body)
    assert problem(response, 503, "service-unavailable").startswith("too-many-runners:")
    assert queries(second) == 0


def test_no_agent_on_the_link_is_a_503_after_the_open_timeout(owner, node, signed, settings):  # noqa: F811
    """The real ``KernelIO`` (no ``kernel_io`` fixture here): nobody serves the agent's group."""
    settings.STREAM_OPEN_TIMEOUT = 0.3
    session = running_session(owner, "nolink")
    response = signed(owner).post(f"/session/{session.pk}", {"mode": "query", "code": "1", "runId": "r1"})
    assert "did not open the stream" in problem(response, 503, "service-unavailable")
    assert queries(session) == 0


def test_a_link_that_drops_during_a_request_is_a_503(owner, node):  # noqa: F811
    """The real ``KernelIO`` and the real link consumer: the agent's connection goes while it works."""
    session = running_session(owner, "droppedlink")
    target = http_target(owner, owner.main_keypair, session.name)
    request = execution.parse_request({"mode": "query", "code": "1", "runId": "r1"})

    async def body():
        agent = agent_link(node)
        assert (await agent.connect(timeout=5))[0]
        task = asyncio.ensure_future(execution.execute(target, request))
        frame = await agent_frame(agent)
        assert (frame["type"], frame["kind"], frame["mode"], frame["run_id"]) == ("stream.open", "execute", "query",
                                                                                  "r1")
        await agent.disconnect()
        with pytest.raises(KernelIOError) as failed:
            await asyncio.wait_for(task, 10)
        return failed.value

    failure = run(body)
    assert failure.lost
    error = execution.api_error(failure, target)
    assert (error.status_code, error.error_type) == (503, "service-unavailable")
    assert queries(session) == 0


# --- an image without a code runtime: a real Docker kernel --------------------------------------------

@pytest.fixture
def docker_session(owner, node, docker_client, test_images, kernel_io, tmp_path):  # noqa: F811
    """A RUNNING session whose main kernel is a Docker container of ``bai-test/shell`` (runtime-type ``app``)."""
    agent_id = f"pytest-exec-{uuid.uuid4().hex[:8]}"
    agent = Agent.objects.create(id=agent_id, scaling_group=Agent.objects.get(pk="node-1").scaling_group,
                                 available_slots={"cpu": "4", "mem": str(2**30)})
    docker = DockerBackend(local_settings(tmp_path, agent_id), client=docker_client)
    kernel_io.backends[agent_id] = docker
    session = session_services.create_session_on_agent(user=owner, image=test_images["shell"], agent=agent,
                                                       slots={"cpu": "1"}, name="noruntime")
    session.kernels.update(status="RUNNING", kernel_host="127.0.0.1")
    Session.objects.filter(pk=session.pk).update(status="RUNNING")
    docker.create(KernelSpec.from_wire({
        "kernel_id": str(session.kernels.get().pk), "session_id": str(session.pk), "image": test_images["shell"],
        "session_type": "interactive", "cluster_hostname": "main1", "slots": {"cpu": "0.5", "mem": str(2**26)},
        "startup_command": None}))
    yield Session.objects.get(pk=session.pk)
    for container in docker_client.containers.list(all=True, filters={"label": f"{LABEL_AGENT}={agent_id}"}):
        container.remove(force=True, v=True)


def test_an_image_without_a_code_runtime_is_400_unsupported(owner, signed, docker_session):
    response = signed(owner).post(f"/session/{docker_session.pk}", {"mode": "query", "code": "1", "runId": "r1"})
    assert problem(response, 400, "unsupported").startswith("unsupported: this session's image declares no code")
    assert queries(docker_session) == 0


def test_the_websocket_reports_an_unsupported_image_and_closes_with_4500(owner, docker_session):
    async def body():
        ws = client(owner, f"/stream/session/{docker_session.pk}/execute")
        assert (await ws.connect(timeout=5))[0]
        await ws.send_to(text_data=json.dumps({"code": "1", "mode": "query", "options": {}}))
        error = json.loads(await ws.receive_from(10))
        assert (error["status"], error["error"]) == ("error", "unsupported")
        [[stream, text]] = error["console"]
        assert stream == "stderr" and text.startswith("unsupported: this session's image declares no code runtime")
        assert (await ws.receive_output(5))["code"] == 4500

    run(body)


# --- the websocket loop ----------------------------------------------------------------------------

def test_the_websocket_loops_continue_then_relays_input_then_closes_when_finished(owner, node, live,  # noqa: F811
                                                                                  kernel_io):  # noqa: F811
    session = live(owner, "wsloop")

    def text(frames):
        return "".join(t for frame in frames for _, t in frame["console"])

    async def body():
        ws = client(owner, f"/stream/session/{session.name}/execute")
        assert (await ws.connect(timeout=5))[0]
        await ws.send_to(text_data=json.dumps({"code": WAIT_FOR_GO + "print(input())", "mode": "query",
                                               "options": {}}))
        frames = []
        while text(frames) != "a\n":  # the run goes on until "go" exists: the loop continues it
            frames.append(json.loads(await ws.receive_from(10)))
            assert frames[-1]["status"] == "continued", frames[-1]
        (session.work / "go").touch()
        while frames[-1]["status"] != "waiting-input":
            frames.append(json.loads(await ws.receive_from(10)))
            assert frames[-1]["status"] in ("continued", "waiting-input"), frames[-1]
        await ws.send_to(text_data="the answer")
        while frames[-1]["status"] != "finished":
            frames.append(json.loads(await ws.receive_from(10)))
        assert frames[-1]["exitCode"] == 0 and text(frames) == "a\nthe answer\n"
        assert (await ws.receive_output(5))["type"] == "websocket.close"
        return frames

    frames = run(body)
    assert len({frame["runId"] for frame in frames}) == 1
    assert modes(kernel_io)[:2] == ["query", "continue"] and modes(kernel_io).count("input") == 1
    assert {io.fields["code"] for io in kernel_io if io.fields["mode"] == "input"} == {"the answer"}
    assert len({io.fields["run_id"] for io in kernel_io}) == 1
    assert queries(session) == 1


def test_the_websocket_refuses_a_bad_first_frame_before_any_work(owner, node, kernel_io):  # noqa: F811
    session = running_session(owner, "wsbad")

    async def body():
        ws = client(owner, f"/stream/session/{session.pk}/execute")
        assert (await ws.connect(timeout=5))[0]
        await ws.send_to(text_data=json.dumps({"code": "x", "mode": "continue"}))
        error = json.loads(await ws.receive_from(5))
        assert error["status"] == "error" and "must be query or batch" in error["message"]
        assert (await ws.receive_output(5))["code"] == 4400

    run(body)
    assert kernel_io == []


def test_the_websocket_refuses_someone_elses_session_before_the_handshake(owner, outsider, node,  # noqa: F811
                                                                         kernel_io):  # noqa: F811
    session = running_session(owner, "wsforeign")

    async def body():
        ws = client(outsider, f"/stream/session/{session.pk}/execute")
        connected, _ = await ws.connect(timeout=5)
        assert not connected

    run(body)
    assert kernel_io == []


def test_complete_and_interrupt_send_their_modes_to_the_runner(owner, node, signed, live, kernel_io):  # noqa: F811
    session = live(owner, "helpers")
    api = signed(owner)
    completed = api.post(f"/session/{session.name}/complete", {"code": "pri", "options": COMPLETE_OPTIONS})
    assert completed.status_code == 200, completed.content
    assert set(completed.json()) == {"result"} and completed.json()["result"]["status"] == "finished"
    assert "print(" in completed.json()["result"]["completions"]

    started = api.post(f"/session/{session.name}", {"mode": "query", "code": LONG, "runId": "long"}).json()["result"]
    assert started["status"] == "continued"  # sleeping for a minute
    assert api.post(f"/session/{session.name}/interrupt").status_code == 204
    ended = api.post(f"/session/{session.name}", {"mode": "continue", "runId": "long"}).json()["result"]
    output = "".join(t for _, t in started["console"] + ended["console"])
    assert ended["status"] == "finished" and output.startswith("started\n") and "KeyboardInterrupt" in output
    assert [(io.fields["mode"], io.fields["flush_timeout"]) for io in kernel_io] == [
        ("complete", execution.FLUSH_TIMEOUT), ("query", execution.FLUSH_TIMEOUT), ("interrupt", 0.05),
        ("continue", execution.FLUSH_TIMEOUT)]

    bad = api.post(f"/session/{session.name}/complete", {"code": 5})
    assert bad.status_code == 400 and len(kernel_io) == 4
    assert queries(session) == 1  # the query; completions and interrupts are no queries
