"""Two embedded stacks side by side: the agent's and the app proxy's ports are derived
from ``--port`` (disjoint for different web ports), and a busy port stops the start
with a message naming it and the option that moves it, before any process starts."""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from backendai import stack

ROOT = Path(__file__).resolve().parents[2]


def ports_of(port: int) -> list[int]:
    derived = stack.derived_ports(port)
    agent = stack.parse_range(derived.agent_ports)
    proxy = stack.parse_range(derived.proxy_ports)
    return [*range(agent[0], agent[1] + 1), *range(proxy[0], proxy[1] + 1), derived.proxy_api_port]


def test_every_web_port_gets_valid_ranges_that_do_not_overlap_each_other():
    for port in range(1024, 65536):
        ports = ports_of(port)
        assert len(set(ports)) == len(ports) == stack.BLOCK
        assert all(1024 <= p <= 65535 for p in ports)
        assert port not in ports or port >= stack.PORT_REGION[0]
        assert max(ports) < 32768  # below Linux's ephemeral ports


@pytest.mark.parametrize("first", [8091, 1024, 8000, 9999, 20000, 65535 - stack.BLOCKS + 1])
def test_web_ports_fewer_than_a_block_count_apart_never_share_a_port(first):
    seen: dict[int, int] = {}
    for port in range(first, first + stack.BLOCKS):
        for p in ports_of(port):
            assert p not in seen, f"--port {port} and --port {seen[p]} both derive port {p}"
            seen[p] = port


def test_the_default_and_the_next_ports_get_their_own_blocks():
    first, second = stack.derived_ports(8091), stack.derived_ports(8092)
    assert first == ("10000-10139", "10140-10198", 10199)
    assert set(ports_of(8091)).isdisjoint(ports_of(8092))
    assert second.proxy_api_port != 8092  # the second stack's web port is not the first one's setup port
    assert not {8091, 8092} & set(ports_of(8091) + ports_of(8092))


def args_for(tmp_path, port, **overrides):
    args = argparse.Namespace(port=port, host="127.0.0.1", data_dir=str(tmp_path), agent_id="local-agent",
                              agent_backend="local", agent_ports=None, proxy_ports=None, proxy_api_port=0)
    vars(args).update(overrides)
    stack.resolve_ports(args)
    return args


