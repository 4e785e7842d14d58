"""The Docker backend end to end against the real engine, with the small bai-test images."""
from __future__ import annotations

import os
import socket
import time
import urllib.request
import uuid
from decimal import Decimal

import pytest

from agents.daemon.agent import Agent
from agents.daemon.backends.base import BackendSettings, KernelError, choose_gpus
from agents.daemon.backends.docker import LABEL_AGENT, LABEL_KERNEL, LABEL_OWNER, LABEL_SESSION, OWNER, DockerBackend
from agents.daemon.client import ManagerClient
from agents.daemon.config import AgentConfig
from agents.daemon.discovery import GpuDevice, Resources
from agents.protocol import KernelSpec, ReportedStatus

AGENT_ID = f"pytest-daemon-{os.getpid()}"
PORTS = (31200, 31299)
MiB = 1024**2


@pytest.fixture
def backend_settings(tmp_path):
    return BackendSettings(agent_id=AGENT_ID, scratch_root=tmp_path, port_range=PORTS, stop_timeout=2)


@pytest.fixture(autouse=True)
def _remove_test_containers(docker_client):
    """Whatever happens, no container labelled with this test agent id survives a test."""
    yield
    for container in docker_client.containers.list(all=True, filters={"label": f"{LABEL_AGENT}={AGENT_ID}"}):
        container.remove(force=True, v=True)


@pytest.fixture
def backend(docker_client, test_images, backend_settings):
    return DockerBackend(backend_settings, client=docker_client)


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
    assert emitted[-1].status is ReportedStatus.RUNNING and state.status is ReportedStatus.RUNNING
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
    assert final.status is ReportedStatus.TERMINATED and final.exit_code == 0  # the app exits 0 on SIGTERM
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


def test_a_new_backend_instance_re_adopts_the_running_container(backend, docker_client, backend_settings, test_images):
    kernel = http_spec(test_images)
    state = backend.create(kernel)
    again = DockerBackend(backend_settings, client=docker_client)  # the daemon restarted
    adopted = {s.kernel_id: s for s in again.adopt()}
    assert adopted[kernel.kernel_id].status is ReportedStatus.RUNNING
    assert adopted[kernel.kernel_id].container_id == state.container_id
    assert adopted[kernel.kernel_id].service_ports == state.service_ports
    held = {p for sp in state.service_ports for p in sp.host_ports}
    assert held <= again.ports.held
    assert "bai-test http app" in fetch(state.service_ports[0].host_ports[0])


def test_a_restart_keeps_the_container_and_its_ports(backend, docker_client, test_images):
    kernel = http_spec(test_images)
    state = backend.create(kernel)
    started = docker_client.containers.get(state.container_id).attrs["State"]["StartedAt"]
    again = backend.restart(kernel.kernel_id)
    assert again.status is ReportedStatus.RUNNING and again.container_id == state.container_id
    assert again.service_ports == state.service_ports
    assert docker_client.containers.get(state.container_id).attrs["State"]["StartedAt"] != started
    assert "bai-test http app" in fetch(state.service_ports[0].host_ports[0])


def test_a_labelled_container_the_manager_wants_stopped_is_removed(backend, docker_client, test_images):
    kernel_id = str(uuid.uuid4())
    stray = docker_client.containers.run(test_images["shell"], detach=True, labels={
        LABEL_KERNEL: kernel_id, LABEL_SESSION: "", LABEL_AGENT: AGENT_ID, LABEL_OWNER: OWNER})
    assert kernel_id in {s.kernel_id for s in backend.list_kernels()}
    final = backend.stop(kernel_id, "terminated-unknown-container")
    assert final.status is ReportedStatus.TERMINATED and final.reason == "terminated-unknown-container"
    assert not docker_client.containers.list(all=True, filters={"id": stray.id})


