"""The local bai-test images (scripts/build-test-images) behave as the agent tests expect."""
from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build-test-images"

BASE_LABELS = {
    "ai.backend.kernelspec": "1",
    "ai.backend.features": "query batch uid-match",
    "ai.backend.base-distro": "busybox",
    "ai.backend.resource.min.cpu": "0.1",
    "ai.backend.resource.min.mem": "32m",
    "ai.backend.runtime-type": "app",
    "ai.backend.runtime-path": "/bin/sh",
    "ai.backend.role": "COMPUTE",
}


def wait_for(predicate, timeout=15.0, interval=0.1):
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # not up yet
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out waiting ({last_exc!r})")


def host_port(container, port):
    container.reload()
    bindings = container.attrs["NetworkSettings"]["Ports"].get(port) or []
    return int(bindings[0]["HostPort"])


def echo_roundtrip(port, payload):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        received = b""
        while len(received) < len(payload):
            chunk = sock.recv(4096)
            if not chunk:
                break
            received += chunk
        return received


@pytest.mark.parametrize("kind", ["shell", "http", "batch"])
def test_images_carry_backendai_labels(docker_client, test_images, kind):
    image = docker_client.images.get(test_images[kind])
    labels = image.labels
    for key, value in BASE_LABELS.items():
        assert labels.get(key) == value, key
    assert len(labels["ai.backend.test-image-hash"]) == 64
    assert image.attrs["Config"]["WorkingDir"] == "/home/work"
    if kind == "http":
        assert labels["ai.backend.service-ports"] == "web:http:8080,echo:tcp:9000"
    else:
        assert "ai.backend.service-ports" not in labels
    assert image.attrs["Size"] < 10 * 1024 * 1024  # busybox and little else


def test_build_is_skipped_when_up_to_date(test_images):
    started = time.monotonic()
    result = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for tag in test_images.values():
        assert f"{tag}: up to date" in result.stdout
    assert time.monotonic() - started < 20


def test_http_image_serves_web_and_echo(test_images, make_container):
    container = make_container(test_images["http"], ports={"8080/tcp": ("127.0.0.1", None),
                                                           "9000/tcp": ("127.0.0.1", None)})
    web_port = host_port(container, "8080/tcp")
    echo_port = host_port(container, "9000/tcp")

    response = wait_for(lambda: httpx.get(f"http://127.0.0.1:{web_port}/", timeout=2))
    assert response.status_code == 200
    assert "bai-test http app" in response.text

    # two sequential connections, two messages each: a persistent echo server
    for n in range(2):
        first = b"hello %d\n" % n
        assert wait_for(lambda: echo_roundtrip(echo_port, first) == first)
        with socket.create_connection(("127.0.0.1", echo_port), timeout=5) as sock:
            for payload in (b"ping-%d\n" % n, b"pong-%d\n" % n):
                sock.sendall(payload)
                got = b""
                while len(got) < len(payload):
                    chunk = sock.recv(4096)
                    assert chunk, "echo connection closed early"
                    got += chunk
                assert got == payload

    started = time.monotonic()
    container.stop(timeout=10)
    assert time.monotonic() - started < 3
    container.reload()
    assert container.attrs["State"]["ExitCode"] == 0


@pytest.mark.parametrize("exit_code", [None, 3])
def test_batch_image_exit_code_and_logs(test_images, make_container, exit_code):
    environment = {"EXIT_CODE": str(exit_code)} if exit_code is not None else {}
    container = make_container(test_images["batch"], environment=environment)
    status = container.wait(timeout=30)
    assert status["StatusCode"] == (exit_code or 0)
    logs = container.logs().decode()
    assert logs.splitlines() == ["batch-start", "batch-done"]


def test_shell_image_idles_and_stops_promptly(test_images, make_container):
    container = make_container(test_images["shell"])
    time.sleep(1.5)
    container.reload()
    assert container.status == "running"
    started = time.monotonic()
    container.stop(timeout=10)
    assert time.monotonic() - started < 3
    container.reload()
    assert container.status == "exited"
    assert container.attrs["State"]["ExitCode"] == 0


def test_shell_image_has_work_user(test_images, docker_client):
    out = docker_client.containers.run(test_images["shell"], ["sh", "-c", "id; pwd; touch /tmp/x && echo ok"],
                                       user="1000", remove=True, labels={"bai-test": "1"})
    text = out.decode()
    assert "uid=1000(work)" in text
    assert "/home/work" in text
    assert text.strip().endswith("ok")
