"""File bytes flow between the official client and the storage proxy, never through the
manager (issue 14).

The official client 23.9.10 uploads a 200 MiB file with ``vfolder upload`` and downloads it
with ``vfolder download``; the manager (the live server) sits behind a counting relay, so
the test measures the bytes the manager received while the file moved: the client's
``request-upload`` / ``request-download`` calls only, a few KiB.  The storage proxy's client
API sits behind a relay that cuts the download connection once, mid-file: the client resumes
it with ``Range`` / ``If-Range`` and the result is byte-identical.  A tus upload whose
connection is cut resumes from the offset the proxy reports (``HEAD``)."""
from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from relay_support import Relay

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

MiB = 2**20
SIZE = 200 * MiB + 12345  # an odd size: the last tus chunk and the last range are partial
TIMEOUT = 600
MANAGER_BYTES_BUDGET = 16 * 1024  # "a few KiB": the JSON calls that hand out tokens, nothing of the file


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(8 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as out:
        left = size
        while left:
            n = min(16 * MiB, left)
            out.write(os.urandom(n))
            left -= n


@pytest.fixture
def relays(live_server, storage_proxy, settings):
    """A counting relay in front of the manager, and one in front of the proxy's client API that
    the manager hands out as the client URL (so the test can cut a transfer)."""
    manager = Relay("127.0.0.1", urlsplit(live_server.url).port).start()
    proxy = Relay("127.0.0.1", storage_proxy.client_port).start()
    settings.STORAGE_PROXY_CLIENT_URL = proxy.url
    from vfolders import services

    services.ensure_default_storage_host()
    yield manager, proxy
    manager.stop()
    proxy.stop()


@pytest.fixture
def cli(client_bin, require, tmp_path):
    require(client_bin.is_file(), f"the official backend.ai client at {client_bin}")
    home = tmp_path / "cli-home"
    home.mkdir()

    def run(endpoint, keypair, *args, cwd):
        env = {"PATH": f"{client_bin.parent}{os.pathsep}/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
               "BACKEND_ENDPOINT": endpoint, "BACKEND_ACCESS_KEY": keypair.access_key,
               "BACKEND_SECRET_KEY": keypair.secret_key, "BACKEND_ENDPOINT_TYPE": "api"}
        done = subprocess.run([str(client_bin), *args], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        return done

    return run


def stored_path(storage_proxy, folder) -> Path:
    return Path(storage_proxy.root) / folder.host.volume_name / folder.relative_path


def test_the_official_client_moves_200_mib_through_the_storage_proxy_and_the_manager_sees_only_kib(
        make_user, relays, cli, storage_proxy, tmp_path):
    from vfolders.models import VFolder

    manager, proxy = relays
    proxy.cut_after = 70 * MiB  # the download's first connection breaks after 70 MiB answered
    user = make_user("big-files@example.com")
    keypair = user.main_keypair
    source_dir, target_dir = tmp_path / "src", tmp_path / "dst"
    source_dir.mkdir()
    target_dir.mkdir()
    write_random(source_dir / "big.bin", SIZE)
    expected = sha256_of(source_dir / "big.bin")

    cli(manager.url, keypair, "vfolder", "create", "bigdata", "local:volume1", cwd=source_dir)
    folder = VFolder.objects.get(name="bigdata")

    manager.reset_counts()
    proxy.reset_counts()
    cli(manager.url, keypair, "vfolder", "upload", "bigdata", "big.bin", cwd=source_dir)
    upload_manager_bytes = manager.received
    assert proxy.received >= SIZE  # every byte went to the storage proxy ...
    assert upload_manager_bytes < MANAGER_BYTES_BUDGET, upload_manager_bytes  # ... none to the manager
    assert sha256_of(stored_path(storage_proxy, folder) / "big.bin") == expected

    manager.reset_counts()
    proxy.reset_counts()
    connections_before = proxy.connections
    cli(manager.url, keypair, "vfolder", "download", "bigdata", "big.bin", cwd=target_dir)
    assert proxy.cuts == 1 and proxy.connections - connections_before >= 2  # cut once, then resumed
    assert proxy.sent < SIZE + 30 * MiB  # resumed with a range, not started over
    assert manager.received < MANAGER_BYTES_BUDGET and manager.sent < MANAGER_BYTES_BUDGET, \
        (manager.received, manager.sent)
    assert sha256_of(target_dir / "big.bin") == expected
    print(f"\nmanager received {upload_manager_bytes} bytes for a {SIZE}-byte upload; "
          f"{manager.received} received / {manager.sent} sent for the download")


def test_a_tus_upload_cut_midway_resumes_from_the_offset_the_proxy_reports(make_user, relays, signed, storage_proxy):
    from vfolders import services
    from vfolders.models import VFolder

    _, proxy = relays
    proxy.cut_direction, proxy.cut_after = "received", 5 * MiB
    user = make_user("resume@example.com")
    folder = services.create_folder(user, name="resume")
    payload = os.urandom(12 * MiB + 7)
    answer = signed(user).post(f"/folders/{folder.name}/request-upload", {"path": "part.bin", "size": len(payload)})
    assert answer.status_code == 200, answer.content
    ticket = answer.json()
    assert ticket["url"].startswith(proxy.url)  # the client uploads to the storage proxy
    url = f"{ticket['url']}?token={ticket['token']}"
    headers = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream"}
    with pytest.raises(httpx.HTTPError):
        httpx.patch(url, content=payload, headers={**headers, "Upload-Offset": "0"}, timeout=60)
    # a client resumes from the offset HEAD reports; while the proxy is still ending the broken
    # PATCH, the upload is busy (409 with the offset): the client asks again a moment later
    deadline = time.monotonic() + 15
    while True:
        head = httpx.head(url, headers={"Tus-Resumable": "1.0.0"}, timeout=30)
        assert head.status_code == 200
        offset = int(head.headers["Upload-Offset"])
        assert 0 < offset < len(payload)  # what arrived before the cut is kept
        done = httpx.patch(url, content=payload[offset:], headers={**headers, "Upload-Offset": str(offset)},
                           timeout=60)
        if done.status_code != 409:
            break
        assert time.monotonic() < deadline, done.text
        time.sleep(0.2)
    assert done.status_code == 204 and int(done.headers["Upload-Offset"]) == len(payload)
    folder = VFolder.objects.get(pk=folder.pk)
    assert (stored_path(storage_proxy, folder) / "part.bin").read_bytes() == payload
