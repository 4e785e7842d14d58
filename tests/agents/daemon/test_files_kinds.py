"""The ``files``, ``download`` and ``upload`` stream kinds (``agents.daemon.files``) on both backends:
a real local kernel (a process group, its work directory under ``tmp_path``) and a real
``bai-test/shell:1.0`` container; plus one round trip through the real ``StreamMux`` and link."""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import uuid

import pytest

from agents.daemon import files
from agents.daemon.backends.base import BackendSettings, KernelError
from agents.daemon.backends.docker import LABEL_AGENT, DockerBackend
from agents.daemon.backends.local import LocalBackend
from agents.protocol import CHUNK, KernelSpec, encode_data

from .test_pty_streams import backend, link, manager  # noqa: F401 - fixtures

AGENT_ID = f"pytest-files-{os.getpid()}"
MiB = 2**20


def kernel_spec(image: str, **extra) -> KernelSpec:
    data = {"kernel_id": str(uuid.uuid4()), "session_id": str(uuid.uuid4()), "image": image,
            "session_type": "interactive", "cluster_hostname": "main1",
            "slots": {"cpu": "0.5", "mem": str(64 * MiB)}, "startup_command": None}
    data.update(extra)
    return KernelSpec.from_wire(data)


@pytest.fixture
def local_backend(tmp_path):
    backend = LocalBackend(BackendSettings(agent_id=AGENT_ID, scratch_root=tmp_path / "scratch",
                                           port_range=(31450, 31469), stop_timeout=2))
    yield backend
    for state in backend.list_kernels():
        backend.stop(state.kernel_id, "test-cleanup")


@pytest.fixture
def docker_backend(request, tmp_path):
    docker_client = request.getfixturevalue("docker_client")
    request.getfixturevalue("test_images")
    backend = DockerBackend(BackendSettings(agent_id=AGENT_ID, scratch_root=tmp_path / "docker",
                                            port_range=(31470, 31489), stop_timeout=2), client=docker_client)
    yield backend
    for container in docker_client.containers.list(all=True, filters={"label": f"{LABEL_AGENT}={AGENT_ID}"}):
        container.remove(force=True, v=True)


class Kernel:
    """A running kernel of one backend, with the calls the manager would make."""

    def __init__(self, backend, spec):
        self.backend = backend
        self.id = spec.kernel_id
        backend.create(spec)

    def list(self, path=".") -> dict:
        return json.loads(files.open_files(self.backend, self.id, {"path": path}).read(10 * MiB))

    def download(self, *paths, raw=False) -> bytes:
        endpoint = files.open_download(self.backend, self.id, {"paths": list(paths), "raw": raw})
        out = bytearray()
        while chunk := endpoint.read(CHUNK):
            out += chunk
        assert endpoint.exit_code() == 0
        return bytes(out)

    def tar(self, *paths) -> tarfile.TarFile:
        return tarfile.open(fileobj=io.BytesIO(self.download(*paths)))

    def upload(self, path, data: bytes, size=None, eof=True):
        endpoint = files.open_upload(self.backend, self.id, {"path": path, "size": len(data) if size is None else size})
        try:
            for start in range(0, len(data), CHUNK):
                endpoint.write(data[start:start + CHUNK])
        except OSError:
            pass  # the agent stopped taking data: its answer says why
        if eof:
            endpoint.write_eof()
        return json.loads(endpoint.read(CHUNK)), endpoint.exit_code()

    def names(self, path=".") -> list[str]:
        return [e["filename"] for e in self.list(path)["files"]]


@pytest.fixture(params=["local", "docker"])
def kernel(request):
    if request.param == "local":
        return Kernel(request.getfixturevalue("local_backend"), kernel_spec("local/shell:1.0"))
    return Kernel(request.getfixturevalue("docker_backend"), kernel_spec("bai-test/shell:1.0"))