def listening(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def free_stack_port(tmp_path) -> int:
    """A web port whose whole derived block is free right now."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if not stack.busy_ports(args_for(tmp_path, port)):
            return port
    raise AssertionError("no free block of ports")


def test_free_ports_pass_and_a_listener_in_the_agent_range_is_named(tmp_path):
    port = free_stack_port(tmp_path)
    args = args_for(tmp_path, port)
    assert stack.busy_ports(args) == []
    low = stack.parse_range(args.agent_ports)[0]
    with listening(low + 3):
        problems = stack.busy_ports(args)
    assert problems == [f"port {low + 3} (the agent's kernel ports {args.agent_ports}) is already in use on "
                        f"127.0.0.1: choose other ports with --agent-ports (or another --port)"]


def test_ports_of_this_stacks_own_kernels_left_running_count_as_free(tmp_path):
    port = free_stack_port(tmp_path)
    args = args_for(tmp_path, port)
    kernel_port = stack.parse_range(args.agent_ports)[0] + 7
    state = tmp_path / "agent" / "k-1" / "kernel.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"kernel_id": "k-1", "status": "RUNNING", "service_ports": [
        {"name": "web", "protocol": "http", "container_ports": [8080], "host_ports": [kernel_port]}]}))
    with listening(kernel_port):
        assert stack.busy_ports(args) == []


def test_overlapping_ranges_are_refused(tmp_path):
    args = args_for(tmp_path, 8091, agent_ports="20000-20100", proxy_ports="20100-20150")
    assert stack.busy_ports(args) == ["port 20100 is given to both --agent-ports and --proxy-ports; "
                                      "choose ranges that do not overlap"]


def run_stack(argv, tmp_path, timeout=120):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return subprocess.run([sys.executable, "-m", "backendai.stack", "--data-dir", str(tmp_path), *argv], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_a_busy_web_port_stops_the_stack_before_any_process_starts(tmp_path):
    port = free_stack_port(tmp_path)
    (tmp_path / "agent-token").write_text("unused")
    with listening(port):
        done = run_stack(["--port", str(port)], tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == (f"error: port {port} (the web server) is already in use on 127.0.0.1: "
                                   "choose other ports with --port")
    assert "started" not in done.stdout and not (tmp_path / "logs").exists()


def test_a_busy_proxy_setup_port_is_named_with_its_option(tmp_path):
    port = free_stack_port(tmp_path)
    api = stack.derived_ports(port).proxy_api_port
    with listening(api):
        done = run_stack(["--port", str(port), "--check-ports"], tmp_path)
    assert done.returncode == 1
    assert f"port {api} (the app proxy's setup port) is already in use" in done.stderr
    assert "--proxy-api-port (or another --port)" in done.stderr


def test_scripts_run_refuses_a_busy_port_before_migrating(tmp_path):
    port = free_stack_port(tmp_path)
    data = tmp_path / "data"
    low = stack.parse_range(stack.derived_ports(port).proxy_ports)[0]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    with listening(low):
        done = subprocess.run([str(ROOT / "scripts" / "run"), "--port", str(port), "--data-dir", str(data)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"error: port {low} (the app proxy's app ports" in done.stderr
    assert "--proxy-ports (or another --port)" in done.stderr
    assert not (data / "db.sqlite3").exists()  # nothing was migrated, nothing started
    assert "Backend.AI control panel is starting" not in done.stdout


def test_the_second_stacks_options_move_every_port(tmp_path):
    args = args_for(tmp_path, 8092, agent_ports="40000-40009", proxy_ports="40010-40019", proxy_api_port=40020)
    commands = stack.processes(args, euid=1000)
    assert commands["agent"][commands["agent"].index("--port-range") + 1] == "40000-40009"
    assert commands["proxy"][commands["proxy"].index("--port-range") + 1] == "40010-40019"
    assert commands["proxy"][commands["proxy"].index("--api-port") + 1] == "40020"
    assert [c.option for c in stack.port_claims(args)] == ["--port", "--agent-ports", "--proxy-api-port",
                                                           "--proxy-ports", "--storage-manager-port",
                                                           "--storage-client-port", "--metrics-port"]


def test_the_storage_proxys_ports_are_derived_checked_and_named_with_their_options(tmp_path):
    port = free_stack_port(tmp_path)
    manager, client = stack.storage_ports(port)
    assert (manager, client) == (stack.STORAGE_REGION[0] + 2 * ((port - 8091) % stack.BLOCKS), manager + 1)
    assert stack.storage_ports(8091) == (61000, 61001) and stack.storage_ports(8092) == (61002, 61003)
    assert all(stack.STORAGE_REGION[0] <= p <= stack.STORAGE_REGION[1] <= 65535
               for p in (*stack.storage_ports(8091 + stack.BLOCKS - 1), *stack.storage_ports(1024)))
    with listening(client):
        done = run_stack(["--port", str(port), "--check-ports"], tmp_path)
    assert done.returncode == 1
    assert f"port {client} (the storage proxy's client API) is already in use" in done.stderr
    assert "--storage-client-port (or another --port)" in done.stderr
    args = args_for(tmp_path, port)
    command = stack.processes(args, euid=1000)["storage"]
    assert command[:3] == [sys.executable, "-m", "storageproxy"]
    assert command[command.index("--manager-port") + 1] == str(manager)
    assert command[command.index("--client-port") + 1] == str(client)
    assert command[command.index("--volume") + 1] == f"volume1={tmp_path / 'vfroot' / 'volume1'}"
    assert "--secret" not in command  # the secret travels in the environment
    exported = run_stack(["--port", str(port), "--storage-env"], tmp_path)
    assert exported.stdout.strip() == (f"export STORAGE_PROXY_MANAGER_URL=http://127.0.0.1:{manager} "
                                       f"STORAGE_PROXY_CLIENT_URL=http://127.0.0.1:{client}")
