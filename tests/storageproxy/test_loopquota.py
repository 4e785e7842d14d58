"""The ``loopquota`` backend: a limited scope is its own ext4 filesystem in a loop-mounted
image, so the kernel refuses the bytes past the limit.  Needs root, mkfs.ext4, resize2fs,
e2fsck and losetup (fails under CI=true when they are missing)."""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import time
import uuid

import httpx
import jwt
import pytest
from storageproxy_support import cleanup_mounts, loop_devices_below, mounts_below, start_storage_proxy

from helpers import require
from storageproxy.paths import folder_relpath

from .conftest import SECRET, new_vfid
from .test_manager_api import folder_dir, problem
from .test_transfers import PATCH_HEADERS, TUS, request_upload

MIB = 2**20


@pytest.fixture
def loop_volume(tmp_path):
    require(os.geteuid() == 0, "root (to mount loop devices)")
    for tool in ("mkfs.ext4", "resize2fs", "e2fsck", "losetup", "mount", "umount"):
        require(shutil.which(tool) is not None, f"{tool} (e2fsprogs / util-linux)")
    require(os.path.exists("/dev/loop-control"), "loop devices (/dev/loop-control)")
    root = tmp_path / "lq"
    root.mkdir()
    try:
        yield root
    finally:
        cleanup_mounts(tmp_path)
        assert not mounts_below(tmp_path)
        assert not loop_devices_below(tmp_path)


@pytest.fixture
def loop_proxy(loop_volume, tmp_path):
    handle = start_storage_proxy({"lq": (loop_volume, "loopquota")}, SECRET, log_path=tmp_path / "proxy.log",
                                 extra_args=("--max-chunk-size", "8m"))
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def lq_manager(loop_proxy):
    with httpx.Client(base_url=loop_proxy.manager_url, headers=loop_proxy.auth_headers, timeout=120) as client:
        yield client


def _scope(manager, limit, kind="project"):
    """A limited quota scope (a project's, unless ``kind`` says otherwise) with one folder in it."""
    scope = uuid.uuid4()
    response = manager.post("/quota-scope", json={"volume": "lq", "qsid": f"{kind}:{scope}",
                                                  "options": {"limit_bytes": limit}})
    assert response.status_code == 200, response.text
    vfid = new_vfid(kind, scope=scope)
    assert manager.post("/folder/create", json={"volume": "lq", "vfid": vfid}).status_code == 204
    return f"{kind}:{scope}", vfid


def _upload(client_url, token, data, chunk=4 * MIB):
    offset = 0
    with httpx.Client(base_url=client_url, timeout=120) as client:
        while offset < len(data):
            response = client.patch("/upload", params={"token": token}, content=data[offset:offset + chunk],
                                    headers={**PATCH_HEADERS, "Upload-Offset": str(offset)})
            if response.status_code != 204:
                return response
            offset = int(response.headers["Upload-Offset"])
    return response


