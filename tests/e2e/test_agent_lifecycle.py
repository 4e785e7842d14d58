"""Issue 3 end to end: a live manager, a real agent daemon process, a real Docker
engine (and the local backend): kernels run with the asked limits and ports,
stop with exit codes, survive daemon restarts, and agents go LOST and come back."""
import urllib.request

import pytest

from agents import services as agent_services
from agents.models import Agent, AgentStatus
from sessions import services as session_services
from sessions.models import Kernel

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def group(live_stack):
    from accounts import services as account_services

    account_services.ensure_defaults()
    return agent_services.ensure_default_scaling_group()


@pytest.fixture
def token(group):
    return agent_services.issue_token("e2e", scaling_group=group)[1]


def fetch(url: str, timeout: float = 3) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def answers(url: str, text: str):
    def check():
        try:
            return text in fetch(url, timeout=1)
        except OSError:
            return False
    return check


def kernel_is(kernel_id, *statuses):
    def check():
        kernel = Kernel.objects.get(pk=kernel_id)
        return kernel if kernel.status in statuses else None
    return check


def agent_is(agent_id, status):
    def check():
        agent = Agent.objects.filter(pk=agent_id).first()
        return agent if agent is not None and agent.status == status else None
    return check


@pytest.fixture
def docker_agent(live_stack, token, docker_client, test_images):
    agent_id = "e2e-docker"
    live_stack.start_agent(agent_id, "docker", token)
    agent = live_stack.wait_for(agent_is(agent_id, AgentStatus.ALIVE), what="the docker agent to register")
    yield agent
    for container in docker_client.containers.list(all=True, filters={"label": f"ai.backend.agent-id={agent_id}"}):
        container.remove(force=True)


def test_a_docker_kernel_runs_with_its_limits_and_ports_and_stops_with_an_exit_code(
        live_stack, docker_agent, owner, docker_client):
    agent = Agent.objects.get(pk=docker_agent.pk)
    assert agent.available_slots["cpu"] and int(agent.available_slots["mem"]) > 0
    assert agent.images.filter(name="bai-test/http:1.0").exists()
    session = session_services.create_session_on_agent(
        user=owner, image="bai-test/http:1.0", agent=agent, slots={"cpu": "0.5", "mem": str(128 * 2**20)},
        service_ports=[{"name": "web", "protocol": "http", "container_ports": [8080]}], environ={"GREETING": "hi"})
    kernel = session.kernels.get()
    running = live_stack.wait_for(kernel_is(kernel.pk, "RUNNING"), what="the kernel to run")
    host_port = running.service_ports[0]["host_ports"][0]
    assert "bai-test http app" in fetch(f"http://127.0.0.1:{host_port}/")
    container = docker_client.containers.get(running.container_id)
    config = container.attrs["HostConfig"]
    assert config["NanoCpus"] == 500_000_000 and config["Memory"] == 128 * 2**20
    assert container.labels["ai.backend.kernel-id"] == str(kernel.pk)
    assert "GREETING=hi" in container.attrs["Config"]["Env"]
    session.refresh_from_db()
    assert session.status == "RUNNING"

    session_services.request_termination(session)
    done = live_stack.wait_for(kernel_is(kernel.pk, "TERMINATED"), what="the kernel to stop")
    assert done.exit_code is not None
    session.refresh_from_db()
    assert session.status == "TERMINATED"
    live_stack.wait_for(lambda: not docker_client.containers.list(all=True, filters={"id": running.container_id}),
                        what="the container to be removed")
    assert Agent.objects.get(pk=agent.pk).occupied_slots == {}


