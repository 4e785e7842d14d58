"""Files in a running session end to end: the official client 23.9.10 (``backend.ai session upload``,
``session ls``, ``session download``) against the real-process stack, the bytes going through
daphne, the channel layer and the agent's link into a real ``bai-test/shell:1.0`` container
and into a local kernel's work directory."""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from helpers import logged_in_page
from sessions.models import Session

from .conftest import CLIENT_VERSIONS
from .test_terminal_e2e import running_session

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

MiB = 2**20


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def make_file(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        for _ in range(size // MiB):
            fh.write(os.urandom(MiB))
        fh.write(os.urandom(size % MiB))
    return path


class RssWatch:
    """The most resident memory of ``pid`` seen while the block runs, sampled every 20 ms, above its
    resident memory when the block started (``grown``)."""

    def __init__(self, pid: int):
        self.pid = pid

    def rss(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def __enter__(self):
        self.start = self.most = self.rss()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while not self.stop.wait(0.02):
            self.most = max(self.most, self.rss())

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.grown = max(self.most, self.rss()) - self.start


def upload_and_list(stack_client, keypair, name: str, cwd: Path, size: int) -> Path:
    """Upload ``sub/big.bin`` (random, ``size`` bytes) and find it in ``session ls``; the source file."""
    source = make_file(cwd / "sub" / "big.bin", size)
    up = stack_client.cli(keypair, "session", "upload", name, "sub/big.bin")
    assert up.returncode == 0 and "Uploaded" in up.stdout + up.stderr, up.stdout + up.stderr
    listed = stack_client.cli(keypair, "session", "ls", name, "/home/work/sub")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "big.bin" in listed.stdout and "-rw-r--r--" in listed.stdout, listed.stdout
    return source


def download(stack_client, keypair, name: str, cwd: Path, dest: str) -> Path:
    down = stack_client.cli(keypair, "session", "download", name, "sub/big.bin", "--dest", dest)
    assert down.returncode == 0 and "Downloaded" in down.stdout + down.stderr, down.stdout + down.stderr
    return cwd / dest / "big.bin"


def test_the_official_client_moves_a_50_mib_file_in_and_out_of_a_docker_session_byte_identical(
        live_stack, docker_node, owner, stack_client, tmp_path):
    session = running_session(live_stack, owner, "files-docker")
    cwd = tmp_path / "client-cwd"
    keypair = owner.main_keypair
    web = live_stack.processes["web"].pid
    # a small round trip first warms the web process's code paths
    upload_and_list(stack_client, keypair, session.name, cwd, 64 * 1024)
    download(stack_client, keypair, session.name, cwd, "warm")

    start = peak_rss(web)
    source = upload_and_list(stack_client, keypair, session.name, cwd, 50 * MiB)
    with RssWatch(web) as watch:
        copy = download(stack_client, keypair, session.name, cwd, "out")
    assert copy.stat().st_size == 50 * MiB and sha256(copy) == sha256(source)
    # daphne queues a request body once for the application (backendai.asgi.tune_daphne keeps it at
    # that: Twisted's own multipart parse took ~9x); the view spools it to disk and relays it in chunks
    grown = peak_rss(web) - start
    assert grown < 50 * MiB + 24 * MiB, f"the web process's peak memory grew by {grown / MiB:.1f} MiB for a " \
                                        "50 MiB upload"
    # the download is relayed chunk by chunk (and paced by the socket): the manager's memory stays flat
    assert watch.grown < 16 * MiB, f"the web process's memory grew by {watch.grown / MiB:.1f} MiB for a 50 MiB " \
                                   "download"

    escaped = stack_client.cli(keypair, "session", "download", session.name, "../../etc/passwd", "--dest", "escaped")
    assert escaped.returncode != 0 and not (cwd / "escaped" / "passwd").exists()
    assert "400" in escaped.stdout + escaped.stderr


#: 24.09 and 26.09 download with ``POST ?files=`` instead of a GET with a JSON body, and 26.09 extracts
#: with ``tarfile.data_filter``.
@pytest.mark.parametrize("client_bin", list(CLIENT_VERSIONS), indirect=True)
def test_the_official_client_moves_files_in_and_out_of_a_local_session(live_stack, cluster, owner, stack_client,
                                                                        tmp_path, client_bin):
    live_stack.start_local_agent("e2e-files-local", cluster[1])
    live_stack.enqueue_shell_session(owner.main_keypair, "files-local")
    session = live_stack.wait_for(lambda: Session.objects.filter(name="files-local", status="RUNNING").first(),
                                  timeout=90, what="the local session RUNNING")
    cwd = tmp_path / "client-cwd"
    source = upload_and_list(stack_client, owner.main_keypair, session.name, cwd, 5 * MiB + 123)
    copy = download(stack_client, owner.main_keypair, session.name, cwd, "out")
    assert sha256(copy) == sha256(source)

    listed = stack_client.cli(owner.main_keypair, "session", "ls", session.name)
    assert listed.returncode == 0 and "sub" in listed.stdout, listed.stdout + listed.stderr
    refused = stack_client.cli(owner.main_keypair, "session", "ls", session.name, "/etc")
    assert refused.returncode != 0


def test_the_session_page_lists_uploads_and_downloads_files_in_the_browser(live_stack, docker_node, owner, password,
                                                                         browser, settings, tmp_path):
    # the test process hashes with MD5 for speed; daphne checks with the real hashers
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    owner.set_password(password)
    owner.save(update_fields=["password"])
    session = running_session(live_stack, owner, "files-browser")
    source = make_file(tmp_path / "from-browser.bin", 3 * MiB + 5)
    with logged_in_page(browser, live_stack.url, owner, password, accept_downloads=True) as page:
        page.goto(f"/ui/sessions/{session.pk}/")
        page.wait_for_selector('#files-listing tr[data-file="www"]')  # the image's own (empty) directory
        page.click('#files-listing tr[data-file="www"] a')
        page.wait_for_selector("#files-listing tr.empty")
        assert page.locator("#files-upload-path").get_attribute("value") == "www"
        assert page.locator("#files-upload-dir").inner_text() == "/home/work/www"

        page.set_input_files("#files-upload input[type=file]", str(source))
        page.click("#files-upload button[type=submit]")
        page.wait_for_load_state("domcontentloaded")
        assert "Uploaded www/from-browser.bin" in page.content()
        page.click('#files-refresh')
        page.wait_for_selector('#files-listing tr[data-file="www"]')
        page.click('#files-listing tr[data-file="www"] a')
        link = page.wait_for_selector('#files-listing tr[data-file="from-browser.bin"] a')
        with page.expect_download() as waiting:
            link.click()
        saved = tmp_path / "saved.bin"
        waiting.value.save_as(saved)
        assert sha256(saved) == sha256(source)
