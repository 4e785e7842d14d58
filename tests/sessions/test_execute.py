"""Executing code in a session, manager side: ``POST /session/{s}`` (validation, the permission
matrix, errors, the query counter), the ``execute`` stream it opens on the agent link, and the
``/stream/session/{s}/execute`` websocket loop, with a WebsocketCommunicator playing the agent.
The real runner, agents and official client are in ``tests/agents/daemon/test_execution.py`` and
``tests/e2e/test_execute_client.py``."""
from __future__ import annotations

import asyncio
import json

import pytest

from agents.protocol import encode_data
from permission_matrix import Case, World, check, params
from sessions import execution
from sessions.kernel_io import KernelIOError
from sessions.models import Session
from sessions.streams import http_target

from .test_terminal_consumers import (  # noqa: F401 - fixtures and helpers
    agent_frame, agent_link, client, node, run, running_session,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _in_memory_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture
def fake_agent(monkeypatch):
    """``sessions.execution.execute`` answered here: records the calls, answers ``answers`` in turn
    (a dict, or an exception to raise), else a finished run printing the kernel's id."""
    calls, answers = [], []

    async def fake(target, request, *, flush_timeout=execution.FLUSH_TIMEOUT, mode=None):
        calls.append((target, request, mode))
        if answers:
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return {"runId": request.run_id, "options": {}, "files": [], **answer}
        return {"status": "finished", "runId": request.run_id, "exitCode": 0,
                "console": [["stdout", f"ran in {target.kernel_id}\n"]], "options": {}, "files": []}

    monkeypatch.setattr(execution, "execute", fake)
    fake.calls, fake.answers = calls, answers
    return fake


@pytest.fixture
def world(owner, member, outsider, foreign_admin, superadmin, node):
    session = running_session(owner, "execsess")
    users = {"owner": owner, "member": member, "outsider": outsider, "foreign_admin": foreign_admin,
             "superadmin": superadmin}
    return World(users=users, objects={"session": str(session.pk),
                                       "kernel": str(session.kernels.get().pk)})


def counters(world):
    return tuple(Session.objects.filter(pk=world.objects["session"]).values_list("num_queries", "last_access").get())


OWNER_AND_SUPERADMIN = {"owner": 200, "member": 404, "outsider": 404, "foreign_admin": 404, "superadmin": 200}
CASES = [
    Case("POST /session/{owner's} (query)",
         lambda api, w, r: api.post(f"/session/{w.objects['session']}", {"mode": "query", "code": "print(1)",
                                                                         "runId": "r1"}),
         OWNER_AND_SUPERADMIN, marker=lambda w: f"ran in {w.objects['kernel']}", unchanged=counters),
    Case("POST /session/{owner's} (batch)",
         lambda api, w, r: api.post(f"/session/{w.objects['session']}", {
             "mode": "batch", "code": "", "runId": None,
             "options": {"clean": None, "build": "make", "buildLog": False, "exec": "./a.out"}}),
         OWNER_AND_SUPERADMIN, unchanged=counters),
    Case("POST /session/{owner's}/complete",
         lambda api, w, r: api.post(f"/session/{w.objects['session']}/complete", {
             "code": "pri", "options": {"row": 0, "col": 3, "line": "pri", "post": ""}}),
         OWNER_AND_SUPERADMIN, unchanged=counters),
    Case("POST /session/{owner's}/interrupt",
         lambda api, w, r: api.post(f"/session/{w.objects['session']}/interrupt"),
         {**OWNER_AND_SUPERADMIN, "owner": 204, "superadmin": 204}, unchanged=counters),
]


@pytest.mark.parametrize("case,role", params(CASES))
def test_it_answers_each_role_as_the_matrix_says(case, role, world, signed, fake_agent):
    check(case, role, world, signed)


def test_a_query_answers_the_clients_result_document_counts_a_query_and_touches_the_session(
        owner, node, signed, fake_agent):
    session = running_session(owner, "counted")
    response = signed(owner).post(f"/session/{session.name}", {"mode": "query", "code": "print(1)", "runId": None})
    assert response.status_code == 200, response.content
    result = response.json()["result"]
    assert set(result) >= {"status", "runId", "exitCode", "console", "options", "files"}
    assert result["status"] == "finished" and len(result["runId"]) == 16  # a fresh id when the client gave none
    target, request, _ = fake_agent.calls[0]
    assert (target.session_id, request.mode, request.code) == (str(session.pk), "query", "print(1)")
    fake_agent.answers.append({"status": "continued", "exitCode": None, "console": []})
    again = signed(owner).post(f"/session/{session.name}", {"mode": "continue", "code": "", "runId": "r1"})
    assert again.json()["result"]["status"] == "continued"
    session.refresh_from_db()
    assert session.num_queries == 1 and session.last_access is not None  # continue is no new query


def test_the_sdks_complete_request_without_a_mode_is_a_completion(owner, node, signed, fake_agent):
    session = running_session(owner, "completes")
    fake_agent.answers.append({"status": "finished", "exitCode": 0, "console": [], "completions": ["print"]})
    response = signed(owner).post(f"/session/{session.name}", {"code": "pri", "options": {
        "row": 0, "col": 3, "line": "pri", "post": ""}})
    assert response.status_code == 200, response.content
    assert response.json()["result"]["completions"] == ["print"]
    assert fake_agent.calls[0][1].mode == "complete"


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
def test_bad_requests_are_refused_with_400_before_any_work(owner, node, signed, fake_agent, body, message):
    session = running_session(owner, "validated")
    response = signed(owner).post(f"/session/{session.pk}", body)
    assert response.status_code == 400, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    assert message in response.json()["msg"]
    assert fake_agent.calls == []
    assert Session.objects.get(pk=session.pk).num_queries == 0


def test_a_session_that_is_not_running_is_403_and_an_unknown_one_404(owner, node, signed, fake_agent):
    session = running_session(owner, "stopped", status="TERMINATED")
    body = {"mode": "query", "code": "print(1)", "runId": "r1"}
    assert signed(owner).post(f"/session/{session.pk}", body).status_code == 403
    assert signed(owner).post("/session/no-such-session", body).status_code == 404
    assert fake_agent.calls == []


@pytest.mark.parametrize("agent_error,status,slug", [
    (KernelIOError("unsupported: this session's image declares no code runtime"), 400, "unsupported"),
    (KernelIOError("unknown-run: no run 'r9' in this session"), 400, "invalid-api-params"),
    (KernelIOError("connection to the node lost", lost=True), 503, "service-unavailable"),
    (KernelIOError("agent node-1 did not open the stream in 15s", timeout=True), 503, "service-unavailable"),
    (KernelIOError("too-many-runs: 64 runs are still running in this session"), 429, "rate-limit-exceeded"),
    (KernelIOError("too-many-runners: 64 code runners run on this agent"), 503, "service-unavailable"),
])
def test_an_agent_refusal_is_a_clear_problem_and_counts_nothing(owner, node, signed, fake_agent, agent_error,
                                                               status, slug):
    session = running_session(owner, "refused")
    fake_agent.answers.append(agent_error)
    response = signed(owner).post(f"/session/{session.pk}", {"mode": "query", "code": "1", "runId": "r9"})
    assert response.status_code == status, response.content
    assert response.json()["type"].endswith("/" + slug)
    assert Session.objects.get(pk=session.pk).num_queries == 0


# --- the execute stream on the agent link ----------------------------------------------------------

def test_execute_opens_an_execute_stream_with_the_request_and_parses_the_answer(owner, node):
    session = running_session(owner, "streamed")
    target = http_target(owner, owner.main_keypair, session.name)
    request = execution.parse_request({"mode": "batch", "runId": "b1", "code": "",
                                       "options": {"build": "make", "exec": "./run"}})

    async def body():
        agent = agent_link(node)
        assert (await agent.connect(timeout=5))[0]
        task = asyncio.ensure_future(execution.execute(target, request, flush_timeout=0.5))
        frame = await agent_frame(agent)
        assert frame["type"] == "stream.open" and frame["kind"] == "execute"
        assert (frame["mode"], frame["run_id"], frame["flush_timeout"]) == ("batch", "b1", 0.5)
        assert frame["options"] == {"clean": None, "build": "make", "exec": "./run", "buildLog": False}
        sid = frame["stream"]
        await agent.send_to(text_data=json.dumps({"type": "stream.opened", "stream": sid}))
        assert await agent_frame(agent) == {"type": "stream.eof", "stream": sid}
        answer = {"status": "build-finished", "runId": "b1", "exitCode": 0, "console": [["stdout", "ok\n"]],
                  "options": {}, "files": []}
        await agent.send_to(bytes_data=encode_data(sid, json.dumps(answer).encode()))
        await agent.send_to(text_data=json.dumps({"type": "stream.close", "stream": sid, "exit_code": 0,
                                                  "reason": "done"}))
        assert await task == answer
        await agent.disconnect()

    run(body)


# --- the websocket loop ----------------------------------------------------------------------------

async def answer_stream(agent, result, expect_mode, expect_code=None):
    frame = await agent_frame(agent)
    assert frame["type"] == "stream.open" and frame["kind"] == "execute", frame
    assert frame["mode"] == expect_mode, frame
    if expect_code is not None:
        assert frame["code"] == expect_code
    sid = frame["stream"]
    await agent.send_to(text_data=json.dumps({"type": "stream.opened", "stream": sid}))
    await agent_frame(agent)  # stream.eof
    result = {"runId": frame["run_id"], "exitCode": None, "options": {}, "files": [], **result}
    await agent.send_to(bytes_data=encode_data(sid, json.dumps(result).encode()))
    await agent.send_to(text_data=json.dumps({"type": "stream.close", "stream": sid, "exit_code": 0,
                                              "reason": "done"}))
    return frame


def test_the_websocket_loops_continue_then_relays_input_then_closes_when_finished(owner, node):
    session = running_session(owner, "wsloop")

    async def body():
        agent = agent_link(node)
        assert (await agent.connect(timeout=5))[0]
        ws = client(owner, f"/stream/session/{session.name}/execute")
        assert (await ws.connect(timeout=5))[0]
        await ws.send_to(text_data=json.dumps({"code": "print(input())", "mode": "query", "options": {}}))
        first = await answer_stream(agent, {"status": "continued", "console": [["stdout", "a"]]}, "query",
                                    "print(input())")
        assert json.loads(await ws.receive_from(5))["console"] == [["stdout", "a"]]
        await answer_stream(agent, {"status": "waiting-input", "console": [], "options": {"is_password": False}},
                            "continue")
        assert json.loads(await ws.receive_from(5))["status"] == "waiting-input"
        await ws.send_to(text_data="the answer")
        later = await answer_stream(agent, {"status": "finished", "exitCode": 0,
                                            "console": [["stdout", "the answer\n"]]}, "input", "the answer")
        assert later["run_id"] == first["run_id"]
        done = json.loads(await ws.receive_from(5))
        assert (done["status"], done["exitCode"]) == ("finished", 0)
        assert (await ws.receive_output(5))["type"] == "websocket.close"
        await agent.disconnect()

    run(body)
    assert Session.objects.get(pk=session.pk).num_queries == 1


def test_the_websocket_refuses_a_bad_first_frame_and_reports_an_unsupported_image(owner, node):
    session = running_session(owner, "wsbad")

    async def body():
        ws = client(owner, f"/stream/session/{session.pk}/execute")
        assert (await ws.connect(timeout=5))[0]
        await ws.send_to(text_data=json.dumps({"code": "x", "mode": "continue"}))
        error = json.loads(await ws.receive_from(5))
        assert error["status"] == "error" and "must be query or batch" in error["message"]
        assert (await ws.receive_output(5))["code"] == 4400

        agent = agent_link(node)
        assert (await agent.connect(timeout=5))[0]
        ws = client(owner, f"/stream/session/{session.pk}/execute")
        assert (await ws.connect(timeout=5))[0]
        await ws.send_to(text_data=json.dumps({"code": "1", "mode": "query", "options": {}}))
        frame = await agent_frame(agent)
        await agent.send_to(text_data=json.dumps({"type": "stream.error", "stream": frame["stream"],
                                                  "message": "unsupported: no code runtime in this image"}))
        error = json.loads(await ws.receive_from(5))
        assert (error["status"], error["error"]) == ("error", "unsupported")
        assert error["console"] == [["stderr", "unsupported: no code runtime in this image\n"]]
        assert (await ws.receive_output(5))["code"] == 4500
        await agent.disconnect()

    run(body)


def test_the_websocket_refuses_someone_elses_session_before_the_handshake(owner, outsider, node):
    session = running_session(owner, "wsforeign")

    async def body():
        ws = client(outsider, f"/stream/session/{session.pk}/execute")
        connected, _ = await ws.connect(timeout=5)
        assert not connected

    run(body)


def test_complete_and_interrupt_send_their_modes_to_the_runner(owner, node, signed, fake_agent):
    session = running_session(owner, "helpers")
    fake_agent.answers.append({"status": "finished", "exitCode": 0, "console": [], "completions": ["print("]})
    completed = signed(owner).post(f"/session/{session.name}/complete", {"code": "pri", "options": {
        "row": 0, "col": 3, "line": "pri", "post": ""}})
    assert completed.json() == {"result": {"status": "finished", "completions": ["print("]}}
    assert signed(owner).post(f"/session/{session.name}/interrupt").status_code == 204
    assert [(c[1].mode, c[2]) for c in fake_agent.calls] == [("complete", None), ("interrupt", None)]
    bad = signed(owner).post(f"/session/{session.name}/complete", {"code": 5})
    assert bad.status_code == 400 and len(fake_agent.calls) == 2
    assert Session.objects.get(pk=session.pk).num_queries == 0