def test_a_limited_scope_is_a_mounted_filesystem_that_refuses_bytes_past_the_limit(loop_proxy, lq_manager,
                                                                                      loop_volume):
    qsid, vfid = _scope(lq_manager, 8 * MIB)
    scope_dir = loop_volume / folder_relpath(vfid)[0]
    assert str(scope_dir) in mounts_below(loop_volume)
    assert (loop_volume / ".scopes" / f"{scope_dir.name}.img").is_file()
    assert loop_devices_below(loop_volume)
    info = os.statvfs(scope_dir)
    assert info.f_bavail * info.f_frsize >= 8 * MIB  # the usable bytes cover the limit
    image_size = (loop_volume / ".scopes" / f"{scope_dir.name}.img").stat().st_size
    assert image_size <= 8 * MIB + 2 * MIB + 4 * MIB  # and not much more: the limit, metadata and the journal

    first, second = os.urandom(5 * MIB), os.urandom(5 * MIB)
    token_a = request_upload(lq_manager, vfid, "a.bin", len(first), volume="lq")
    token_b = request_upload(lq_manager, vfid, "b.bin", len(second), volume="lq")  # both fit when asked for
    assert _upload(loop_proxy.client_url, token_a, first).status_code == 204
    refused = _upload(loop_proxy.client_url, token_b, second)
    body = problem(refused, 413, "quota-exceeded")
    assert "the filesystem refused" in body["msg"] and "removed" in body["msg"]
    assert not (folder_dir(loop_volume, vfid) / "b.bin").exists()
    staging = scope_dir / ".staging"
    assert not staging.exists() or not [p for p in staging.iterdir() if p.suffix == ".part"]
    usage = lq_manager.get("/quota-scope", params={"volume": "lq", "qsid": qsid}).json()
    assert usage == {"used_bytes": 5 * MIB, "file_count": 1, "limit_bytes": 8 * MIB}

    # a session writing through its mount meets the same wall
    with pytest.raises(OSError) as exc_info, open(folder_dir(loop_volume, vfid) / "direct.bin", "wb") as fh:
        fh.writelines(b"\0" * MIB for _ in range(8))
        fh.flush()
        os.fsync(fh.fileno())
    assert exc_info.value.errno in (errno.ENOSPC, errno.EDQUOT)
    os.unlink(folder_dir(loop_volume, vfid) / "direct.bin")

    # raising the limit grows the filesystem, online
    assert lq_manager.patch("/quota-scope", json={"volume": "lq", "qsid": qsid,
                                                  "options": {"limit_bytes": 16 * MIB}}).status_code == 200
    info = os.statvfs(scope_dir)
    assert info.f_bavail * info.f_frsize >= 11 * MIB
    token_b = request_upload(lq_manager, vfid, "b.bin", len(second), volume="lq")
    assert _upload(loop_proxy.client_url, token_b, second).status_code == 204
    assert (folder_dir(loop_volume, vfid) / "b.bin").read_bytes() == second

    # lowering below what the scope holds is refused and changes nothing
    problem(lq_manager.patch("/quota-scope", json={"volume": "lq", "qsid": qsid,
                                                   "options": {"limit_bytes": 6 * MIB}}), 400, "invalid-api-params")
    assert lq_manager.get("/quota-scope", params={"volume": "lq", "qsid": qsid}).json()["limit_bytes"] == 16 * MIB

    # a restarted proxy (after the mounts went away, as after a reboot) mounts the scope again
    loop_proxy.stop()
    cleanup_mounts(loop_volume)
    assert not mounts_below(loop_volume)
    loop_proxy.start()
    assert str(scope_dir) in mounts_below(loop_volume)
    with httpx.Client(base_url=loop_proxy.manager_url, headers=loop_proxy.auth_headers, timeout=60) as manager:
        response = manager.post("/folder/file/download", json={"volume": "lq", "vfid": vfid, "relpath": "a.bin"})
        token = response.json()["token"]
        download = httpx.get(loop_proxy.client_url + "/download", params={"token": token}, timeout=60)
        assert hashlib.sha256(download.content).digest() == hashlib.sha256(first).digest()
        assert manager.get("/quota-scope", params={"volume": "lq", "qsid": qsid}).json()["used_bytes"] == 10 * MIB


def test_a_scope_survives_a_killed_proxy_and_its_upload_resumes(loop_proxy, lq_manager, loop_volume):
    _, vfid = _scope(lq_manager, 32 * MIB)
    data = os.urandom(6 * MIB)
    token = request_upload(lq_manager, vfid, "r.bin", len(data), volume="lq")
    with httpx.Client(base_url=loop_proxy.client_url, timeout=60) as client:
        assert client.patch("/upload", params={"token": token}, content=data[:2 * MIB],
                            headers={**PATCH_HEADERS, "Upload-Offset": "0"}).status_code == 204
    loop_proxy.kill()
    loop_proxy.start()  # the mount is still there: the proxy takes it as it is
    with httpx.Client(base_url=loop_proxy.client_url, timeout=60) as client:
        offset = int(client.head("/upload", params={"token": token}, headers=TUS).headers["Upload-Offset"])
        assert offset == 2 * MIB
    with httpx.Client(base_url=loop_proxy.client_url, timeout=60) as client:
        response = client.patch("/upload", params={"token": token}, content=data[offset:],
                                headers={**PATCH_HEADERS, "Upload-Offset": str(offset)})
        assert response.status_code == 204, response.text
    assert (folder_dir(loop_volume, vfid) / "r.bin").read_bytes() == data


