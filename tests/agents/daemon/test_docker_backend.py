"""The Docker backend end to end against the real engine, with the small bai-test images."""
from __future__ import annotations

import os
import socket
import time
import urllib.request
import uuid

import pytest

from agents.daemon.backends.base import BackendSettings, KernelError
from agents.daemon.backends.docker import LABEL_AGENT, LABEL_KERNEL, LABEL_OWNER, LABEL_SESSION, OWNER, DockerBackend
from agents.daemon.kernel import KernelSpec, KernelStatus

AGENT_ID = f"pytest-daemon-{os.getpid()}"
PORTS = (31200, 31299)
MiB = 1024**2


@pytest.fixture
def settings(tmp_path):
    return BackendSettings(agent_id=AGENT_ID, scratch_root=tmp_path, port_range=PORTS, stop_timeout=2)


@pytest.fixture
def backend(docker_client, test_images, settings):
    backend = DockerBackend(settings, client=docker_client)
    yield backend
    for container in docker_client.containers.list(all=True, filters={"label": f"{LABEL_AGENT}={AGENT_ID}"}):
        container.remove(force=True, v=True)


def spec(image: str, **extra) -> KernelSpec:
    data = {"kernel_id": str(uuid.uuid4()), "session_id": str(uuid.uuid4()), "image": image,
            "session_type": "interactive", "cluster_role": "main", "cluster_idx": 1, "cluster_hostname": "main1",
            "slots": {"cpu": "0.5", "mem": str(64 * MiB)}, "resource_opts": {"shmem": str(32 * MiB)},
            "environ": {"FOO": "bar"}, "startup_command": None}
    data.update(extra)
    return KernelSpec.from_wire(data)


def http_spec(images, **extra) -> KernelSpec:
    return spec(images["http"], service_ports=[{"name": "web", "protocol": "http", "container_ports": [8080]},
                                               {"name": "echo", "protocol": "tcp", "container_ports": [9000]}],
                **extra)


