"""Uploads cut short by a daemon killed mid-transfer (``kill -9``: no close, no discard) leave their
``.<name>.bai-upload-<random>`` files behind; the restarted daemon removes them when it re-adopts the
kernel, on both backends, and leaves mounted folders (possibly shared with other agents) alone."""
from __future__ import annotations

import os

from agents.daemon import files
from agents.protocol import CHUNK

from .test_agent_sync import make_agent  # noqa: F401 - fixture
from .test_files_kinds import Kernel, docker_backend, kernel, kernel_spec, local_backend  # noqa: F401 - fixtures


def _cut_short(kernel, path: str) -> None:
    """An upload that got some bytes and then nothing: the daemon died before it could discard it."""
    endpoint = files.open_upload(kernel.backend, kernel.id, {"path": path, "size": 10 * CHUNK})
    endpoint.write(b"x" * CHUNK)


def _leftovers(kernel, path=".") -> list[str]:
    return [n for n in kernel.names(path) if files.TEMP_MARK in n]


def _left_behind(kernel, path: str) -> None:
    """What an upload killed midway leaves: its temporary file, partly written (a Docker upload that
    is still streaming holds the container's archive call, so it is planted as the kill leaves it)."""
    if kernel.backend.name == "local":
        _cut_short(kernel, path)
        return
    directory, name = os.path.split(f"/home/work/{path}")
    leftover = f"{directory}/.{name}{files.TEMP_MARK}d1e2a3"
    code, _ = files.DockerFiles(kernel.backend, kernel.id)._exec(
        ["/bin/sh", "-c", 'head -c 4096 /dev/zero > "$1"', "sh", leftover], user="root")
    assert code == 0


def test_it_removes_the_temporary_files_of_uploads_cut_short_in_the_work_directory(kernel):
    kernel.upload("sub/keep.txt", b"kept")
    _left_behind(kernel, "big.bin")
    _left_behind(kernel, "sub/deeper.bin")
    assert _leftovers(kernel) and _leftovers(kernel, "sub")
    assert files.sweep_uploads(kernel.backend, kernel.id) == 2
    assert _leftovers(kernel) == [] and _leftovers(kernel, "sub") == []
    assert kernel.download("sub/keep.txt", raw=True) == b"kept"  # nothing else is touched
    assert files.sweep_uploads(kernel.backend, kernel.id) == 0


def test_it_leaves_uploads_in_progress_in_a_mounted_folder_alone(local_backend, tmp_path):
    folder = tmp_path / "shared-vfolder"
    folder.mkdir()
    kernel = Kernel(local_backend, kernel_spec("local/shell:1.0", mounts=[
        {"host_path": str(folder), "container_path": "/home/work/data", "mode": "rw"}]))
    _cut_short(kernel, "data/theirs.bin")  # as if another agent's session were uploading into the folder
    assert files.sweep_uploads(local_backend, kernel.id) == 0
    assert [n for n in os.listdir(folder) if files.TEMP_MARK in n]


def test_a_restarted_daemon_sweeps_the_kernels_it_re_adopts(make_agent):  # noqa: F811
    first = make_agent()
    kernel = Kernel(first.backend, kernel_spec("local/shell:1.0"))
    _cut_short(kernel, "cut.bin")
    assert _leftovers(kernel)
    first.request_stop()  # its kernels go on running, as after kill -9
    second = make_agent()
    assert [s.kernel_id for s in second.backend.list_kernels()] == [kernel.id]
    assert [n for n in os.listdir(second.backend._dir(kernel.id) / "home" / "work") if files.TEMP_MARK in n] == []