def test_a_killed_daemon_leaves_its_container_running_and_a_restart_readopts_it(
        live_stack, docker_agent, owner, token, docker_client):
    session = session_services.create_session_on_agent(
        user=owner, image="bai-test/http:1.0", agent=Agent.objects.get(pk=docker_agent.pk),
        slots={"cpu": "0.25", "mem": str(64 * 2**20)},
        service_ports=[{"name": "web", "protocol": "http", "container_ports": [8080]}])
    kernel = live_stack.wait_for(kernel_is(session.kernels.get().pk, "RUNNING"), what="the kernel to run")
    port = kernel.service_ports[0]["host_ports"][0]

    live_stack.kill(docker_agent.pk)
    assert docker_client.containers.get(kernel.container_id).status == "running"
    assert "bai-test http app" in fetch(f"http://127.0.0.1:{port}/")
    live_stack.wait_for(agent_is(docker_agent.pk, AgentStatus.LOST), timeout=30, what="the agent to be LOST")

    live_stack.start_agent(docker_agent.pk, "docker", token)
    live_stack.wait_for(agent_is(docker_agent.pk, AgentStatus.ALIVE), what="the agent to come back")
    again = Kernel.objects.get(pk=kernel.pk)
    assert again.status == "RUNNING" and again.container_id == kernel.container_id
    assert again.service_ports[0]["host_ports"] == [port]
    assert "bai-test http app" in fetch(f"http://127.0.0.1:{port}/")
    session_services.request_termination(session)
    live_stack.wait_for(kernel_is(kernel.pk, "TERMINATED"), what="the kernel to stop")


def test_a_clean_shutdown_marks_the_agent_terminated(live_stack, docker_agent):
    assert live_stack.stop(docker_agent.pk) == 0
    live_stack.wait_for(agent_is(docker_agent.pk, AgentStatus.TERMINATED), timeout=10, what="TERMINATED")


def test_a_batch_kernels_exit_code_decides_the_result(live_stack, docker_agent, owner):
    from sessions.models import SessionType

    results = {}
    for code in (0, 3):
        session = session_services.create_session_on_agent(
            user=owner, image="bai-test/batch:1.0", agent=Agent.objects.get(pk=docker_agent.pk),
            slots={"cpu": "0.25", "mem": str(64 * 2**20)}, session_type=SessionType.BATCH,
            environ={"EXIT_CODE": str(code)})
        results[code] = session
    for code, session in results.items():
        kernel = live_stack.wait_for(kernel_is(session.kernels.get().pk, "TERMINATED"), what="the batch to end")
        assert kernel.exit_code == code and "batch-done" in kernel.container_log
        session.refresh_from_db()
        assert session.status == "TERMINATED"
        assert session.result == ("success" if code == 0 else "failure")


def test_the_local_backend_runs_stops_and_readopts_processes(live_stack, owner, token):
    agent_id = "e2e-local"
    live_stack.start_agent(agent_id, "local", token)
    agent = live_stack.wait_for(agent_is(agent_id, AgentStatus.ALIVE), what="the local agent")
    session = session_services.create_session_on_agent(
        user=owner, image="local/python", agent=agent, slots={"cpu": "0.5", "mem": str(128 * 2**20)},
        startup_command='exec python3 -m http.server "$PORT" --bind 127.0.0.1',
        service_ports=[{"name": "web", "protocol": "http", "container_ports": [8080]}])
    kernel = live_stack.wait_for(kernel_is(session.kernels.get().pk, "RUNNING"), what="the local kernel")
    port = kernel.service_ports[0]["host_ports"][0]
    live_stack.wait_for(answers(f"http://127.0.0.1:{port}/", "Directory listing"), what="the http server")

    live_stack.kill(agent_id)
    assert "Directory listing" in fetch(f"http://127.0.0.1:{port}/")  # the process outlives the daemon
    live_stack.wait_for(agent_is(agent_id, AgentStatus.LOST), timeout=30, what="the agent to be LOST")
    live_stack.start_agent(agent_id, "local", token)
    live_stack.wait_for(agent_is(agent_id, AgentStatus.ALIVE), what="the agent to come back")
    assert Kernel.objects.get(pk=kernel.pk).status == "RUNNING"

    session_services.request_termination(session)
    done = live_stack.wait_for(kernel_is(kernel.pk, "TERMINATED"), what="the local kernel to stop")
    assert done.exit_code is not None
    with pytest.raises(OSError):
        fetch(f"http://127.0.0.1:{port}/", timeout=1)