def test_an_upload_lands_whole_at_its_path_and_lists_and_downloads_byte_identical(kernel):
    payload = os.urandom(3 * MiB + 11)
    answer, code = kernel.upload("/home/work/sub/dir/data.bin", payload)
    assert (answer, code) == ({"path": "/home/work/sub/dir/data.bin", "size": len(payload)}, 0)
    listing = kernel.list("sub/dir")
    assert listing["abspath"] == "/home/work/sub/dir" and listing["truncated"] is False
    [entry] = listing["files"]
    assert (entry["filename"], entry["size"], entry["mode"]) == ("data.bin", len(payload), "-rw-r--r--")
    tar = kernel.tar("sub", "sub/dir/data.bin")
    assert sorted(tar.getnames()) == ["data.bin", "sub", "sub/dir", "sub/dir/data.bin"]
    assert hashlib.sha256(tar.extractfile("sub/dir/data.bin").read()).digest() == hashlib.sha256(payload).digest()
    assert kernel.download("sub/dir/data.bin", raw=True) == payload
    assert not [n for n in kernel.names("sub/dir") if files.TEMP_MARK in n]


def test_an_upload_replaces_the_file_and_an_empty_file_is_fine(kernel):
    kernel.upload("f.txt", b"a much longer first version")
    kernel.upload("f.txt", b"v2")
    assert kernel.download("f.txt", raw=True) == b"v2"
    assert kernel.upload("empty", b"")[1] == 0
    assert kernel.download("empty", raw=True) == b""


@pytest.mark.parametrize("path", ["../x", "a/../../x", "/etc/passwd", "/home/workx/y", "a\x00b", 7, None, ["a"],
                                  "x" * 5000])
def test_paths_outside_the_work_directory_or_malformed_are_refused(kernel, path):
    for call in (lambda: kernel.list(path), lambda: kernel.download(path), lambda: kernel.upload(path, b"x")):
        with pytest.raises(KernelError) as refused:
            call()
        assert refused.value.reason == "invalid-path"


def test_missing_paths_and_wrong_kinds_of_file_are_refused_with_their_reason(kernel):
    kernel.upload("d/f.txt", b"f")
    cases = [(lambda: kernel.list("nope"), "not-found"), (lambda: kernel.download("d", "nope"), "not-found"),
             (lambda: kernel.list("d/f.txt"), "not-a-directory"), (lambda: kernel.download("d", raw=True),
                                                                   "is-a-directory"),
             (lambda: kernel.upload("d", b"x"), "is-a-directory"), (lambda: kernel.upload("d/f.txt/g", b"x"),
                                                                   "not-a-directory")]
    for call, reason in cases:
        with pytest.raises(KernelError) as refused:
            call()
        assert refused.value.reason == reason


def test_an_upload_with_too_many_or_too_few_bytes_leaves_nothing_behind(kernel):
    answer, code = kernel.upload("new/dir/f.bin", b"x" * 100, size=10)
    assert (answer["error"], code) == ("too-large", 1)
    answer, code = kernel.upload("new/dir/f.bin", b"x" * 5, size=10)
    assert (answer["error"], code) == ("incomplete", 1)
    assert "new" not in kernel.names()  # the directories made for it are gone again


def test_an_upload_cancelled_midway_leaves_no_temporary_file(kernel):
    endpoint = files.open_upload(kernel.backend, kernel.id, {"path": "part.bin", "size": 10 * CHUNK})
    endpoint.write(b"x" * CHUNK)
    endpoint.close()
    assert endpoint.read(CHUNK) == b""
    assert [n for n in kernel.names() if "part.bin" in n] == []


def test_an_upload_larger_than_the_limit_is_refused_at_open(kernel):
    with pytest.raises(KernelError) as refused:
        files.open_upload(kernel.backend, kernel.id, {"path": "big", "size": 11, "limit": 10})
    assert refused.value.reason == "too-large"
    with pytest.raises(KernelError):
        files.open_upload(kernel.backend, kernel.id, {"path": "big", "size": -1})
    with pytest.raises(KernelError):
        files.open_upload(kernel.backend, kernel.id, {"path": f"a{files.TEMP_MARK}b", "size": 1})


def test_a_listing_shows_dot_files_and_directories_with_their_modes(kernel):
    kernel.upload(".hidden", b"h")
    kernel.upload("dir/x", b"x")
    entries = {e["filename"]: e for e in kernel.list()["files"]}
    assert entries[".hidden"]["mode"] == "-rw-r--r--" and entries["dir"]["mode"].startswith("d")
    assert "." not in entries and ".." not in entries


