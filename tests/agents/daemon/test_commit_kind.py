"""The ``commit`` stream kind (``agents/daemon/commit.py``): a running Docker kernel snapshot into a
new image, against the real engine with the bai-test images; the local backend refuses."""
from __future__ import annotations

import json
import uuid

import pytest

from agents.daemon import commit as commit_kind
from agents.daemon import streams
from agents.daemon.backends.base import BackendSettings, KernelError
from agents.daemon.backends.local import LocalBackend
from agents.protocol import CHUNK

from .test_docker_backend import _remove_test_containers, backend, backend_settings, spec  # noqa: F401 - fixtures

OWNER_LABEL = "ai.backend.customized-image.owner"


@pytest.fixture
def committed(docker_client):
    """Names of images a test committed: removed at teardown."""
    names: list[str] = []
    yield names
    for name in names:
        try:
            for container in docker_client.containers.list(all=True, filters={"ancestor": name}):
                container.remove(force=True, v=True)
            docker_client.images.remove(name, force=True)
        except Exception:  # noqa: BLE001 - not created (a refused commit)
            pass


def read_lines(endpoint) -> list[dict]:
    data = b""
    while chunk := endpoint.read(CHUNK):
        data += chunk
    return [json.loads(line) for line in data.decode().splitlines()]


def target(test_name: str) -> tuple[str, str]:
    return "bai-test/commit-" + test_name, f"t{uuid.uuid4().hex[:12]}"


def test_the_kind_is_registered_when_the_agent_module_is_imported():
    import agents.daemon.agent  # noqa: F401 - the daemon's entry point imports the kinds

    assert streams._OPENERS["commit"] is commit_kind.open_commit


def test_a_running_kernel_is_committed_with_its_files_and_the_new_image_starts_a_kernel_that_has_them(
        backend, docker_client, test_images, committed):
    kernel = spec(test_images["shell"], startup_command="echo started; exec sleep 600",
                  environ={"SECRET_TOKEN": "s3cr3t"})
    state = backend.create(kernel)
    container = docker_client.containers.get(state.container_id)
    assert container.exec_run(["sh", "-c", "echo kept-by-commit > /home/work/note.txt"]).exit_code == 0
    repository, tag = target("files")
    committed.append(f"{repository}:{tag}")

    endpoint = commit_kind.open_commit(backend, kernel.kernel_id, {
        "repository": repository, "tag": tag, "labels": {OWNER_LABEL: "user:abc", "ai.backend.x": "a \"b\" $HOME"}})
    lines = read_lines(endpoint)

    assert endpoint.exit_code() == 0
    progress = [line for line in lines if line["type"] == "progress"]
    assert progress and progress[-1]["current"] == progress[-1]["total"] == commit_kind.TOTAL_STEPS
    result = lines[-1]
    assert result["type"] == "result" and result["image"] == f"{repository}:{tag}"
    image = docker_client.images.get(result["image"])
    assert result["digest"] == image.id and result["size"] > 0 and result["architecture"] == "x86_64"
    labels = image.attrs["Config"]["Labels"]
    assert labels[OWNER_LABEL] == "user:abc" and labels["ai.backend.x"] == 'a "b" $HOME'
    assert labels["ai.backend.kernel-id"] == "" and labels["ai.backend.session-id"] == ""  # reset, not kept
    assert labels["ai.backend.runtime-type"] == "app"  # the source image's labels stay
    assert result["labels"] == labels
    env = image.attrs["Config"]["Env"]
    assert "SECRET_TOKEN=" in env and not any("s3cr3t" in item for item in env)
    assert not any(kernel.kernel_id in item for item in env)
    source = docker_client.images.get(test_images["shell"])
    assert image.attrs["Config"]["Cmd"] == source.attrs["Config"]["Cmd"]  # not the startup command

    backend.stop(kernel.kernel_id, "user-requested")
    second = spec(result["image"])
    state2 = backend.create(second)
    container2 = docker_client.containers.get(state2.container_id)
    out = container2.exec_run(["cat", "/home/work/note.txt"])
    assert (out.exit_code, out.output) == (0, b"kept-by-commit\n")
    assert container2.labels["ai.backend.kernel-id"] == second.kernel_id
    backend.stop(second.kernel_id, "user-requested")


def test_a_second_commit_of_the_same_kernel_waits_for_the_first_and_bad_fields_are_refused(
        backend, test_images, committed):
    kernel = spec(test_images["shell"])
    backend.create(kernel)
    repository, tag = target("twice")
    committed.append(f"{repository}:{tag}")
    first = commit_kind.open_commit(backend, kernel.kernel_id, {"repository": repository, "tag": tag})
    with pytest.raises(KernelError, match="being committed"):
        commit_kind.open_commit(backend, kernel.kernel_id, {"repository": repository, "tag": tag + "b"})
    assert read_lines(first)[-1]["type"] == "result"
    for fields, what in [({"repository": "Upper/Case", "tag": "x"}, "repository"),
                         ({"repository": "reg.example.com:5000/x", "tag": "x"}, "repository"),
                         ({"repository": "ok", "tag": "-bad"}, "tag"),
                         ({"repository": "ok", "tag": "x", "labels": {"k": "line\nbreak"}}, "labels"),
                         ({"repository": "ok", "tag": "x", "labels": ["k"]}, "labels"),
                         ({"tag": "x"}, "repository")]:
        with pytest.raises(KernelError, match=what) as info:
            commit_kind.open_commit(backend, kernel.kernel_id, fields)
        assert info.value.reason == "bad-request"
    with pytest.raises(KernelError) as info:
        commit_kind.open_commit(backend, str(uuid.uuid4()), {"repository": repository, "tag": "other"})
    assert info.value.reason == "kernel-not-running"


def test_a_kernel_that_stopped_before_the_commit_ends_the_answer_with_an_error_line(backend, test_images):
    kernel = spec(test_images["shell"])
    backend.create(kernel)
    repository, tag = target("stopped")
    endpoint = commit_kind.open_commit(backend, kernel.kernel_id, {"repository": repository, "tag": tag})
    backend.stop(kernel.kernel_id, "user-requested")
    lines = read_lines(endpoint)
    assert lines[-1]["type"] == "error" and lines[-1]["reason"] == "kernel-not-running"
    assert endpoint.exit_code() == 1
    # the kernel is free again: a new commit is refused only because it is gone
    with pytest.raises(KernelError) as info:
        commit_kind.open_commit(backend, kernel.kernel_id, {"repository": repository, "tag": tag})
    assert info.value.reason == "kernel-not-running"


def test_the_local_backend_refuses_to_commit(tmp_path):
    local = LocalBackend(BackendSettings(agent_id="pytest-commit-local", scratch_root=tmp_path))
    with pytest.raises(KernelError) as info:
        commit_kind.open_commit(local, str(uuid.uuid4()), {"repository": "x", "tag": "y"})
    assert info.value.reason == "not-supported" and "only Docker kernels" in str(info.value)
