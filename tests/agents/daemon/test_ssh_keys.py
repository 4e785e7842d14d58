"""The session's SSH keypair in a kernel and the image's SSH server (agents/daemon/backends/sshkeys.py):
the local backend writes the key files into the kernel's work directory, the Docker backend into the
container's /home/work (owned by ``work``) and starts Dropbear on 2200 in the bai-test/ssh image."""
from __future__ import annotations

import io
import os
import shutil
import socket
import stat
import subprocess
import tarfile
import time
import uuid

import pytest

from agents.daemon.backends import sshkeys
from agents.daemon.backends.base import BackendSettings
from agents.daemon.backends.docker import LABEL_AGENT, DockerBackend
from agents.daemon.backends.local import LocalBackend
from agents.protocol import KernelSpec, SpecError, SshKeypair
from helpers import require

MiB = 1024**2
AGENT_ID = f"pytest-ssh-{os.getpid()}"
PORTS = (31400, 31449)


@pytest.fixture(scope="module")
def keypair() -> SshKeypair:
    """A real Ed25519 pair, as the manager generates them (accounts/services/keys.py)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    return SshKeypair.from_wire({"public_key": public.decode() + " work@backend.ai", "private_key": private.decode()})


def make_spec(image: str, keypair: SshKeypair | None, **extra) -> KernelSpec:
    data = {"kernel_id": str(uuid.uuid4()), "session_id": str(uuid.uuid4()), "image": image,
            "session_type": "interactive", "cluster_hostname": "main1",
            "slots": {"cpu": "0.5", "mem": str(64 * MiB)}, "startup_command": None,
            "ssh_keypair": keypair.to_wire() if keypair else None}
    data.update(extra)
    return KernelSpec.from_wire(data)


def mode_of(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# --- the spec ------------------------------------------------------------------------------------

def test_it_keeps_the_private_key_out_of_the_spec_repr(keypair):
    spec = make_spec("bai-test/shell:1.0", keypair)
    body = keypair.private_key.strip().splitlines()[1]
    assert body not in repr(spec) and body not in repr(spec.ssh_keypair)
    assert spec.ssh_keypair.private_key == keypair.private_key


@pytest.mark.parametrize("bad", [
    "not an object", {"public_key": "ssh-ed25519 AAAA"}, {"public_key": "", "private_key": "x"},
    {"public_key": "rsa AAAA", "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n"},
    {"public_key": "ssh-ed25519 AAAA\nssh-ed25519 BBBB", "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\n"},
    {"public_key": "ssh-ed25519 AAAA", "private_key": "just text"},
    {"public_key": "ssh-ed25519 " + "A" * 20000, "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\n"},
])
def test_it_refuses_a_malformed_ssh_keypair_without_quoting_the_key(bad):
    with pytest.raises(SpecError) as caught:
        make_spec("bai-test/shell:1.0", None, ssh_keypair=bad)
    assert "PRIVATE KEY-----\n" not in str(caught.value)


def test_it_starts_sshd_only_for_the_sshd_service_port_on_2200():
    assert make_spec("x", None, service_ports=[{"name": "sshd", "protocol": "tcp", "container_ports": [2200]}]).sshd
    assert not make_spec("x", None, service_ports=[{"name": "sshd", "protocol": "tcp",
                                                    "container_ports": [2222]}]).sshd
    assert not make_spec("x", None).sshd


def test_it_finds_the_work_user_in_a_passwd_file():
    passwd = "root:x:0:0:root:/root:/bin/sh\nwork:x:1000:1001:work:/home/work:/bin/sh\n"
    assert sshkeys.work_ids(passwd) == (1000, 1001)
    assert sshkeys.work_ids("root:x:0:0::/root:/bin/sh\n") is None
    assert sshkeys.work_ids("work:x:abc:1:::\n") is None


def test_it_tars_only_the_key_files_with_private_modes(keypair):
    with tarfile.open(fileobj=io.BytesIO(sshkeys.key_tar(keypair, "/home/work", 1000, 1000))) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {"home/work/.ssh", "home/work/.ssh/authorized_keys", "home/work/id_container"}
        assert members["home/work/.ssh"].isdir() and members["home/work/.ssh"].mode == 0o700
        assert all(m.mode == 0o600 and m.uid == 1000 for n, m in members.items() if m.isfile())
        assert tar.extractfile(members["home/work/id_container"]).read().decode() == keypair.private_key


# --- the local backend -----------------------------------------------------------------------------

@pytest.fixture
def local_backend(tmp_path):
    settings = BackendSettings(agent_id="local-ssh-test", scratch_root=tmp_path / "scratch", port_range=PORTS,
                               stop_timeout=2)
    backend = LocalBackend(settings)
    yield backend
    for state in backend.list_kernels():
        backend.stop(state.kernel_id, "test-cleanup")


def test_it_writes_the_key_files_into_a_local_kernels_work_directory(local_backend, keypair):
    spec = make_spec("local/shell:1.0", keypair)
    local_backend.create(spec)
    home = local_backend.root / spec.kernel_id / "home" / "work"
    assert (home / "id_container").read_text() == keypair.private_key
    assert (home / ".ssh" / "authorized_keys").read_text() == keypair.public_key
    assert mode_of(home / "id_container") == 0o600
    assert mode_of(home / ".ssh" / "authorized_keys") == 0o600
    assert mode_of(home / ".ssh") == 0o700


def test_it_writes_no_key_files_without_a_keypair(local_backend):
    spec = make_spec("local/shell:1.0", None)
    local_backend.create(spec)
    home = local_backend.root / spec.kernel_id / "home" / "work"
    assert not (home / "id_container").exists() and not (home / ".ssh").exists()


def test_it_never_writes_the_key_through_a_symlink(tmp_path, keypair):
    home = tmp_path / "home"
    home.mkdir()
    target = tmp_path / "elsewhere"
    target.write_text("untouched")
    (home / "id_container").symlink_to(target)
    sshkeys.write_key_files(home, keypair)
    assert target.read_text() == "untouched"
    assert not (home / "id_container").is_symlink() and (home / "id_container").read_text() == keypair.private_key


# --- the Docker backend ----------------------------------------------------------------------------

@pytest.fixture
def docker_backend(docker_client, test_images, tmp_path):
    backend = DockerBackend(BackendSettings(agent_id=AGENT_ID, scratch_root=tmp_path, port_range=PORTS,
                                            stop_timeout=2), client=docker_client)
    yield backend
    for container in docker_client.containers.list(all=True, filters={"label": f"{LABEL_AGENT}={AGENT_ID}"}):
        container.remove(force=True, v=True)


def _container(docker_client, kernel_id):
    return docker_client.containers.get(f"bai-{AGENT_ID}-{kernel_id}")


def _sshd_port(state) -> int:
    return next(p.host_ports[0] for p in state.service_ports if p.name == "sshd")


def _banner(port: int, timeout: float = 10.0) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                data = sock.recv(64)
                if data:
                    return data
        except OSError:
            pass
        assert time.monotonic() < deadline, f"no SSH server answers on {port}"
        time.sleep(0.1)


def _ssh(key_path, port: int, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                           "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-i", str(key_path), "-p", str(port),
                           "work@127.0.0.1", *command], capture_output=True, text=True, timeout=30)


def ssh_spec(test_images, keypair) -> KernelSpec:
    return make_spec(test_images["ssh"], keypair,
                     service_ports=[{"name": "sshd", "protocol": "tcp", "container_ports": [2200]}])


def test_it_writes_the_key_files_into_the_container_owned_by_work(docker_backend, docker_client, test_images,
                                                                  keypair):
    spec = make_spec(test_images["shell"], keypair)
    docker_backend.create(spec)
    container = _container(docker_client, spec.kernel_id)
    listing = container.exec_run(["/bin/sh", "-c", "stat -c '%a %u %n' /home/work/id_container /home/work/.ssh "
                                  "/home/work/.ssh/authorized_keys; cat /home/work/id_container"]).output.decode()
    assert "600 1000 /home/work/id_container" in listing
    assert "700 1000 /home/work/.ssh" in listing
    assert "600 1000 /home/work/.ssh/authorized_keys" in listing
    assert keypair.private_key.strip() in listing
    assert "PRIVATE KEY" not in (container.logs() or b"").decode()


def test_it_starts_dropbear_and_lets_work_log_in_with_the_session_key(docker_backend, docker_client, test_images,
                                                                       keypair, tmp_path):
    state = docker_backend.create(ssh_spec(test_images, keypair))
    port = _sshd_port(state)
    assert _banner(port).startswith(b"SSH-2.0-dropbear")
    require(shutil.which("ssh") is not None, "the ssh client (apt-get install openssh-client)")
    key = tmp_path / "id_container"
    key.write_text(keypair.private_key)
    key.chmod(0o600)
    result = _ssh(key, port, "echo", "hi", "from", "$(id -un)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hi from work"


def test_it_refuses_a_key_that_is_not_the_sessions(docker_backend, test_images, keypair, tmp_path):
    state = docker_backend.create(ssh_spec(test_images, keypair))
    port = _sshd_port(state)
    _banner(port)
    require(shutil.which("ssh-keygen") is not None, "ssh-keygen (apt-get install openssh-client)")
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    result = _ssh(other, port, "true")
    assert result.returncode != 0
    assert "Permission denied" in result.stderr


def test_it_starts_dropbear_again_after_a_restart(docker_backend, test_images, keypair):
    state = docker_backend.create(ssh_spec(test_images, keypair))
    port = _sshd_port(state)
    _banner(port)
    docker_backend.restart(state.kernel_id)
    assert _banner(port).startswith(b"SSH-2.0-dropbear")


def test_it_runs_a_kernel_without_an_ssh_server_even_when_asked_for_one(docker_backend, test_images, keypair,
                                                                         caplog):
    spec = make_spec(test_images["shell"], keypair,
                     service_ports=[{"name": "sshd", "protocol": "tcp", "container_ports": [2200]}])
    state = docker_backend.create(spec)
    assert state.status.value == "RUNNING"
    assert "sshd did not start" in caplog.text


def test_the_ssh_test_image_declares_its_ssh_server_and_carries_sftp(docker_client, test_images, make_container):
    image = docker_client.images.get(test_images["ssh"])
    assert image.labels["ai.backend.ssh"] == "dropbear"
    container = make_container(test_images["ssh"])
    found = container.exec_run(["/bin/sh", "-c", "dropbear -V 2>&1; test -x /usr/lib/sftp-server && echo sftp"])
    assert b"Dropbear" in found.output and b"sftp" in found.output


def test_a_commit_of_the_kernel_never_holds_the_private_key(docker_backend, docker_client, test_images, keypair):
    require(os.geteuid() == 0, "a root agent (it bind-mounts the key files)")
    spec = make_spec(test_images["shell"], keypair)
    docker_backend.create(spec)
    container = _container(docker_client, spec.kernel_id)
    assert container.exec_run(["cat", "/home/work/id_container"]).output.decode() == keypair.private_key
    image = container.commit(repository="bai-test-ssh-commit", tag=spec.kernel_id[:8])
    try:
        copy = docker_client.containers.create(image.id, command=["true"])
        try:
            stream, _ = copy.get_archive("/home/work")
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                contents = b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())
        finally:
            copy.remove(force=True)
    finally:
        docker_client.images.remove(image.id, force=True)
    assert keypair.private_key.strip().splitlines()[1].encode() not in contents


def test_it_removes_the_hosts_copy_of_the_key_files_when_the_kernel_stops(docker_backend, test_images, keypair):
    spec = make_spec(test_images["shell"], keypair)
    docker_backend.create(spec)
    docker_backend.stop(spec.kernel_id, "user-requested")
    assert not docker_backend._ssh_dir(spec.kernel_id).exists()


def test_an_agent_that_is_not_root_copies_the_key_files_into_the_container(docker_backend, docker_client, test_images,
                                                                          keypair, monkeypatch, tmp_path):
    from agents.daemon.backends import docker as docker_module

    monkeypatch.setattr(docker_module.os, "geteuid", lambda: 1000)
    state = docker_backend.create(ssh_spec(test_images, keypair))
    container = _container(docker_client, state.kernel_id)
    assert not container.attrs["Mounts"]
    listing = container.exec_run(["/bin/sh", "-c", "stat -c '%a %u %n' /home/work/id_container "
                                  "/home/work/.ssh/authorized_keys"]).output.decode()
    assert "600 1000 /home/work/id_container" in listing and "600 1000 /home/work/.ssh/authorized_keys" in listing
    require(shutil.which("ssh") is not None, "the ssh client (apt-get install openssh-client)")
    port = _sshd_port(state)
    _banner(port)
    key = tmp_path / "id_container"
    key.write_text(keypair.private_key)
    key.chmod(0o600)
    result = _ssh(key, port, "echo", "copied")
    assert result.returncode == 0 and result.stdout.strip() == "copied", result.stderr
