"""Fixtures for the agent tests: a Docker engine, the local test images, free ports.

* ``docker_client`` (session): ``docker.from_env()`` after a ping; when no engine
  answers it runs ``ensure_docker`` (scripts/lib/docker.sh: installs/starts
  Debian's docker.io as root) once, then skips locally (fails under CI=true).
* ``test_images`` (session): runs ``scripts/build-test-images`` once and returns
  ``{"shell": "bai-test/shell:1.0", "http": "bai-test/http:1.0", "batch": "bai-test/batch:1.0"}``.
* ``free_port`` (function): a callable, ``free_port() -> int``, an unused
  127.0.0.1 TCP port on each call.
* ``make_container`` (function): ``make_container(image, **docker_run_kwargs)``
  runs a detached container labelled ``bai-test=1`` and force-removes it (and
  any other container it made) at teardown.
"""
from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from helpers import require

ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = ROOT / "scripts" / "build-test-images"
DOCKER_SH = ROOT / "scripts" / "lib" / "docker.sh"
TEST_IMAGES = {"shell": "bai-test/shell:1.0", "http": "bai-test/http:1.0", "batch": "bai-test/batch:1.0",
               "ssh": "bai-test/ssh:1.0", "python": "bai-test/python:3.11", "inference": "bai-test/inference:1.0"}
TEST_LABEL = {"bai-test": "1"}


def find_free_port(host: str = "127.0.0.1") -> int:
    """An unused TCP port on ``host`` (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def find_free_block(size: int, host: str = "127.0.0.1", low: int = 45000, high: int = 59000) -> int:
    """The first port of ``size`` consecutive unused TCP ports on ``host`` (checked, then released)."""
    import random

    for _ in range(200):
        base = random.randrange(low, high - size)
        socks = []
        try:
            for port in range(base, base + size):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no block of {size} free ports on {host}")


@pytest.fixture
def free_port():
    """``free_port()`` -> an unused 127.0.0.1 TCP port (a new one on each call)."""
    handed: set[int] = set()

    def pick() -> int:
        for _ in range(50):
            port = find_free_port()
            if port not in handed:
                handed.add(port)
                return port
        raise RuntimeError("no free port found")

    return pick


@pytest.fixture(scope="session")
def docker_client():
    try:
        import docker
    except ImportError:  # pragma: no cover - docker is a project dependency
        require(False, "the docker Python SDK")
    def connect():
        client = docker.from_env(timeout=60)
        client.ping()
        return client

    client = None
    reason = ""
    try:
        client = connect()
    except Exception as exc:  # DockerException, connection refused, no socket ...
        reason = str(exc)
        # a fresh machine: install/start Debian's docker.io the way the scripts do (root only)
        ensured = subprocess.run(["bash", "-c", f'. "{DOCKER_SH}" && ensure_docker'], capture_output=True,
                                 text=True, timeout=900)
        if ensured.returncode == 0:
            try:
                client = connect()
            except Exception as exc2:
                reason = str(exc2)
        else:
            reason = ensured.stderr.strip() or reason
    require(client is not None, f"a Docker engine ({reason or 'docker.from_env() failed'})")
    yield client
    client.close()


@pytest.fixture(scope="session")
def test_images(docker_client):
    """Build (or reuse) the bai-test images once per session; {"shell"|"http"|"batch": tag}."""
    result = subprocess.run([str(BUILD_SCRIPT), "--quiet"], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.fail(f"scripts/build-test-images failed ({result.returncode}):\n{result.stdout}\n{result.stderr}",
                    pytrace=False)
    for tag in TEST_IMAGES.values():
        docker_client.images.get(tag)  # raises ImageNotFound if the script lied
    return dict(TEST_IMAGES)


@pytest.fixture
def make_container(docker_client):
    """``make_container(image, **kwargs)``: ``containers.run(detach=True)`` labelled bai-test=1, removed at teardown."""
    made = []

    def run(image, **kwargs):
        labels = {**TEST_LABEL, **(kwargs.pop("labels", None) or {})}
        container = docker_client.containers.run(image, detach=True, labels=labels, **kwargs)
        made.append(container)
        return container

    yield run
    for container in made:
        try:
            container.remove(force=True, v=True)
        except Exception:  # already gone (auto_remove) or engine hiccup: nothing to clean
            pass
