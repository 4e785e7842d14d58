"""Structured logs (docs/observability.md): the request context, one access-log line per
request, ``X-Request-ID``, ``LOG_FORMAT=json`` and the readable plain console."""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import types
import uuid
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.urls import path

from backendai import logformat, requestctx
from backendai.asgi import application  # imported first: it sets Django up (and logging) before caplog
from backendai.requestlog import RequestLogMiddleware
from helpers import stop_process

ROOT = Path(__file__).resolve().parents[2]
WAIT = 120  # seconds: generous on a loaded 2-core machine; the loops stop as soon as they are done
GENERATED_ID = re.compile(r"[0-9a-f]{32}")


def access_records(caplog):
    return [r for r in caplog.records if r.name == "backendai.access"]


@pytest.mark.django_db
def test_a_signed_request_writes_exactly_one_access_line_with_its_id_route_status_and_user(owner, signed, caplog):
    caplog.set_level(logging.INFO, logger="backendai.access")
    response = signed(owner).get("/session/no-such-session")
    assert response.status_code == 404
    request_id = response["X-Request-ID"]
    assert GENERATED_ID.fullmatch(request_id)
    [line] = access_records(caplog)
    assert line.levelno == logging.INFO
    assert (line.method, line.path, line.route, line.status) == ("GET", "/session/no-such-session",
                                                                 "session/<str:name>", 404)
    assert line.request_id == request_id
    assert line.user_id == str(owner.pk) and line.access_key == owner.main_keypair.access_key
    assert isinstance(line.duration_ms, float) and line.duration_ms >= 0 and line.bytes == len(response.content)
    message = line.getMessage()
    assert message.startswith("GET /session/no-such-session 404 ") and f"request_id={request_id}" in message
    assert "route=session/<str:name>" in message and f"user={owner.pk}" in message


@pytest.mark.django_db
def test_log_lines_written_while_serving_a_request_carry_its_id_and_user(owner, signed, caplog):
    caplog.set_level(logging.INFO)
    response = signed(owner).get("/session/no-such-session", extra={"HTTP_X_REQUEST_ID": "trace-4711"})
    assert response["X-Request-ID"] == "trace-4711"
    # every record of the request (the access line and Django's own "Not Found" warning) has the context
    during = [r for r in caplog.records if getattr(r, logformat.CTX_ATTR, None)]
    assert {r.name for r in during} >= {"backendai.access", "django.request"}
    for record in during:
        fields = logformat.context_fields(record)
        assert fields["request_id"] == "trace-4711" and fields["user_id"] == str(owner.pk), record.name
    assert requestctx.current() is None  # nothing leaks past the request


@pytest.mark.django_db
def test_a_sane_x_request_id_is_honoured_and_echoed(client, caplog):
    caplog.set_level(logging.INFO, logger="backendai.access")
    sane = "client-7f3a.B_9" + "x" * 49  # 64 characters, the longest honoured
    response = client.get("/session/x", HTTP_X_REQUEST_ID=sane)
    assert response.status_code == 401
    assert response["X-Request-ID"] == sane
    [line] = access_records(caplog)
    assert line.request_id == sane and line.status == 401 and not hasattr(line, "user_id")


@pytest.mark.django_db
@pytest.mark.parametrize("hostile", [
    "x" * 65,  # too long
    "has space",
    "new\nline",  # log injection
    "cr\r\nX-Injected: 1",
    "id;drop",
    "\u00fcnicode",
    "",
])
def test_a_hostile_x_request_id_is_replaced_by_a_generated_one(client, caplog, hostile):
    caplog.set_level(logging.INFO, logger="backendai.access")
    response = client.get("/session/x", HTTP_X_REQUEST_ID=hostile)
    assert response.status_code == 401  # refused for the missing signature, not for the header
    assert GENERATED_ID.fullmatch(response["X-Request-ID"])
    [line] = access_records(caplog)
    assert line.request_id == response["X-Request-ID"]
    assert "\n" not in line.getMessage() and "\r" not in line.getMessage()


@pytest.mark.django_db
def test_a_control_character_in_the_path_cannot_forge_a_second_log_line(client, caplog):
    caplog.set_level(logging.INFO, logger="backendai.access")
    client.get("/ui/nothing%0aGET%20/forged%20200")
    [line] = access_records(caplog)
    assert "\n" not in line.getMessage() and "\\n" in line.path


