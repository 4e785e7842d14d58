"""The production topology of docs/deployment.md, every part a separate process on a port of
its own: daphne (web and ws), a Celery worker, beat, the app proxy coordinator
(``python -m appproxy.coordinator``), a proxy worker registered at the coordinator (not at the
manager), the storage proxy (``python -m storageproxy``, client and manager APIs) and an agent,
on the test's PostgreSQL and Redis.  They work together: a folder's file goes from the client
to the storage proxy on the token the manager issued, a session runs on the agent, and its app
opens through a route the manager created at the separate coordinator."""
from __future__ import annotations

import json
import sys
import time
from urllib.parse import urlsplit

import httpx
import pytest

from docker_support import find_free_block as free_block
from docker_support import find_free_port as free_port
from helpers import answers_200

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SECRET = "topology-coordinator-secret-0123456789"
PROXY_NAME = "topology-proxy"
AGENT_ID = "topology-node"


@pytest.fixture
def coordinator_port() -> int:
    return free_port()


@pytest.fixture
def live_stack_env(storage_proxy, coordinator_port) -> dict:
    """The manager's processes reach the coordinator and the storage proxy over HTTP."""
    return {"APPPROXY_COORDINATOR_URL": f"http://127.0.0.1:{coordinator_port}", "APPPROXY_COORDINATOR_SECRET": SECRET,
            "STORAGE_PROXY_MANAGER_URL": storage_proxy.manager_url,
            "STORAGE_PROXY_CLIENT_URL": storage_proxy.client_url, "STORAGE_PROXY_SECRET": storage_proxy.secret}


class Api:
    """Signed calls to the live web process, as the official client makes them."""

    def __init__(self, stack, keypair):
        self.stack, self.keypair = stack, keypair

    def call(self, method: str, target: str, body: dict | None = None) -> httpx.Response:
        from backendai.signing import signed_headers

        ctype = "application/json" if body is not None else "text/plain"
        headers = signed_headers(self.keypair.access_key, self.keypair.secret_key, method, target, self.stack.host,
                                 ctype)
        return httpx.request(method, self.stack.url + target, headers=headers,
                             content=json.dumps(body).encode() if body is not None else b"", timeout=60)


def test_every_process_runs_on_a_port_of_its_own_and_together_they_serve_files_sessions_and_apps(
        live_stack, cluster, storage_proxy, coordinator_port, make_user):
    from appproxy import services as proxy_services
    from appproxy.models import Circuit, Worker, WorkerStatus
    from sessions.models import Session
    from vfolders import services as folder_services
    from vfolders.models import VFolder

    stack = live_stack
    coordinator_url = f"http://127.0.0.1:{coordinator_port}"
    stack.start("coordinator", [sys.executable, "-m", "appproxy.coordinator", "--port", str(coordinator_port)],
                {"APPPROXY_COORDINATOR_URL": ""})
    stack.wait_for(answers_200(coordinator_url + "/health"), what="the coordinator")

    token = proxy_services.issue_token("topology proxy", authority=PROXY_NAME)[1]
    base = free_block(6)
    worker_api = f"http://127.0.0.1:{base + 5}"
    stack.start("proxy", [sys.executable, "-m", "appproxy.worker", "--coordinator-url", coordinator_url,
                          "--name", PROXY_NAME, "--mode", "port", "--bind-host", "127.0.0.1",
                          "--port-range", f"{base}-{base + 4}", "--api-port", str(base + 5),
                          "--heartbeat-interval", "1", "--sync-interval", "2"], {"BAI_PROXY_TOKEN": token})
    stack.wait_for(answers_200(worker_api + "/health"), what="the proxy worker")
    stack.wait_for(lambda: Worker.objects.filter(authority=PROXY_NAME, status=WorkerStatus.ALIVE).exists(),
                   what="the worker ALIVE at the coordinator")
    assert "registered through POST /workers/register" in stack.full_log("proxy")

    stack.start_local_agent(AGENT_ID, cluster[1])
    user = make_user("topology@example.com")
    folder_services.ensure_default_storage_host()
    api = Api(stack, user.main_keypair)

    # files: the manager decides, the storage proxy carries the bytes
    created = api.call("POST", "/folders", {"name": "topo", "host": "local:volume1"})
    assert created.status_code in (200, 201), created.text
    payload = b"bytes that never pass through the manager\n" * 1000
    ticket = api.call("POST", "/folders/topo/request-upload", {"path": "notes.txt", "size": len(payload)}).json()
    assert ticket["url"].startswith(storage_proxy.client_url), ticket
    put = httpx.patch(f"{ticket['url']}?token={ticket['token']}", content=payload, timeout=30,
                      headers={"Tus-Resumable": "1.0.0", "Upload-Offset": "0",
                               "Content-Type": "application/offset+octet-stream"})
    assert put.status_code == 204 and int(put.headers["Upload-Offset"]) == len(payload)
    listing = api.call("GET", "/folders/topo/files?path=.")
    assert listing.status_code == 200 and "notes.txt" in listing.text
    assert VFolder.objects.filter(name="topo").exists()

    # a session on the agent, and its app through a route created at the separate coordinator
    body = {"image": "local/python-http:1.0", "name": "topo-app", "config": {"resources": {"cpu": "0.25",
                                                                                           "mem": "256m"}}}
    started = api.call("POST", "/session", body)
    assert started.status_code in (200, 201), started.text
    stack.wait_for(lambda: Session.objects.filter(name="topo-app", status="RUNNING").exists(), timeout=90,
                   what="the session RUNNING")
    service = api.call("POST", "/session/topo-app/start-service", {"app": "web"})
    assert service.status_code == 200, service.text
    setup = service.json()
    circuit = Circuit.objects.get(session__name="topo-app")
    assert circuit.worker.authority == PROXY_NAME and base <= circuit.port <= base + 4
    answer = httpx.get(setup["url"], follow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    cookie_name, _, rest = answer.headers["set-cookie"].partition("=")
    cookie = {"Cookie": f"{cookie_name}={rest.split(';', 1)[0]}"}
    deadline = time.monotonic() + 30
    while True:
        try:
            app = httpx.get(answer.headers["location"], headers=cookie, timeout=5)
            if app.status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the app never answered through the proxy worker"
        time.sleep(0.3)

    ports = {urlsplit(stack.url).port, coordinator_port, base + 5, circuit.port, storage_proxy.manager_port,
             storage_proxy.client_port}
    assert len(ports) == 6  # web, coordinator, worker setup API, app port, storage manager API, storage client API
    assert api.call("DELETE", "/session/topo-app").status_code in (200, 204)
    stack.wait_for(lambda: not Circuit.objects.filter(session__name="topo-app").exists(), timeout=60,
                   what="the app's route removed at the coordinator")