def fetch(port: int, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def wait_status(backend, kernel_id, status, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        states = {s.kernel_id: s for s in backend.list_kernels()}
        if kernel_id in states and states[kernel_id].status is status:
            return states[kernel_id]
        assert time.monotonic() < deadline, f"kernel never became {status}: {states.get(kernel_id)}"
        time.sleep(0.1)


def test_a_kernel_container_gets_its_limits_ports_labels_and_mounts(backend, docker_client, test_images, tmp_path):
    data = tmp_path / "vfolder"
    data.mkdir()
    kernel = http_spec(test_images, mounts=[{"host_path": str(data), "container_path": "/home/work/data",
                                             "mode": "ro"}])
    emitted = []
    state = backend.create(kernel, emit=emitted.append)
    assert emitted[-1].status is KernelStatus.RUNNING and state.status is KernelStatus.RUNNING
    ports = {p.name: p for p in state.service_ports}
    web, echo = ports["web"].host_ports[0], ports["echo"].host_ports[0]
    assert all(PORTS[0] <= p <= PORTS[1] for p in (web, echo)) and web != echo

    attrs = docker_client.containers.get(state.container_id).attrs
    host = attrs["HostConfig"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == 64 * MiB
    assert host["ShmSize"] == 32 * MiB
    assert host["PortBindings"]["8080/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(web)}]
    assert host["PortBindings"]["9000/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(echo)}]
    assert not host.get("DeviceRequests")  # no GPU asked for
    assert [(m["Destination"], m["RW"]) for m in attrs["Mounts"]] == [("/home/work/data", False)]
    labels = attrs["Config"]["Labels"]
    assert labels[LABEL_KERNEL] == kernel.kernel_id and labels[LABEL_SESSION] == kernel.session_id
    assert labels[LABEL_AGENT] == AGENT_ID and labels[LABEL_OWNER] == OWNER
    assert attrs["Config"]["Hostname"] == "main1" and attrs["Config"]["WorkingDir"] == "/home/work"
    assert "FOO=bar" in attrs["Config"]["Env"] and f"BACKENDAI_KERNEL_ID={kernel.kernel_id}" in attrs["Config"]["Env"]

    assert "bai-test http app" in fetch(web)
    with socket.create_connection(("127.0.0.1", echo), timeout=5) as sock:
        sock.sendall(b"ping\n")
        assert sock.recv(16) == b"ping\n"

    assert backend.create(kernel).container_id == state.container_id  # idempotent
    final = backend.stop(kernel.kernel_id, "user-requested")
    assert final.status is KernelStatus.TERMINATED and final.exit_code == 0  # the app exits 0 on SIGTERM
    assert final.reason == "user-requested"
    assert "bai-test http app" in final.last_logs
    assert backend.list_kernels() == []
    assert web not in backend.ports.held


def test_a_startup_command_runs_under_sh_and_its_exit_code_is_reported_on_stop(backend, test_images):
    kernel = spec(test_images["shell"], startup_command="trap 'exit 7' TERM; echo started; "
                                                        "while :; do sleep 0.1; done")
    backend.create(kernel)
    stats = backend.stats()
    assert kernel.kernel_id in stats and int(stats[kernel.kernel_id]["mem_used"]) >= 0
    final = backend.stop(kernel.kernel_id, "user-requested")
    assert final.exit_code == 7
    assert "started" in final.last_logs


def test_a_new_backend_instance_re_adopts_the_running_container(backend, docker_client, settings, test_images):
    kernel = http_spec(test_images)
    state = backend.create(kernel)
    again = DockerBackend(settings, client=docker_client)  # the daemon restarted
    adopted = {s.kernel_id: s for s in again.adopt()}
    assert adopted[kernel.kernel_id].status is KernelStatus.RUNNING
    assert adopted[kernel.kernel_id].container_id == state.container_id
    assert adopted[kernel.kernel_id].service_ports == state.service_ports
    held = {p for sp in state.service_ports for p in sp.host_ports}
    assert held <= again.ports.held
    assert "bai-test http app" in fetch(state.service_ports[0].host_ports[0])


def test_a_labelled_container_the_manager_wants_stopped_is_removed(backend, docker_client, test_images):
    kernel_id = str(uuid.uuid4())
    stray = docker_client.containers.run(test_images["shell"], detach=True, labels={
        LABEL_KERNEL: kernel_id, LABEL_SESSION: "", LABEL_AGENT: AGENT_ID, LABEL_OWNER: OWNER})
    assert kernel_id in {s.kernel_id for s in backend.list_kernels()}
    final = backend.stop(kernel_id, "terminated-unknown-container")
    assert final.status is KernelStatus.TERMINATED and final.reason == "terminated-unknown-container"
    assert not docker_client.containers.list(all=True, filters={"id": stray.id})


def test_a_batch_exit_code_is_reported_and_survives_a_restart(backend, docker_client, settings, test_images):
    kernel = spec(test_images["batch"], session_type="batch", environ={"EXIT_CODE": "3"})
    backend.create(kernel)
    state = wait_status(backend, kernel.kernel_id, KernelStatus.TERMINATED)
    assert state.exit_code == 3 and state.reason == "task-failed"
    assert "batch-start" in state.last_logs and "batch-done" in state.last_logs
    adopted = {s.kernel_id: s for s in DockerBackend(settings, client=docker_client).adopt()}
    assert adopted[kernel.kernel_id].status is KernelStatus.TERMINATED
    assert adopted[kernel.kernel_id].exit_code == 3
    assert backend.stop(kernel.kernel_id, "user-requested").exit_code == 3


def test_a_batch_kernel_past_its_timeout_is_killed(backend, test_images):
    kernel = spec(test_images["shell"], session_type="batch", batch_timeout=0.5)
    backend.create(kernel)
    time.sleep(0.8)
    ended = backend.check_timeouts()
    assert [s.kernel_id for s in ended] == [kernel.kernel_id]
    assert ended[0].status is KernelStatus.TERMINATED and ended[0].reason == "task-timeout"


def test_a_missing_image_is_pulled_and_a_failed_pull_is_an_error(backend):
    emitted = []
    kernel = spec("127.0.0.1:9/bai-test/nonexistent:1.0",
                  registry={"url": "http://127.0.0.1:9", "username": "u", "password": "p"})
    with pytest.raises(KernelError) as info:
        backend.create(kernel, emit=emitted.append)
    assert info.value.reason == "image-pull-failed"
    assert [s.status for s in emitted] == [KernelStatus.PULLING]
    assert backend.list_kernels() == []


def test_local_images_are_listed_with_their_labels(backend, test_images):
    images = {i["name"]: i for i in backend.images()}
    http = images[test_images["http"]]
    assert http["labels"]["ai.backend.service-ports"] == "web:http:8080,echo:tcp:9000"
    assert http["digest"].startswith("sha256:") and http["size"] > 0 and http["architecture"] == "x86_64"