def _boom(request):
    logging.getLogger("backendai.test").info("about to fail")
    raise RuntimeError("the view failed")


FAILING_URLS = types.ModuleType("failing_urls")  # a URLconf of one view that raises
FAILING_URLS.urlpatterns = [path("boom", _boom)]


@pytest.mark.django_db
def test_the_request_id_is_in_the_error_log_line_of_a_failing_request(client, caplog, settings):
    settings.ROOT_URLCONF = FAILING_URLS
    client.raise_request_exception = False
    caplog.set_level(logging.INFO)
    response = client.get("/boom", HTTP_X_REQUEST_ID="failing-1")
    assert response.status_code == 500 and response["X-Request-ID"] == "failing-1"
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "django.request"]
    assert error.exc_info is not None
    as_json = json.loads(logformat.JsonFormatter().format(error))
    assert as_json["request_id"] == "failing-1" and as_json["level"] == "ERROR" and "RuntimeError" in as_json["exc_info"]
    plain = logformat.PlainFormatter().format(error)
    assert plain.splitlines()[0].endswith("[request_id=failing-1]") and "RuntimeError: the view failed" in plain
    [access] = access_records(caplog)
    assert (access.status, access.route, access.request_id) == (500, "boom", "failing-1")


def test_ids_bound_or_passed_with_extra_become_fields_of_every_format(caplog):
    log = logging.getLogger("backendai.test")
    ctx = requestctx.RequestContext(request_id="r-1", via="api", user_id="u-1")
    with caplog.at_level(logging.INFO, logger="backendai.test"), requestctx.using(ctx):
        requestctx.bind(session_id="s-1")
        log.info("kernel started", extra={"kernel_id": "k-1", "agent_id": "a-1"})
    assert requestctx.current() is None
    [record] = caplog.records
    data = json.loads(logformat.JsonFormatter().format(record))
    assert list(data)[:4] == ["timestamp", "level", "logger", "message"]
    assert data["message"] == "kernel started" and data["logger"] == "backendai.test" and data["level"] == "INFO"
    assert (data["request_id"], data["user_id"], data["session_id"], data["kernel_id"], data["agent_id"]) == (
        "r-1", "u-1", "s-1", "k-1", "a-1")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+00:00", data["timestamp"])
    plain = logformat.PlainFormatter().format(record)
    assert plain.endswith("INFO backendai.test kernel started "
                          "[request_id=r-1 user_id=u-1 session_id=s-1 agent_id=a-1 kernel_id=k-1]")


@pytest.mark.django_db
def test_the_middleware_works_outside_django_test_client_in_a_bare_call(rf, caplog):
    """The middleware with a plain callable as the rest of the stack (what a WSGI server calls)."""
    from django.http import HttpResponse

    seen = {}

    def view(request):
        seen["ctx"] = requestctx.current()
        return HttpResponse(b"hello")

    caplog.set_level(logging.INFO, logger="backendai.access")
    request = rf.get("/ui/hello", HTTP_USER_AGENT="agent/1.0", REMOTE_ADDR="192.0.2.7")
    response = RequestLogMiddleware(view)(request)
    ctx = seen["ctx"]
    assert (ctx.via, ctx.remote_addr, ctx.user_agent) == ("webui", "192.0.2.7", "agent/1.0")
    assert response["X-Request-ID"] == ctx.request_id
    assert requestctx.current() is ctx  # until the server closes the response (Django logs a 4xx after us)
    response.close()
    assert requestctx.current() is None
    [line] = access_records(caplog)
    assert (line.route, line.status, line.bytes, line.via) == ("", 200, 5, "webui")


# --- real processes: LOG_FORMAT as an operator sets it ------------------------------------------------------

