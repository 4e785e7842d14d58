"""A download the client closes early is an ordinary disconnect: daphne's log
shows no traceback and no ERROR for it, and the server keeps serving."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from backendai.signing import signed_headers

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SIZE = 64 * 2**20  # far more than the socket buffers hold, so the stream is still running when the client leaves


def api(live_stack, keypair, method, target, body=None):
    headers = signed_headers(keypair.access_key, keypair.secret_key, method, target, live_stack.host)
    return httpx.request(method, live_stack.url + target, headers=headers,
                         content=json.dumps(body) if body is not None else None, timeout=60)


def open_files(pid: int) -> set[str]:
    names = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            names.add(os.readlink(fd))
        except OSError:  # closed meanwhile
            pass
    return names


def read_a_little_and_hang_up(url: str) -> None:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
        received = b""
        while len(received) < 256 * 1024:
            chunk = sock.recv(65536)
            assert chunk, "the server closed the download first"
            received += chunk
        assert received.startswith(b"HTTP/1.1 200")


def test_a_download_closed_early_by_the_client_logs_no_error(live_stack, owner, storage_proxy):
    """The storage proxy serves the bytes (the manager hands out the token): a client that hangs up
    mid-download makes it close the file, log no error, and serve the next download whole."""
    from vfolders import services

    services.ensure_default_storage_host()
    folder = services.create_folder(owner, name="big")
    big = folder.path / "big.bin"
    with open(big, "wb") as handle:
        handle.write(os.urandom(SIZE))
    web = storage_proxy.process.pid
    log_start = os.path.getsize(storage_proxy.log_path)

    for _ in range(3):
        ticket = api(live_stack, owner.main_keypair, "POST", "/folders/big/request-download", {"path": "big.bin"})
        assert ticket.status_code == 200, ticket.text
        read_a_little_and_hang_up(f"{ticket.json()['url']}?token={ticket.json()['token']}")
        # the server noticed: it closed the file it was streaming
        live_stack.wait_for(lambda: str(big) not in open_files(web), timeout=60, what="the download to end")

    # the server still serves a whole download after the hang-ups
    (folder.path / "small.txt").write_text("still here\n")
    ticket = api(live_stack, owner.main_keypair, "POST", "/folders/big/request-download", {"path": "small.txt"})
    whole = httpx.get(ticket.json()["url"], params={"token": ticket.json()["token"]}, timeout=30)
    assert whole.status_code == 200 and whole.content == b"still here\n"
    with open(storage_proxy.log_path, "rb") as fh:
        fh.seek(log_start)
        log = fh.read().decode(errors="replace")
    for marker in ("Traceback", " ERROR ", "AttributeError"):
        assert marker not in log, log
    web_log = live_stack.logs["web"].read_text(errors="replace")
    assert "Traceback" not in web_log, web_log