def test_a_batch_exit_code_is_reported_and_survives_a_restart(backend, docker_client, backend_settings, test_images):
    kernel = spec(test_images["batch"], session_type="batch", environ={"EXIT_CODE": "3"})
    backend.create(kernel)
    state = wait_status(backend, kernel.kernel_id, ReportedStatus.TERMINATED)
    assert state.exit_code == 3 and state.reason == "task-failed"
    assert "batch-start" in state.last_logs and "batch-done" in state.last_logs
    adopted = {s.kernel_id: s for s in DockerBackend(backend_settings, client=docker_client).adopt()}
    assert adopted[kernel.kernel_id].status is ReportedStatus.TERMINATED
    assert adopted[kernel.kernel_id].exit_code == 3
    assert backend.stop(kernel.kernel_id, "user-requested").exit_code == 3


def test_a_batch_kernel_past_its_timeout_is_killed(backend, test_images):
    kernel = spec(test_images["shell"], session_type="batch", batch_timeout=0.5)
    backend.create(kernel)
    time.sleep(0.8)
    ended = backend.check_timeouts()
    assert [s.kernel_id for s in ended] == [kernel.kernel_id]
    assert ended[0].status is ReportedStatus.TERMINATED and ended[0].reason == "task-timeout"


def test_a_missing_image_is_pulled_and_a_failed_pull_is_an_error(backend):
    emitted = []
    kernel = spec("127.0.0.1:9/bai-test/nonexistent:1.0",
                  registry={"url": "http://127.0.0.1:9", "username": "u", "password": "p"})
    with pytest.raises(KernelError) as info:
        backend.create(kernel, emit=emitted.append)
    assert info.value.reason == "image-pull-failed"
    assert [s.status for s in emitted] == [ReportedStatus.PULLING]
    assert backend.list_kernels() == []


def test_local_images_are_listed_with_their_labels(backend, test_images):
    images = {i["name"]: i for i in backend.images()}
    http = images[test_images["http"]]
    assert http["labels"]["ai.backend.service-ports"] == "web:http:8080,echo:tcp:9000"
    assert http["digest"].startswith("sha256:") and http["size"] > 0 and http["architecture"] == "x86_64"


GPUS = [GpuDevice(index=0, uuid="GPU-aaaa-0000", model="NVIDIA H100", memory=80 * 1024**3),
        GpuDevice(index=1, uuid="GPU-bbbb-1111", model="NVIDIA H100", memory=80 * 1024**3)]


def test_gpus_are_requested_from_the_nvidia_driver_only_when_asked_for(docker_client, test_images, backend_settings):
    backend_settings.gpus = GPUS
    backend = DockerBackend(backend_settings, client=docker_client)
    args = backend._container_args(spec(test_images["shell"]), [], choose_gpus(GPUS, {"GPU-aaaa-0000"}, 1))
    request = args["device_requests"][0]
    assert request["Driver"] == "nvidia" and request["DeviceIDs"] == ["GPU-bbbb-1111"]
    assert request["Capabilities"] == [["gpu"]]
    assert "device_requests" not in backend._container_args(spec(test_images["shell"]), [], [])
    with pytest.raises(KernelError, match="insufficient-cuda-devices"):
        choose_gpus(GPUS, {"GPU-aaaa-0000", "GPU-bbbb-1111"}, 1)


def test_the_gpus_a_running_container_is_bound_to_are_read_back_from_its_labels(docker_client, test_images,
                                                                                 backend_settings):
    backend_settings.gpus = GPUS
    backend = DockerBackend(backend_settings, client=docker_client)
    plain = backend.create(spec(test_images["shell"], startup_command="sleep 30"))
    bound = spec(test_images["shell"], startup_command="sleep 30")
    args = backend._container_args(bound, [], choose_gpus(GPUS, {"GPU-aaaa-0000"}, 1))
    args.pop("device_requests")  # this engine has no nvidia runtime; the labels are what the agent reads
    docker_client.containers.run(**args)
    assert backend.gpu_bindings() == {bound.kernel_id: ["GPU-bbbb-1111"]}
    assert plain.kernel_id not in backend.gpu_bindings()
    backend.stop(bound.kernel_id, "user-requested")
    assert backend.gpu_bindings() == {}  # a stopped kernel holds no GPU