def _env(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(DJANGO_SETTINGS_MODULE="backendai.settings", PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", **extra)
    env.setdefault("BACKEND_DATA_DIR", str(tmp_path))
    return env


SERVE_ONE_REQUEST = """
import logging, django
django.setup()
from django.test import Client
response = Client().get("/session/x", HTTP_X_REQUEST_ID="proc-1")
logging.getLogger("celery.worker").warning("a library's %s", "warning")
logging.getLogger("backendai.test").info("two\\nlines", extra={"session_id": "s-9"})
"""


def test_json_mode_writes_one_json_object_per_line_with_the_fields(tmp_path):
    done = subprocess.run([sys.executable, "-c", SERVE_ONE_REQUEST], cwd=ROOT, capture_output=True, text=True,
                          env=_env(tmp_path, LOG_FORMAT="json", LOG_LEVEL="INFO"), timeout=WAIT)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    for record in records:
        assert {"timestamp", "level", "logger", "message"} <= set(record), record
    [access] = [r for r in records if r["logger"] == "backendai.access"]
    assert (access["method"], access["path"], access["status"], access["route"], access["request_id"]) == (
        "GET", "/session/x", 401, "session/<str:name>", "proc-1")
    [unauthorized] = [r for r in records if r["logger"] == "django.request"]
    assert unauthorized["request_id"] == "proc-1" and unauthorized["level"] == "WARNING"
    [library] = [r for r in records if r["logger"] == "celery.worker"]
    assert library["message"] == "a library's warning" and "request_id" not in library
    [ours] = [r for r in records if r["logger"] == "backendai.test"]
    assert ours["message"] == "two\nlines" and ours["session_id"] == "s-9"


def test_plain_mode_stays_readable(tmp_path):
    done = subprocess.run([sys.executable, "-c", SERVE_ONE_REQUEST], cwd=ROOT, capture_output=True, text=True,
                          env=_env(tmp_path, LOG_FORMAT="plain", LOG_LEVEL="INFO"), timeout=WAIT)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    [access] = [line for line in lines if " backendai.access " in line]
    assert re.fullmatch(stamp + r" INFO backendai\.access GET /session/x 401 \d+\.\dms \d+B "
                        r"route=session/<str:name> request_id=proc-1", access), access
    [warning] = [line for line in lines if " django.request " in line]
    assert re.fullmatch(stamp + r" WARNING django\.request Unauthorized: /session/x \[request_id=proc-1\]", warning)
    assert any(re.fullmatch(stamp + r" WARNING celery\.worker a library's warning", line) for line in lines)
    assert not any(line.startswith("{") for line in lines)


def test_a_bad_log_format_is_refused_naming_the_variable(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, capture_output=True,
                          text=True, env=_env(tmp_path, LOG_FORMAT="xml"), timeout=WAIT)
    assert done.returncode != 0 and "LOG_FORMAT" in done.stderr and "plain or json" in done.stderr


def test_the_access_log_file_takes_the_access_lines_and_the_console_keeps_the_rest(tmp_path):
    access_file = tmp_path / "logs" / "requests.log"
    access_file.parent.mkdir()
    done = subprocess.run([sys.executable, "-c", SERVE_ONE_REQUEST], cwd=ROOT, capture_output=True, text=True,
                          env=_env(tmp_path, LOG_FORMAT="json", ACCESS_LOG_FILE=str(access_file)), timeout=WAIT)
    assert done.returncode == 0, done.stderr
    [line] = access_file.read_text().splitlines()
    assert json.loads(line)["request_id"] == "proc-1"
    assert "backendai.access" not in done.stderr and "django.request" in done.stderr


def test_a_celery_task_logs_with_the_context_of_the_request_that_sent_it(tmp_path):
    """A real worker (the embedded broker, LOG_FORMAT=json); the task is sent from a request context here."""
    from celery import Celery

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    broker = f"sqlite:///{data_dir / 'broker.sqlite3'}"
    env = _env(tmp_path, BACKEND_DATA_DIR=str(data_dir), LOG_FORMAT="json")
    env.pop("REDIS_URL", None)
    env.pop("DATABASE_URL", None)
    stderr_path = tmp_path / "worker.err"
    producer = Celery("structured-logs-test", broker=broker, set_as_current=False)
    producer.conf.broker_transport = "backendai.broker:Transport"
    with open(stderr_path, "wb") as err, open(tmp_path / "worker.out", "wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "backendai.celery", "worker", "--pool=solo",
                                   "--loglevel=INFO", "--without-gossip", "--without-mingle",
                                   "--hostname", f"logs-{uuid.uuid4().hex[:6]}@%h"],
                                  cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True)
    try:
        def records():
            return [json.loads(line) for line in stderr_path.read_text(errors="replace").splitlines() if line.strip()]

        def wait_for(predicate, what):
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                found = predicate(records())
                if found:
                    return found
                assert worker.poll() is None, f"the worker exited waiting for {what}\n{stderr_path.read_text()}"
                time.sleep(0.2)
            raise AssertionError(f"timed out waiting for {what}\n{stderr_path.read_text()}")

        wait_for(lambda rs: any("ready." in r["message"] for r in rs), "the worker to be ready")
        with requestctx.using(requestctx.RequestContext(request_id="sender-42", via="api")):
            producer.send_task("celery.accumulate", args=("from-a-request",))  # a built-in task: no database
        producer.send_task("celery.accumulate", args=("from-nowhere",))

        def done_lines(rs):
            found = [r for r in rs if r["logger"] == "celery.app.trace" and "succeeded" in r["message"]]
            return found if len(found) == 2 else None

        first, second = sorted(wait_for(done_lines, "both tasks"), key=lambda r: "from-nowhere" in r["message"])
        assert "from-a-request" in first["message"]
        assert (first["request_id"], first["via"], first["task"]) == ("sender-42", "task", "celery.accumulate")
        assert first["task_id"] and first["task_id"] in first["message"]
        # a task nobody's request sent gets an id of its own (its task id)
        assert second["request_id"] == second["task_id"].replace("-", "") and second["via"] == "task"
        # every line the worker logged is one JSON object (records() parsed them all)
    finally:
        producer.close()
        stop_process(worker)


@pytest.mark.django_db(transaction=True)
def test_a_websocket_connection_runs_with_a_context_and_gets_one_access_line(caplog):
    caplog.set_level(logging.INFO, logger="backendai.access")

    async def main():
        ws = WebsocketCommunicator(application, "/stream/session/mine/nothing-here",
                                   headers=[(b"host", b"testserver"), (b"x-request-id", b"ws-1")])
        connected, _ = await ws.connect(timeout=5)
        assert connected
        closed = await ws.receive_output(timeout=5)
        assert closed["type"] == "websocket.close" and closed["code"] == 4404
        await ws.wait()

    async_to_sync(main)()
    [line] = access_records(caplog)
    assert (line.method, line.path, line.status, line.request_id, line.route) == (
        "WS", "/stream/session/mine/nothing-here", 101, "ws-1", "unmatched")


@pytest.mark.django_db(transaction=True)
def test_a_websocket_access_line_names_the_route_pattern_not_the_raw_path(caplog):
    caplog.set_level(logging.INFO, logger="backendai.access")

    async def main():
        ws = WebsocketCommunicator(application, "/stream/session/someone-else/pty",
                                   headers=[(b"host", b"testserver")])
        await ws.connect(timeout=5)  # refused (no credentials): the line is written all the same
        await ws.wait()

    async_to_sync(main)()
    [line] = access_records(caplog)
    assert line.route == r"^(?:func/)?stream/session/(?P<name>[^/]+)/pty$"
    assert line.path == "/stream/session/someone-else/pty" and line.method == "WS"


def test_the_agent_daemon_logs_json_lines_with_its_agent_id(tmp_path):
    """``--log-format json``: the daemon's lines are JSON objects naming the agent (no manager needed
    for its first line, the local backend's warning)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "BAI_"))}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    err_path = tmp_path / "agent.err"
    with open(err_path, "wb") as err:
        agent = subprocess.Popen([sys.executable, "-m", "agents.daemon", "--backend", "local", "--local-allow-root",
                                  "--token", "t" * 32, "--agent-id", "node-json-1", "--manager-url",
                                  "http://127.0.0.1:9", "--scratch-root", str(tmp_path / "scratch"),
                                  "--metrics-listen", "off", "--log-format", "json"],
                                 cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and "local backend" not in err_path.read_text(errors="replace"):
            assert agent.poll() is None or "local backend" in err_path.read_text(), err_path.read_text()
            time.sleep(0.2)
    finally:
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGTERM)
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(agent.pid, signal.SIGKILL)
                agent.wait(timeout=10)
    records = [json.loads(line) for line in err_path.read_text().splitlines() if line.strip()]
    [warning] = [r for r in records if "local backend" in r["message"]]
    assert (warning["level"], warning["logger"], warning["agent_id"], warning["via"]) == (
        "WARNING", "agents.daemon", "node-json-1", "daemon")
    assert all(r["agent_id"] == "node-json-1" for r in records)


@pytest.mark.django_db
def test_a_web_ui_page_logs_the_logged_in_user(client, owner, caplog):
    client.force_login(owner)
    caplog.set_level(logging.INFO)
    response = client.get("/ui/sessions/")
    [line] = access_records(caplog)
    assert (line.via, line.user_id, line.status) == ("webui", str(owner.pk), response.status_code)
    assert "access_key" not in line.__dict__  # a browser session, not a signed call
