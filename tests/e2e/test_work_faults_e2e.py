"""Work in a running session under kill -9, end to end on the real-process stack with a local agent:
the agent killed during a long ``execute`` run (HTTP and the execute websocket), during a 50 MiB
download and upload, and the web process (daphne) killed during an upload.  The client always gets a
clear end within the heartbeat bound, never a hang; after the agent comes back a new execute works
in the same session, and no ``.bai-upload-`` file is left in the kernel's work directory."""
from __future__ import annotations

import json
import os
import threading
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from backendai.signing import signed_headers

from .test_terminal_e2e import running_session

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

AGENT = "e2e-faults-local"
MiB = 2**20
#: Within this a client learns that the agent went (the link's heartbeat bound is 3 x 10 s).
BOUND = 40
TEMP_MARK = ".bai-upload-"


@pytest.fixture
def live_stack_env() -> dict:
    """The agent stays within its heartbeat timeout while it is killed and restarted, so its sessions
    are not given up as lost meanwhile (that policy is tested in test_destroy_and_lost_agents.py)."""
    return {"AGENT_HEARTBEAT_TIMEOUT": "120"}


@pytest.fixture
def local_agent(live_stack, cluster):
    live_stack.start_local_agent(AGENT, cluster[1])
    yield
    live_stack.kill_local_kernels()


def call(live_stack, keypair, method, target, body=None, **kwargs):
    content_type = kwargs.pop("content_type", "application/json")
    headers = signed_headers(keypair.access_key, keypair.secret_key, method, target, live_stack.host,
                             content_type=content_type)
    if isinstance(body, dict):
        body = json.dumps(body)
    return httpx.request(method, live_stack.url + target, headers=headers, content=body,
                         timeout=kwargs.pop("timeout", 90), **kwargs)


def work_dir(live_stack, session):
    kernel = session.kernels.get()
    return live_stack.data_dir / f"scratch-{AGENT}" / str(kernel.pk) / "home" / "work"


def leftovers(work) -> list[str]:
    return [str(p) for p in work.rglob("*") if TEMP_MARK in p.name]


def restart_agent(live_stack, session=None):
    from sessions.models import Session

    opened = live_stack.full_log("web").count(f"agent {AGENT} link open")
    live_stack.restart(AGENT)
    live_stack.wait_for(lambda: live_stack.full_log("web").count(f"agent {AGENT} link open") > opened,
                        timeout=90, what="the restarted agent's link")
    if session is not None:
        live_stack.wait_for(lambda: Session.objects.filter(pk=session.pk, status="RUNNING").exists(), timeout=60,
                            what=f"session {session.name} RUNNING again")


def assert_problem(response, status=503):
    """A problem+json refusal: 503 while the agent is away, or 403 once its sessions were marked ERROR
    (a lost agent's sessions are, after the heartbeat timeout; they come back when it reports them)."""
    assert response.status_code in ((status,) if isinstance(status, int) else status), response.text[:500]
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers


def execute_ws(live_stack, keypair, session_name):
    target = f"/stream/session/{session_name}/execute"
    headers = signed_headers(keypair.access_key, keypair.secret_key, "GET", target, live_stack.host,
                             content_type="application/octet-stream")
    headers.pop("Content-Type")
    return connect(f"ws://{live_stack.host}{target}", additional_headers=headers, open_timeout=15, proxy=None)


LONG_RUN = "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.2)"


def test_the_agent_killed_during_a_long_execute_gives_a_503_and_a_1011_and_a_new_execute_works_after(
        live_stack, local_agent, owner):
    keypair = owner.main_keypair
    session = running_session(live_stack, owner, "exec-kill", image="local/shell:1.0")
    first = call(live_stack, keypair, "POST", "/session/exec-kill", {"mode": "query", "runId": "long", "code": LONG_RUN})
    assert first.status_code == 200 and first.json()["result"]["status"] == "continued", first.text
    ws = execute_ws(live_stack, keypair, "exec-kill")
    ws.send(json.dumps({"mode": "query", "runId": "ws-long", "code": LONG_RUN}))
    assert json.loads(ws.recv(timeout=30))["status"] == "continued"  # queued behind the first run, going on

    failures = []

    def keep_continuing():  # continue requests in flight when the agent dies
        while not failures:
            answer = call(live_stack, keypair, "POST", "/session/exec-kill",
                          {"mode": "continue", "runId": "long"}, timeout=BOUND + 30)
            if answer.status_code != 200:
                failures.append((time.monotonic(), answer))

    poller = threading.Thread(target=keep_continuing, daemon=True)
    poller.start()
    time.sleep(1.0)
    killed = time.monotonic()
    live_stack.kill(AGENT)

    frames, close_code = [], None
    try:
        while True:
            frames.append(json.loads(ws.recv(timeout=BOUND)))
    except ConnectionClosed as closed:
        close_code = closed.rcvd.code if closed.rcvd else None
    ws_ended = time.monotonic() - killed
    assert close_code == 1011 and ws_ended < BOUND, (close_code, ws_ended, frames[-2:])
    assert frames[-1]["status"] == "error" and frames[-1]["exitCode"] is None and frames[-1]["message"]

    poller.join(BOUND + 30)
    assert failures, "a continue after the agent died did not fail"
    failed_at, answer = failures[0]
    assert failed_at - killed < BOUND
    assert_problem(answer, 503)
    later = call(live_stack, keypair, "POST", "/session/exec-kill", {"mode": "continue", "runId": "long"})
    assert_problem(later, (403, 503))  # while it is away: at once, not after a wait

    restart_agent(live_stack, session)
    again = call(live_stack, keypair, "POST", "/session/exec-kill",
                 {"mode": "query", "runId": "after", "code": "print(6 * 7)"})
    assert again.status_code == 200, again.text
    result = again.json()["result"]
    assert result["status"] == "finished" and result["exitCode"] == 0 and result["console"] == [["stdout", "42\n"]]
    session.refresh_from_db()
    assert session.status == "RUNNING"


