"""``/services/_/try``: the background task starts one replica as the service would, waits for
its health check at the replica's published inference port, and destroys it.  The agent's side
is its protocol (kernel reports); the model server is a real HTTP server of this test."""
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from backendai import bgtasks
from backendai.models import BackgroundTask
from serving.models import Endpoint
from serving.services import endpoints
from sessions.lifecycle import SessionStatus
from sessions.models import Session

FAST = """\
models:
  - name: echo
    model_path: /models
    service:
      port: 8000
      health_check: {path: /health, interval: 0.5, max_wait_time: 1, max_retries: 2, initial_delay: 0}
"""


@pytest.fixture
def model_server():
    """A server answering ``/health`` with ``server.status`` (200 unless a test changes it)."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(server.status if self.path == "/health" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.status = 200
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def start_replica_when_enqueued(replicas, port, status="RUNNING", deadline=60.0):
    """The cluster's side in another thread: place the try session and report it ``status``."""
    from django.db import connection

    def run():
        try:
            end = time.monotonic() + deadline
            while time.monotonic() < end:
                session = Session.objects.filter(name__contains="-try-").first()
                if session is not None:
                    replicas.schedule()
                    replicas.report(session, status, host_port=port, reason="boom" if status == "ERROR" else None)
                    return
                time.sleep(0.2)
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def run_try(owner, body, model):
    task_id = endpoints.try_start(owner, owner.main_keypair, body(**{"config.model": str(model.pk)}))
    status = bgtasks.run(task_id)
    return status, BackgroundTask.objects.get(pk=task_id)


@pytest.mark.django_db(transaction=True)
def test_try_passes_once_the_replica_answers_its_health_check_and_removes_it(
        owner, cluster, make_model, body, replicas, model_server):
    model = make_model(owner, name="fast-model", definition=FAST)
    thread = start_replica_when_enqueued(replicas, model_server.server_address[1])
    status, task = run_try(owner, body, model)
    thread.join(10)
    assert status == "done", task.message
    assert "health check passed" in task.message
    session = Session.objects.get(name__contains="-try-")
    assert session.session_type == "inference"
    assert session.status in (SessionStatus.TERMINATED, SessionStatus.TERMINATING)
    assert not Endpoint.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_try_fails_with_the_health_check_answer_and_removes_the_replica(
        owner, cluster, make_model, body, replicas, model_server):
    model = make_model(owner, name="fast-model", definition=FAST)
    model_server.status = 503
    thread = start_replica_when_enqueued(replicas, model_server.server_address[1])
    status, task = run_try(owner, body, model)
    thread.join(10)
    assert status == "failed"
    assert "did not pass: answered 503, expected 200" in task.message
    session = Session.objects.get(name__contains="-try-")
    assert session.status in (SessionStatus.TERMINATED, SessionStatus.TERMINATING)


@pytest.mark.django_db(transaction=True)
def test_try_fails_clearly_when_the_replica_does_not_start(owner, cluster, make_model, body, replicas, model_server):
    model = make_model(owner, name="fast-model", definition=FAST)
    thread = start_replica_when_enqueued(replicas, model_server.server_address[1], status="ERROR")
    status, task = run_try(owner, body, model)
    thread.join(10)
    assert status == "failed"
    assert task.message.startswith("The replica did not start: ERROR")
