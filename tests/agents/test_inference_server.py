"""The test inference server (agents/daemon/images/inference_server.py) as a real process, and the
local backend's ``local/inference:1.0`` that runs it: predict, keep-alive, the health switch, slow
answers, refusals, a clean stop."""
from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from agents.daemon.backends.base import BackendSettings
from agents.daemon.backends.local import INFERENCE_SERVER, LOCAL_IMAGES, LocalBackend
from agents.protocol import KernelSpec
from docker_support import find_free_port

SERVER = Path(__file__).resolve().parents[2] / "agents" / "daemon" / "images" / "inference_server.py"


def request(port, method, path, body=None, headers=None, conn=None):
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        if own:
            conn.close()


def wait_until_up(port, process=None, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return request(port, "GET", "/health")
        except OSError:
            if process is not None and process.poll() is not None:
                raise AssertionError(f"the server exited: {process.stdout.read()}")
            assert time.monotonic() < deadline, "the inference server never answered"
            time.sleep(0.05)


@pytest.fixture
def model_dir(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.txt").write_text("echo-model v1\nsecond line is not the name\n")
    return folder


@pytest.fixture
def server(model_dir):
    port = find_free_port()
    process = subprocess.Popen([sys.executable, str(SERVER), "--port", str(port), "--host", "127.0.0.1",
                                "--model-dir", str(model_dir), "--log-interval", "0.2"],
                               env={"BACKENDAI_SESSION_ID": "replica-one", "BACKENDAI_KERNEL_ID": "kernel-one",
                                    "PATH": "/usr/bin:/bin"},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_up(port, process)
        yield port, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        process.stdout.close()


def test_the_local_image_runs_this_very_file_with_the_agents_python_on_the_inference_port():
    image = LOCAL_IMAGES["local/inference:1.0"]
    assert INFERENCE_SERVER == SERVER.resolve() and INFERENCE_SERVER.is_file()
    assert sys.executable in image["command"] and str(SERVER.resolve()) in image["command"]
    assert image["labels"]["ai.backend.role"] == "INFERENCE"
    assert image["labels"]["ai.backend.service-ports"] == "inference:http:8000"
    assert image["labels"]["ai.backend.endpoint-ports"] == "inference"


def test_predict_echoes_its_input_with_the_replica_and_the_model_it_read(server):
    port, process = server
    status, body = request(port, "POST", "/v1/predict", {"prompt": "hello", "n": 3})
    assert status == 200
    assert body["echo"] == {"prompt": "hello", "n": 3}
    assert body["replica"] == "replica-one" and body["kernel"] == "kernel-one"
    assert body["model"] == "echo-model v1" and body["pid"] == process.pid
    status, body = request(port, "GET", "/v1/predict?x=1&y=two")
    assert status == 200 and body["echo"] == {"x": "1", "y": "two"}


def test_one_connection_carries_many_requests(server):
    port, _ = server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for i in range(20):
            status, body = request(port, "POST", "/v1/predict", {"i": i}, conn=conn)
            assert status == 200 and body["echo"] == {"i": i}
        sock = conn.sock
        assert sock is not None  # still the first socket: the server kept the connection open
        request(port, "GET", "/health", conn=conn)
        assert conn.sock is sock
    finally:
        conn.close()
    assert request(port, "GET", "/stats")[1]["served"] == 20


def test_the_switch_turns_health_to_503_and_back(server):
    port, _ = server
    assert request(port, "GET", "/health") == (200, {"status": "healthy", "replica": "replica-one"})
    assert request(port, "POST", "/admin/unhealthy")[0] == 200
    assert request(port, "GET", "/health")[0] == 503
    assert request(port, "POST", "/v1/predict", {"a": 1})[0] == 200, "an unhealthy replica still answers"
    assert request(port, "GET", "/admin/healthy")[0] == 405
    assert request(port, "POST", "/admin/healthy")[0] == 200
    assert request(port, "GET", "/health")[0] == 200


def test_a_file_in_the_model_folder_turns_every_replica_unhealthy(server, model_dir):
    port, _ = server
    (model_dir / "UNHEALTHY").write_text("")
    assert request(port, "GET", "/health")[0] == 503
    (model_dir / "UNHEALTHY").unlink()
    assert request(port, "GET", "/health")[0] == 200


def test_slow_answers_after_the_delay_it_was_asked_for(server):
    port, _ = server
    started = time.monotonic()
    status, body = request(port, "GET", "/v1/slow?ms=300")
    assert status == 200 and body["replica"] == "replica-one"
    assert time.monotonic() - started >= 0.3
    assert request(port, "GET", "/v1/slow?ms=soon")[0] == 400


def test_bad_input_is_refused_and_the_server_keeps_serving(server):
    port, _ = server
    assert request(port, "POST", "/v1/predict", b"{not json")[0] == 400
    assert request(port, "GET", "/nowhere")[0] == 404
    assert request(port, "DELETE", "/v1/predict")[0] == 405
    assert request(port, "POST", "/v1/predict", b"x", headers={"Content-Length": str(64 * 1024 * 1024)})[0] == 413
    assert request(port, "POST", "/v1/predict", {"ok": True})[0] == 200


def test_it_logs_a_summary_not_every_request_and_stops_cleanly_on_sigterm(server):
    port, process = server
    for i in range(30):
        request(port, "POST", "/v1/predict", {"i": i})
    time.sleep(0.6)  # at least two summary intervals of 0.2 s
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
    output = process.stdout.read()
    assert "listening on 127.0.0.1:" in output and "echo-model v1" in output
    assert "30 in all" in output
    assert output.count("\n") < 10, output


def test_without_a_model_folder_it_says_none_and_port_comes_from_the_environment(tmp_path):
    port = find_free_port()
    process = subprocess.Popen([sys.executable, str(SERVER)], cwd=tmp_path,
                               env={"PORT": str(port), "BACKENDAI_HOST": "127.0.0.1", "PATH": "/usr/bin:/bin"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_up(port, process)
        status, body = request(port, "POST", "/v1/predict", {"a": 1})
        assert status == 200 and body["model"] in ("none", "/models")  # /models only where the host has one
    finally:
        process.kill()
        process.wait(timeout=10)


def test_the_local_backend_serves_a_mounted_model_folder_on_its_published_port(tmp_path, model_dir):
    settings = BackendSettings(agent_id="local-inference", scratch_root=tmp_path / "scratch",
                               port_range=(31300, 31349), stop_timeout=2)
    backend = LocalBackend(settings)
    spec = KernelSpec.from_wire({
        "kernel_id": str(uuid.uuid4()), "session_id": str(uuid.uuid4()), "image": "local/inference:1.0",
        "session_type": "inference", "cluster_hostname": "main1", "slots": {"cpu": "1", "mem": "268435456"},
        "startup_command": None,
        "service_ports": [{"name": "inference", "protocol": "http", "container_ports": [8000]}],
        "mounts": [{"host_path": str(model_dir), "container_path": "/models", "mode": "ro"}]})
    try:
        state = backend.create(spec)
        port = state.service_ports[0].host_ports[0]
        assert backend.service_address(spec.kernel_id, 8000)[1] == port
        wait_until_up(port)
        status, body = request(port, "POST", "/v1/predict", {"q": "?"})
        assert status == 200
        assert body["replica"] == spec.session_id and body["model"] == "echo-model v1"
    finally:
        backend.stop(spec.kernel_id, "test-cleanup")


def test_the_docker_image_serves_the_same_file_with_its_labels(docker_client, test_images, make_container, model_dir):
    image = docker_client.images.get(test_images["inference"])
    labels = image.labels
    assert labels["ai.backend.role"] == "INFERENCE" and labels["ai.backend.endpoint-ports"] == "inference"
    assert labels["ai.backend.service-ports"] == "inference:http:8000"
    assert labels["ai.backend.runtime-type"] == "python"
    assert image.attrs["Config"]["Cmd"] == ["/usr/local/bin/python3", "/opt/inference/server.py"]
    container = make_container(test_images["inference"], ports={"8000/tcp": ("127.0.0.1", None)},
                               environment={"BACKENDAI_SESSION_ID": "docker-replica"},
                               volumes={str(model_dir): {"bind": "/models", "mode": "ro"}})
    deadline = time.monotonic() + 20
    while True:
        container.reload()
        bindings = container.attrs["NetworkSettings"]["Ports"].get("8000/tcp")
        if bindings:
            break
        assert time.monotonic() < deadline, "no published port"
        time.sleep(0.1)
    port = int(bindings[0]["HostPort"])
    wait_until_up(port, timeout=20)
    status, body = request(port, "POST", "/v1/predict", {"from": "docker"})
    assert status == 200
    assert body == {"replica": "docker-replica", "kernel": "", "pid": 1, "echo": {"from": "docker"},
                    "model": "echo-model v1"}
    shipped = container.exec_run(["cat", "/opt/inference/server.py"]).output.decode()
    assert shipped == SERVER.read_text()