def test_a_kernel_that_is_not_running_here_is_refused(kernel):
    with pytest.raises(KernelError) as refused:
        files.open_files(kernel.backend, str(uuid.uuid4()), {"path": "."})
    assert refused.value.reason in ("kernel-not-running", "invalid-kernel-id")


# --- the local backend: symlinks and mounts -----------------------------------------------------------

def test_local_symlinks_out_of_the_work_directory_are_not_followed(local_backend, tmp_path):
    kernel = Kernel(local_backend, kernel_spec("local/shell:1.0"))
    work = local_backend._dir(kernel.id) / "home" / "work"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("top-secret-content")
    os.symlink(outside, work / "out")
    os.symlink(outside / "secret", work / "secret-link")
    for call in (lambda: kernel.list("out"), lambda: kernel.download("out/secret"),
                 lambda: kernel.download("secret-link", raw=True), lambda: kernel.upload("out/planted", b"x")):
        with pytest.raises(KernelError) as refused:
            call()
        assert refused.value.reason == "invalid-path"
    assert os.listdir(outside) == ["secret"]
    # a directory holding such a link is sent with the link as a link, not what it points to
    os.mkdir(work / "holder")
    os.symlink(outside / "secret", work / "holder" / "inner")
    tar = kernel.tar("holder")
    assert tar.getmember("holder/inner").issym() and b"top-secret-content" not in kernel.download("holder")


def test_local_mounts_are_reachable_through_their_symlinks(local_backend, tmp_path):
    folder = tmp_path / "vfolder"
    folder.mkdir()
    (folder / "in-folder.txt").write_text("from the folder")
    kernel = Kernel(local_backend, kernel_spec("local/shell:1.0", mounts=[
        {"host_path": str(folder), "container_path": "/home/work/data", "mode": "rw"}]))
    assert kernel.names("data") == ["in-folder.txt"]
    assert kernel.download("data/in-folder.txt", raw=True) == b"from the folder"
    assert kernel.upload("data/new.txt", b"new")[1] == 0
    assert (folder / "new.txt").read_bytes() == b"new"


# --- the Docker backend: ownership ----------------------------------------------------------------

def test_docker_uploads_belong_to_the_work_directorys_owner(docker_backend):
    kernel = Kernel(docker_backend, kernel_spec("bai-test/shell:1.0"))
    kernel.upload("a/b/owned.txt", b"x")
    tar = kernel.tar("a")
    assert {(m.name, m.uid, m.gid) for m in tar.getmembers()} == {("a", 1000, 1000), ("a/b", 1000, 1000),
                                                                 ("a/b/owned.txt", 1000, 1000)}


# --- through the stream multiplexer --------------------------------------------------------------------

def test_an_upload_then_a_download_travel_over_the_link(manager, link):  # noqa: F811
    backend = link.backend
    kernel = Kernel(backend, kernel_spec("local/shell:1.0"))
    payload = os.urandom(6 * CHUNK + 5)
    sid = uuid.uuid4().hex
    manager.send({"type": "stream.open", "stream": sid, "kind": "upload", "kernel_id": kernel.id, "window": 64,
                  "path": "over/link.bin", "size": len(payload)})
    assert manager.next() == {"type": "stream.opened", "stream": sid}
    for start in range(0, len(payload), CHUNK):
        manager.send(encode_data(sid, payload[start:start + CHUNK]))
    manager.send({"type": "stream.eof", "stream": sid})
    manager.output_until(sid, rb'"size": %d\}' % len(payload))
    assert manager.next() == {"type": "stream.close", "stream": sid, "exit_code": 0, "reason": "done"}

    sid = uuid.uuid4().hex
    manager.send({"type": "stream.open", "stream": sid, "kind": "download", "kernel_id": kernel.id, "window": 64,
                  "paths": ["over/link.bin"], "raw": True})
    assert manager.next() == {"type": "stream.opened", "stream": sid}
    assert manager.next() == {"type": "stream.close", "stream": sid, "exit_code": 0, "reason": "done"}
    assert manager.data[sid] == payload

    sid = uuid.uuid4().hex
    manager.send({"type": "stream.open", "stream": sid, "kind": "files", "kernel_id": kernel.id, "path": "../x"})
    frame = manager.next()
    assert frame["type"] == "stream.error" and frame["message"].startswith("invalid-path:")