def test_a_container_that_cannot_start_is_an_error_and_leaves_nothing_behind(backend, backend_settings, test_images,
                                                                             docker_client):
    backend_settings.gpus = GPUS  # this engine has no nvidia runtime: the start fails
    kernel = http_spec(test_images, slots={"cpu": "1", "mem": str(64 * MiB), "cuda.device": "1"})
    with pytest.raises(KernelError) as info:
        backend.create(kernel)
    assert info.value.reason == "failed-to-start" and info.value.detail
    assert backend.list_kernels() == [] and backend.ports.held == frozenset()
    assert not docker_client.containers.list(all=True, filters={"label": f"{LABEL_KERNEL}={kernel.kernel_id}"})


def test_the_agent_runs_a_desired_container_and_reports_images(docker_client, test_images, fake_manager, wait_for,
                                                               tmp_path):
    config = AgentConfig(manager_url=fake_manager.url, token="test-agent-token", agent_id=AGENT_ID, backend="docker",
                         scratch_root=tmp_path, port_range=PORTS, sync_interval=0.3, stop_timeout=2)
    backend = DockerBackend(BackendSettings.from_config(config), client=docker_client)
    kernel = {"kernel_id": str(uuid.uuid4()), "session_id": str(uuid.uuid4()), "image": test_images["http"],
              "cluster_hostname": "main1", "slots": {"cpu": "0.5", "mem": str(64 * MiB)},
              "service_ports": [{"name": "web", "protocol": "http", "container_ports": [8080]}]}
    fake_manager.desired = [kernel]
    agent = Agent(config, backend, ManagerClient(fake_manager.url, "test-agent-token"),
                  Resources(cpu=Decimal(2), mem=1 << 30), watch_interval=0.2)
    agent.start()
    try:
        events = wait_for(lambda: [e["status"] for e in fake_manager.kernel_events(kernel["kernel_id"])
                                   if e["status"] == "RUNNING"] and fake_manager.kernel_events(kernel["kernel_id"]),
                          what="a RUNNING event")
        assert [e["status"] for e in events][:2] == ["PREPARING", "RUNNING"]
        port = events[1]["service_ports"][0]["host_ports"][0]
        assert "bai-test http app" in fetch(port)
        body = fake_manager.last_sync()
        assert body["backend"] == "docker"
        assert test_images["http"] in {i["name"] for i in body["images"]}

        fake_manager.desired = []
        fake_manager.stop = [{"kernel_id": kernel["kernel_id"], "reason": "user-requested"}]
        done = wait_for(lambda: [e for e in fake_manager.kernel_events(kernel["kernel_id"])
                                 if e["status"] == "TERMINATED"], what="a TERMINATED event")[0]
        assert done["exit_code"] == 0 and done["reason"] == "user-requested"
        assert "bai-test http app" in done["last_logs"]
    finally:
        agent.shutdown()
    assert fake_manager.shutdowns == [{"agent_id": AGENT_ID}]


def test_service_ports_are_published_only_on_the_configured_address(docker_client, test_images, tmp_path):
    """Issue 9: the engine publishes kernel ports on the agent's host address (what the app proxy
    reaches), never on every interface unless the operator configures 0.0.0.0."""
    settings = BackendSettings(agent_id=AGENT_ID, scratch_root=tmp_path, port_range=PORTS, stop_timeout=2,
                               host_address="127.0.0.2", kernel_host="127.0.0.2")
    backend = DockerBackend(settings, client=docker_client)
    state = backend.create(http_spec(test_images))
    web = {p.name: p for p in state.service_ports}["web"].host_ports[0]
    container = docker_client.containers.get(state.container_id)
    bindings = container.attrs["HostConfig"]["PortBindings"]
    assert {b["HostIp"] for binding in bindings.values() for b in binding} == {"127.0.0.2"}
    published = container.attrs["NetworkSettings"]["Ports"]
    assert {b["HostIp"] for binding in published.values() if binding for b in binding} == {"127.0.0.2"}
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.2:{web}/", timeout=1) as response:
                assert "bai-test http app" in response.read().decode()
                break
        except OSError:
            assert time.monotonic() < deadline, "the app never answered on 127.0.0.2"
            time.sleep(0.1)
    assert backend.stop(state.kernel_id, "user-requested").status is ReportedStatus.TERMINATED
