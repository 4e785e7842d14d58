"""The embedded stack (``scripts/run`` → ``backendai.stack``) and the local backend: it says what it is."""
import argparse

import pytest

from backendai import stack


def stack_args(backend="local"):
    return argparse.Namespace(port=8091, host="127.0.0.1", data_dir="/tmp/bai-stack", agent_id="local-agent",
                              agent_backend=backend, agent_ports="31000-31999", proxy_ports="32000-32099",
                              proxy_api_port=0)


@pytest.mark.parametrize("euid", [0, 1000])
def test_the_banner_says_the_local_backend_has_no_isolation_and_root_is_passed_explicitly(euid):
    agent = stack.processes(stack_args(), euid)["agent"]
    banner = stack.local_backend_banner(stack_args(), euid)
    assert "\n" not in banner and "no isolation" in banner and "untrusted users" in banner
    if euid == 0:
        assert "--local-allow-root" in agent and "--local-allow-root" in banner and "user root" in banner
    else:
        assert "--local-allow-root" not in agent and "--local-allow-root" not in banner


def test_the_docker_backend_needs_no_warning():
    assert stack.local_backend_banner(stack_args("docker"), 0) is None
    assert "--local-allow-root" not in stack.processes(stack_args("docker"), 0)["agent"]