def _big_file(path, size):
    with open(path, "wb") as fh:
        for _ in range(size // MiB):
            fh.write(os.urandom(MiB))


def _multipart_stream(name, size, boundary):
    yield (f'--{boundary}\r\nContent-Disposition: form-data; name="src"; filename="{name}"\r\n'
           "Content-Type: application/octet-stream\r\n\r\n").encode()
    block = os.urandom(MiB)
    for _ in range(size // MiB):
        yield block
    yield f"\r\n--{boundary}--\r\n".encode()


def _upload(live_stack, keypair, session_name, name, size):
    boundary = "faults-boundary"
    return call(live_stack, keypair, "POST", f"/session/{session_name}/upload",
                b"".join(_multipart_stream(name, size, boundary)),
                content_type=f"multipart/form-data; boundary={boundary}",
                timeout=BOUND + 60)


def test_the_agent_killed_during_a_50_mib_download_and_upload_ends_them_cleanly_and_leaves_no_temporary_file(
        live_stack, local_agent, owner):
    keypair = owner.main_keypair
    session = running_session(live_stack, owner, "files-kill", image="local/shell:1.0")
    work = work_dir(live_stack, session)
    _big_file(work / "big.bin", 50 * MiB)

    # a download: the agent dies after the first MiB; the response ends (short), it does not hang
    headers = signed_headers(keypair.access_key, keypair.secret_key, "GET", "/session/files-kill/download_single",
                             live_stack.host)
    received, cut = 0, None
    started = time.monotonic()
    try:
        with httpx.stream("GET", live_stack.url + "/session/files-kill/download_single", headers=headers,
                          content=json.dumps({"file": "big.bin"}), timeout=BOUND) as response:
            assert response.status_code == 200
            for chunk in response.iter_bytes():
                if received == 0:
                    live_stack.kill(AGENT)
                received += len(chunk)
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        cut = exc  # the body was cut off: the client can tell it is incomplete
    assert received < 50 * MiB and time.monotonic() - started < BOUND + 10
    assert cut is not None, f"a truncated download ({received} bytes) ended like a whole one"
    refused = call(live_stack, keypair, "GET", "/session/files-kill/download_single", {"file": "big.bin"})
    assert_problem(refused, (403, 503))
    restart_agent(live_stack, session)

    # an upload: the agent dies after 20 MiB went through; the answer is a 503 problem, no hang
    outcome = {}

    def upload():
        try:
            outcome["response"] = _upload(live_stack, keypair, "files-kill", "up.bin", 50 * MiB)
        except httpx.HTTPError as exc:  # the server may also drop the connection
            outcome["error"] = exc

    uploader = threading.Thread(target=upload, daemon=True)
    uploader.start()
    # the manager spools the whole body first, then streams it to the agent: kill it once that began
    live_stack.wait_for(lambda: leftovers(work), timeout=60, interval=0.01, what="the upload's temporary file")
    live_stack.kill(AGENT)
    uploader.join(BOUND + 60)
    assert not uploader.is_alive(), "the upload hung after the agent died"
    if "response" in outcome:
        assert_problem(outcome["response"], (403, 503))
    assert not (work / "up.bin").exists()
    assert leftovers(work), "the kill left no temporary file: the test did not cut an upload short"
    restart_agent(live_stack, session)
    live_stack.wait_for(lambda: not leftovers(work), timeout=30, what="the restarted agent to sweep the leftovers")
    assert "removed 1 leftover upload file" in live_stack.full_log(AGENT)
    listed = call(live_stack, keypair, "GET", "/session/files-kill/files", {"path": "."})
    assert listed.status_code == 200 and "up.bin" not in listed.text


def test_the_web_process_killed_during_an_upload_makes_the_agent_discard_the_partial_file(
        live_stack, local_agent, owner):
    keypair = owner.main_keypair
    session = running_session(live_stack, owner, "web-kill", image="local/shell:1.0")
    work = work_dir(live_stack, session)

    def upload():
        try:
            _upload(live_stack, keypair, "web-kill", "up.bin", 50 * MiB)
        except httpx.HTTPError:
            pass  # the web process went: the connection drops

    uploader = threading.Thread(target=upload, daemon=True)
    uploader.start()
    live_stack.wait_for(lambda: leftovers(work), timeout=60, interval=0.01, what="the upload's temporary file")
    live_stack.kill("web")
    # the agent's link ended: it closes the stream and discards the partial file (no agent restart)
    live_stack.wait_for(lambda: not leftovers(work), timeout=BOUND, what="the agent to discard the partial file")
    uploader.join(30)
    assert not (work / "up.bin").exists()
    live_stack.restart("web")
    live_stack.wait_for(lambda: live_stack.full_log("web").count(f"agent {AGENT} link open") >= 1, timeout=90,
                        what="the agent's link to the new web process")
    assert live_stack.processes[AGENT].poll() is None