def test_unsetting_the_limit_makes_the_scope_a_plain_directory_again(lq_manager, loop_volume):
    qsid, vfid = _scope(lq_manager, 4 * MIB)
    (folder_dir(loop_volume, vfid) / "keep.txt").write_text("kept")
    os.symlink("keep.txt", folder_dir(loop_volume, vfid) / "link")
    scope_dir = loop_volume / folder_relpath(vfid)[0]
    assert lq_manager.request("DELETE", "/quota-scope/quota", json={"volume": "lq", "qsid": qsid}).status_code == 200
    assert str(scope_dir) not in mounts_below(loop_volume)
    assert not loop_devices_below(loop_volume)
    assert (folder_dir(loop_volume, vfid) / "keep.txt").read_text() == "kept"
    assert os.readlink(folder_dir(loop_volume, vfid) / "link") == "keep.txt"
    assert not (scope_dir / "lost+found").exists()
    # and a limit again moves what it holds into a new image
    assert lq_manager.patch("/quota-scope", json={"volume": "lq", "qsid": qsid,
                                                  "options": {"limit_bytes": 4 * MIB}}).status_code == 200
    assert str(scope_dir) in mounts_below(loop_volume)
    assert (folder_dir(loop_volume, vfid) / "keep.txt").read_text() == "kept"


def test_deleting_a_scope_unmounts_it_and_frees_its_loop_device(lq_manager, loop_volume):
    qsid, vfid = _scope(lq_manager, 4 * MIB)
    assert loop_devices_below(loop_volume)
    assert lq_manager.post("/folder/delete", json={"volume": "lq", "vfid": vfid}).status_code == 204
    assert lq_manager.request("DELETE", "/quota-scope", json={"volume": "lq", "qsid": qsid}).status_code == 204
    assert not mounts_below(loop_volume)
    assert not loop_devices_below(loop_volume)
    assert not list((loop_volume / ".scopes").glob("*.img"))


def test_a_clone_into_a_limited_scope_stops_at_the_filesystem(lq_manager, loop_volume):
    _, src = _scope(lq_manager, 16 * MIB)
    (folder_dir(loop_volume, src) / "big").write_bytes(os.urandom(6 * MIB))
    scope = uuid.uuid4()
    lq_manager.post("/quota-scope", json={"volume": "lq", "qsid": f"project:{scope}",
                                          "options": {"limit_bytes": 4 * MIB}})
    dst = new_vfid("project", scope)
    problem(lq_manager.post("/folder/clone", json={"src_volume": "lq", "src_vfid": src, "dst_volume": "lq",
                                                   "dst_vfid": dst}), 412, "quota-exceeded")
    target = folder_dir(loop_volume, dst)
    assert not target.exists() or not any(target.iterdir())


def test_a_folder_moves_between_a_limited_and_an_unlimited_scope(lq_manager, loop_volume):
    _, src = _scope(lq_manager, 8 * MIB)
    (folder_dir(loop_volume, src) / "d").mkdir()
    (folder_dir(loop_volume, src) / "d" / "f").write_bytes(b"across filesystems")
    dst = new_vfid()  # a new, unlimited scope: another filesystem than the image
    response = lq_manager.post("/folder/move", json={"volume": "lq", "src_vfid": src, "dst_vfid": dst})
    assert response.status_code == 200, response.text
    assert (folder_dir(loop_volume, dst) / "d" / "f").read_bytes() == b"across filesystems"
    assert not folder_dir(loop_volume, src).exists()


def test_a_tiny_limit_refuses_an_upload_larger_than_the_limit_at_once(loop_proxy, lq_manager, loop_volume):
    qsid, vfid = _scope(lq_manager, 1000)
    assert (loop_volume / ".scopes" / f"{folder_relpath(vfid)[0]}.img").stat().st_size <= 2 * MIB
    token = request_upload(lq_manager, vfid, "ok.txt", 1000, volume="lq")
    assert _upload(loop_proxy.client_url, token, b"k" * 1000).status_code == 204
    lq_manager.patch("/quota-scope", json={"volume": "lq", "qsid": qsid, "options": {"limit_bytes": 1000}})
    forged = jwt.encode({"op": "upload", "volume": "lq", "vfid": vfid, "relpath": "big", "size": 5000,
                         "session": uuid.uuid4().hex, "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    problem(_upload(loop_proxy.client_url, forged, b"b" * 5000), 413, "quota-exceeded")
    assert not (folder_dir(loop_volume, vfid) / "big").exists()
