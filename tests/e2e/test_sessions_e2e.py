"""Issue 4 end to end with real processes: the official CLI creates a session,
the scheduler (beat in a real Celery worker) places it, a real agent runs it in
Docker (or as local processes), the user reads its logs and destroys it."""
import json
import urllib.request

import httpx
import pytest

from agents.models import Agent
from backendai.signing import signed_headers
from sessions.models import Session

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def api(live_stack, keypair, method, target, body=None):
    headers = signed_headers(keypair.access_key, keypair.secret_key, method, target, live_stack.host,
                             content_type="application/json" if body is not None else "text/plain")
    return httpx.request(method, live_stack.url + target, headers=headers,
                         content=json.dumps(body) if body is not None else None, timeout=90)


def session_named(name):
    def check():
        return Session.objects.filter(name=name).first()
    return check


def test_the_cli_creates_a_session_that_runs_on_docker_and_destroys_it(live_stack, docker_node, owner, stack_client):
    keypair = owner.main_keypair
    created = stack_client.cli(keypair, "session", "create", "-t", "clisess01", "-r", "cpu=0.5", "-r", "mem=256m",
                               "-e", "GREETING=hello", "bai-test/http:1.0")
    assert created.returncode == 0, created.stdout + created.stderr
    session = Session.objects.get(name="clisess01")
    assert session.status == "RUNNING", (session.status, session.status_info, session.status_data)

    info = stack_client.cli(keypair, "session", "info", str(session.pk))
    assert info.returncode == 0 and "clisess01" in info.stdout, info.stdout + info.stderr
    ps = stack_client.cli(keypair, "--output", "json", "ps")
    assert ps.returncode == 0, ps.stdout + ps.stderr
    # the client prints an APIVersionWarning (our v8 is newer than its v7) before the JSON document
    listed = json.loads(ps.stdout[ps.stdout.index("{"):])
    assert [item["name"] for item in listed["items"]] == ["clisess01"] and listed["total_count"] == 1

    kernel = session.kernels.get()
    port = kernel.service_ports[0]["host_ports"][0]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=3) as response:
        assert "bai-test http app" in response.read().decode()
    logs = api(live_stack, keypair, "GET", "/session/clisess01/logs")
    assert logs.status_code == 200 and isinstance(logs.json()["result"]["logs"], str)

    destroyed = stack_client.cli(keypair, "session", "destroy", "clisess01")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    live_stack.wait_for(lambda: Session.objects.get(pk=session.pk).status == "TERMINATED", what="TERMINATED")
    assert Agent.objects.get(pk=docker_node).occupied_slots == {}


def test_a_batch_result_follows_the_exit_code_and_a_dependent_waits_for_success(live_stack, docker_node, owner):
    keypair = owner.main_keypair
    base = {"image": "bai-test/batch:1.0", "type": "batch", "enqueueOnly": True,
            "config": {"resources": {"cpu": "0.25", "mem": "128m"}}}
    failing = api(live_stack, keypair, "POST", "/session",
                  {**base, "name": "fails-03", "startupCommand": "/usr/local/bin/bai-batch",
                   "config": {**base["config"], "environ": {"EXIT_CODE": "3"}}})
    assert failing.status_code == 201, failing.text
    producer = api(live_stack, keypair, "POST", "/session",
                   {**base, "name": "producer", "startupCommand": "/usr/local/bin/bai-batch"})
    consumer = api(live_stack, keypair, "POST", "/session",
                   {**base, "name": "consumer", "startupCommand": "/usr/local/bin/bai-batch",
                    "dependencies": ["producer"]})
    assert producer.status_code == 201 and consumer.status_code == 201, consumer.text

    def finished(name):
        return lambda: Session.objects.filter(name=name, status="TERMINATED").first()

    failed = live_stack.wait_for(finished("fails-03"), timeout=90, what="the failing batch")
    assert failed.result == "failure" and failed.kernels.get().exit_code == 3
    done = live_stack.wait_for(finished("producer"), timeout=90, what="the producer")
    assert done.result == "success"
    consumer_row = Session.objects.get(name="consumer")
    history = [h["status"] for h in consumer_row.status_history]
    scheduled_at = next((h["timestamp"] for h in consumer_row.status_history if h["status"] == "SCHEDULED"), None)
    producer_end = next(h["timestamp"] for h in done.status_history if h["status"] == "TERMINATED")
    assert scheduled_at is None or scheduled_at >= producer_end, history
    final = live_stack.wait_for(finished("consumer"), timeout=90, what="the consumer")
    assert final.result == "success"


def test_a_session_waits_visibly_when_the_cluster_is_full(live_stack, docker_node, owner):
    keypair = owner.main_keypair
    response = api(live_stack, keypair, "POST", "/session",
                   {"image": "bai-test/shell:1.0", "name": "too-big", "enqueueOnly": True,
                    "config": {"resources": {"cpu": "64", "mem": "256m"}}})
    assert response.status_code == 201, response.text
    waiting = live_stack.wait_for(
        lambda: (s := Session.objects.get(name="too-big")).status_data.get("scheduler", {}).get("retries") and s,
        what="a failed scheduling attempt")
    assert waiting.status == "PENDING" and waiting.status_info in ("no-available-instances", "predicate-checks-failed")
    info = api(live_stack, keypair, "GET", "/session/too-big").json()
    assert info["statusData"]["scheduler"]["retries"] >= 1
    assert api(live_stack, keypair, "DELETE", "/session/too-big").status_code == 200
    assert Session.objects.get(name="too-big").status == "CANCELLED"


def test_sse_streams_the_lifecycle_of_a_session(live_stack, docker_node, owner):
    keypair = owner.main_keypair
    created = api(live_stack, keypair, "POST", "/session",
                  {"image": "bai-test/batch:1.0", "name": "sse-batch", "type": "batch", "enqueueOnly": True,
                   "startupCommand": "/usr/local/bin/bai-batch", "config": {"resources": {"cpu": "0.25", "mem": "128m"}}})
    session_id = created.json()["sessionId"]
    target = f"/events/session?sessionId={session_id}&scope=*"
    headers = signed_headers(keypair.access_key, keypair.secret_key, "GET", target, live_stack.host,
                             content_type="text/plain")
    names = []
    with httpx.stream("GET", live_stack.url + target, headers=headers, timeout=120) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("event: "):
                names.append(line[7:])
                if names[-1] == "server_close":
                    break
    for expected in ("session_enqueued", "session_scheduled", "kernel_started", "session_started",
                     "kernel_terminated", "session_terminated", "session_success"):
        assert expected in names, names
    assert names.index("session_enqueued") < names.index("session_started") < names.index("session_terminated")
