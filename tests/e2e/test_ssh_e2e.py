"""SSH and SCP into a running session end to end (issue 13, item 3): a real Docker kernel of
``bai-test/ssh:1.0`` (Dropbear on 2200, started by the agent), the session's keypair written into it
by the agent, the official client 23.9.10 and the system's ``ssh``/``scp``.

* ``backend.ai app <s> sshd -b 127.0.0.1:PORT`` tunnels through ``/stream/session/{s}/tcpproxy`` and
  the agent's link; ``ssh``/``scp`` log in as ``work`` with the owner keypair's SSH key.
* ``backend.ai session ssh <s> -p PORT echo hi`` and ``backend.ai session scp`` do all of it themselves:
  ``session download <s> id_container``, the tunnel, then ``ssh``/``scp`` with the downloaded key.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from sessions.models import Session

from .conftest import client_binary
from .test_tcpproxy_e2e import free_port, running_session

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SSH_OPTIONS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
               "-o", "LogLevel=ERROR"]


@pytest.fixture
def ssh_binaries(require):
    require(shutil.which("ssh") is not None and shutil.which("scp") is not None,
            "the system ssh and scp (apt-get install openssh-client; scripts/test installs it)")


def ssh_session(live_stack, user, name) -> Session:
    return running_session(live_stack, user, name, image="bai-test/ssh:1.0")


def client_env(client_bin, live_stack, keypair, home) -> dict:
    return {"PATH": f"{client_bin.parent}{os.pathsep}/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
            "BACKEND_ENDPOINT": live_stack.url, "BACKEND_ACCESS_KEY": keypair.access_key,
            "BACKEND_SECRET_KEY": keypair.secret_key, "BACKEND_ENDPOINT_TYPE": "api", "PYTHONUNBUFFERED": "1"}


def descendants(pid: int) -> list[int]:
    """The live descendants of ``pid``, children first (``/proc/<pid>/task/<tid>/children``)."""
    found = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as listing:
                children = [int(child) for child in listing.read().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *descendants(child)]
    return found


def run_cli(argv: list[str], cwd, env: dict, timeout: float = 45) -> subprocess.CompletedProcess:
    """Run an official-client command that wraps ``ssh``/``scp`` (its own process group) to its end.

    The client ends its background ``backend.ai app ... sshd`` with one SIGINT as soon as ``ssh`` exits and
    then waits for it.  That process has no signal handler: the KeyboardInterrupt is raised wherever its main
    thread is, and when that is a weakref callback (``WeakSet._remove`` of asyncio's task set, run while the
    tunnel's tasks are being dropped, which is exactly when ``ssh`` has just closed it) CPython reports it as
    "unraisable" and drops it, so the proxy serves on and the command waits for it forever.  That is a race
    inside the client (23.9 to 26.9 alike), not in the manager.  A person at the terminal presses Ctrl-C
    once more; so does this: a command still running after ``timeout`` has its wrapped processes (not the
    command itself, which is waiting in its ``finally``) interrupted again, up to three times, before it is
    counted as hung.
    """
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        for again in range(4):
            try:
                out, err = process.communicate(timeout=timeout if again == 0 else 15)
                return subprocess.CompletedProcess(argv, process.returncode, out, err)
            except subprocess.TimeoutExpired:
                for pid in descendants(process.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGINT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    out, err = process.communicate()
    raise AssertionError(f"{argv} hung even after three more interrupts:\n{out}\n{err}")


@pytest.fixture
def client_dirs(tmp_path):
    """(cwd, home) for the client; 23.9.10 moves the downloaded key into ~/.ssh, which must exist."""
    cwd, home = tmp_path / "cwd", tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    cwd.mkdir()
    return cwd, home


def test_the_cli_app_command_tunnels_ssh_and_scp_to_the_kernels_dropbear(live_stack, docker_node, owner, client_bin,
                                                                          require, ssh_binaries, client_dirs,
                                                                          tmp_path):
    require(client_bin.is_file(), f"the official backend.ai client at {client_bin}")
    session = ssh_session(live_stack, owner, "ssh-tunnel")
    assert any(p["name"] == "sshd" for p in session.kernels.get().service_ports)
    owner.main_keypair.refresh_from_db()
    key = tmp_path / "key"
    key.write_text(owner.main_keypair.ssh_private_key)
    key.chmod(0o600)

    cwd, home = client_dirs
    port = free_port()
    log = tmp_path / "app.log"
    app = subprocess.Popen([str(client_bin), "app", "ssh-tunnel", "sshd", "-b", f"127.0.0.1:{port}"], cwd=cwd,
                           env=client_env(client_bin, live_stack, owner.main_keypair, home),
                           stdin=subprocess.DEVNULL, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                           start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert app.poll() is None, f"the CLI exited ({app.returncode}):\n{log.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"the CLI never listened:\n{log.read_text()}"
                time.sleep(0.2)
        base = [*SSH_OPTIONS, "-i", str(key)]
        said = subprocess.run(["ssh", *base, "-p", str(port), "work@127.0.0.1", "echo", "hi"], capture_output=True,
                              text=True, timeout=60)
        assert said.returncode == 0, f"{said.stderr}\n{log.read_text()}\n{live_stack.log(docker_node)}"
        assert said.stdout.strip() == "hi"

        local = tmp_path / "up.bin"
        local.write_bytes(os.urandom(300_000))
        up = subprocess.run(["scp", *base, "-P", str(port), str(local), "work@127.0.0.1:up.bin"],
                            capture_output=True, text=True, timeout=60)
        assert up.returncode == 0, up.stderr
        back = tmp_path / "back.bin"
        down = subprocess.run(["scp", *base, "-P", str(port), "work@127.0.0.1:up.bin", str(back)],
                              capture_output=True, text=True, timeout=60)
        assert down.returncode == 0, down.stderr
        assert back.read_bytes() == local.read_bytes()
    finally:
        app.send_signal(signal.SIGINT)
        try:
            app.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(app.pid, signal.SIGKILL)
            app.wait(timeout=5)


def test_the_official_clients_session_ssh_and_scp_work_end_to_end(live_stack, docker_node, owner, client_bin,
                                                                   require, ssh_binaries, client_dirs, tmp_path):
    require(client_bin.is_file(), f"the official backend.ai client at {client_bin}")
    ssh_session(live_stack, owner, "ssh-full")
    cwd, home = client_dirs
    env = client_env(client_bin, live_stack, owner.main_keypair, home)

    def cli(*args):
        return run_cli([str(client_bin), *args], cwd, env)

    said = cli("session", "ssh", "ssh-full", "-p", str(free_port()), "echo", "hi")
    assert said.returncode == 0, f"{said.stdout}\n{said.stderr}\n{live_stack.log('web')}"
    assert said.stdout.strip().splitlines()[-1] == "hi"

    local = cwd / "local.txt"
    local.write_text("copied in through scp\n")
    up = cli("session", "scp", "ssh-full", "-p", str(free_port()), "local.txt", "work@localhost:remote.txt")
    assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
    local.unlink()
    down = cli("session", "scp", "ssh-full", "-p", str(free_port()), "work@localhost:remote.txt", "back.txt")
    assert down.returncode == 0, f"{down.stdout}\n{down.stderr}"
    assert (cwd / "back.txt").read_text() == "copied in through scp\n"
    listed = cli("session", "ssh", "ssh-full", "-p", str(free_port()), "--", "cat", "remote.txt")
    assert listed.returncode == 0, f"{listed.stdout}\n{listed.stderr}"
    assert "copied in through scp" in listed.stdout
    assert not list((home / ".ssh").glob("id_*")), "the client removes the key it downloaded"


@pytest.mark.parametrize("version", ["24.9.14", "26.9.6"])
def test_the_newer_official_clients_session_ssh_runs_a_command(live_stack, docker_node, owner, require, ssh_binaries,
                                                               client_dirs, version):
    binary = client_binary(version, require)
    ssh_session(live_stack, owner, "ssh-newer")
    cwd, home = client_dirs
    said = run_cli([str(binary), "session", "ssh", "ssh-newer", "-p", str(free_port()), "echo", "hi"], cwd,
                   client_env(binary, live_stack, owner.main_keypair, home))
    assert said.returncode == 0, f"{said.stdout}\n{said.stderr}\n{live_stack.log(docker_node)}"
    assert said.stdout.strip().splitlines()[-1] == "hi"
