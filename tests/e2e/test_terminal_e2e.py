"""Terminals end to end: ``/stream/session/{s}/pty`` on a real daphne, relayed
through the channel layer and the agent's link to ``docker exec`` in a real
``bai-test/shell:1.0`` container; signed like the official client, and from the
session page in Chromium (xterm.js, the login cookie).

Set ``TERMINAL_UI_SCREENSHOTS=<dir>`` to keep a screenshot of the session page's terminal."""
from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from backendai.signing import signed_headers
from helpers import (
    exit_page_terminal,
    logged_in_page,
    open_page_terminal,
    terminal_read_until,
    terminal_stdin,
    type_in_page_terminal,
)
from sessions.models import Session

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = os.environ.get("TERMINAL_UI_SCREENSHOTS")  # a directory: keep a screenshot of the terminal


def running_session(live_stack, user, name, image="bai-test/shell:1.0"):
    keypair = user.main_keypair
    body = {"image": image, "name": name, "config": {"resources": {"cpu": "0.25", "mem": "128m"}}}
    headers = signed_headers(keypair.access_key, keypair.secret_key, "POST", "/session", live_stack.host)
    created = httpx.post(live_stack.url + "/session", headers=headers, content=json.dumps(body), timeout=90)
    assert created.status_code in (200, 201), created.text
    return live_stack.wait_for(lambda: Session.objects.filter(name=name, status="RUNNING").first(), timeout=90,
                               what=f"session {name} RUNNING")


def pty(live_stack, user, session_ref, secret=None, host=None):
    """A terminal websocket signed exactly like the official client signs upgrades."""
    keypair = user.main_keypair
    host = host or live_stack.host
    target = f"/stream/session/{session_ref}/pty"
    headers = signed_headers(keypair.access_key, secret or keypair.secret_key, "GET", target, host,
                             content_type="application/octet-stream")
    headers.pop("Content-Type")
    return connect(f"ws://{host}{target}", additional_headers=headers, open_timeout=15, proxy=None)


def test_a_signed_terminal_runs_echo_hello_in_the_container(live_stack, docker_node, owner, docker_client):
    session = running_session(live_stack, owner, "term-e2e")
    with pty(live_stack, owner, "term-e2e") as ws:
        ws.send(terminal_stdin("echo hello\n"))
        assert "\r\nhello\r\n" in terminal_read_until(ws, "\r\nhello\r\n")
        ws.send(json.dumps({"type": "resize", "rows": 33, "cols": 101}))
        ws.send(terminal_stdin("stty size\n"))
        terminal_read_until(ws, "33 101")
        ws.send(json.dumps({"type": "ping"}))
        with pty(live_stack, owner, str(session.pk)) as second:  # a second terminal, by id
            second.send(terminal_stdin("echo $((40 + 2))\n"))
            terminal_read_until(second, "\r\n42\r\n")
        ws.send(terminal_stdin("sleep 5000\n"))
        time.sleep(0.5)
    container = docker_client.containers.get(session.kernels.get().container_id)
    deadline = time.monotonic() + 10  # closing the websocket ended the shell and its command
    while b"sleep 5000" in container.exec_run(["ps"]).output:
        assert time.monotonic() < deadline, container.exec_run(["ps"]).output.decode()
        time.sleep(0.3)

    with pty(live_stack, owner, "term-e2e") as ws:  # the shell exiting closes the websocket
        ws.send(terminal_stdin("exit 4\n"))
        frames = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                frames.append(json.loads(ws.recv(timeout=20)))
        assert {"type": "exit", "exit_code": 4} in frames
        assert closed.value.rcvd.code == 1000


SDK_PTY = """
import asyncio, base64, json
from ai.backend.client.session import AsyncSession

async def main():
    async with AsyncSession() as api:
        async with api.ComputeSession("term-sdk").stream_pty() as pty:
            # (StreamPty.resize() of 23.09 is broken: it uses a missing .ws attribute)
            await pty.send_json({"type": "resize", "rows": 30, "cols": 90})
            await pty.send_json({"type": "stdin", "chars": base64.b64encode(b"echo hello; stty size\\n").decode()})
            out = ""
            while "30 90" not in out:
                frame = await asyncio.wait_for(pty.raw_websocket.receive_json(), 20)
                if frame["type"] == "out":
                    out += base64.b64decode(frame["data"]).decode()
    print(json.dumps({"out": out}))

asyncio.run(main())
"""


def test_the_official_sdks_stream_pty_runs_echo_hello(live_stack, docker_node, owner, stack_client):
    running_session(live_stack, owner, "term-sdk")
    out = stack_client.script_json(owner.main_keypair, SDK_PTY)["out"]
    assert "\r\nhello\r\n30 90\r\n" in out, out


def test_others_and_unsigned_clients_are_refused(live_stack, docker_node, owner, member, outsider):
    session = running_session(live_stack, owner, "term-private")
    for user, ref, secret in ((member, str(session.pk), None), (outsider, str(session.pk), None),
                              (member, "term-private", None), (owner, "term-private", "wrong-secret")):
        with pytest.raises(InvalidStatus) as refused:
            pty(live_stack, user, ref, secret)
        assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://{live_stack.host}/stream/session/{session.pk}/pty", open_timeout=15, proxy=None)
    assert refused.value.response.status_code == 403


def test_the_session_page_opens_a_terminal_in_the_browser(live_stack, docker_node, owner, password, browser,
                                                          xterm_assets, settings):
    # the test process hashes with MD5 for speed; daphne checks with the real hashers
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    owner.set_password(password)
    owner.save(update_fields=["password"])
    session = running_session(live_stack, owner, "term-browser", image="bai-test/http:1.0")
    with logged_in_page(browser, live_stack.url, owner, password, viewport={"width": 1280, "height": 900}) as page:
        page.goto(f"/ui/sessions/{session.pk}/")
        # one launch button per HTTP app (to the app proxy, in a new tab); the CLI command for TCP apps
        form = page.locator('tr[data-app="web"] form.app-open-form')
        assert form.get_attribute("target") == "_blank"
        assert form.get_attribute("action") == f"/ui/sessions/{session.pk}/apps/web/open"
        assert "backend.ai app term-browser echo -b 127.0.0.1:9000" in page.locator(
            'tr[data-app="echo"] .app-cli').inner_text()

        open_page_terminal(page)
        type_in_page_terminal(page, "echo hello\n", "hello")
        if SCREENSHOTS:
            Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(SCREENSHOTS) / "terminal.png"), full_page=True)
        before = page.evaluate("document.querySelectorAll('#terminal-screen .xterm-rows > div').length")
        page.set_viewport_size({"width": 1280, "height": 500})  # the terminal follows the window
        page.keyboard.type("stty size\n")
        page.wait_for_function("""() => Array.from(document.querySelectorAll('#terminal-screen .xterm-rows > div'))
                                   .some(row => /^\\d+ \\d+$/.test(row.textContent.trim()))""")
        rows_text = page.evaluate("""Array.from(document.querySelectorAll('#terminal-screen .xterm-rows > div'))
                                     .map(r => r.textContent.trim()).filter(t => /^\\d+ \\d+$/.test(t))[0]""")
        rows, cols = map(int, rows_text.split())
        assert rows > 5 and cols > 40 and before > 5
        exit_page_terminal(page)
        assert re.search(r"code 0", page.locator("#terminal-state").inner_text())


def test_a_terminal_on_another_daphne_reaches_the_agent_through_redis(live_stack, docker_node, owner, require,
                                                                     settings):
    """The agent's link is on the stack's daphne; the terminal's websocket on a second one."""
    require(bool(settings.REDIS_URL), "Redis (the channel layer two daphne processes share)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    live_stack.start("web2", [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                              "backendai.asgi:application"])

    def second_up():
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    live_stack.wait_for(second_up, what="the second daphne")
    running_session(live_stack, owner, "term-redis")
    with pty(live_stack, owner, "term-redis", host=f"127.0.0.1:{port}") as ws:
        ws.send(terminal_stdin("echo hello\n"))
        assert "\r\nhello\r\n" in terminal_read_until(ws, "\r\nhello\r\n")


def _free_block(size: int) -> int:
    import random

    for _ in range(200):
        base = random.randrange(45000, 59000)
        try:
            held = []
            for port in range(base, base + size):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
        return base
    raise RuntimeError("no free port block")


def test_an_app_button_opens_the_app_through_the_proxy_in_a_new_tab(live_stack, docker_node, owner, password,
                                                                    browser, settings):
    from appproxy import services as proxy_services

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    owner.set_password(password)
    owner.save(update_fields=["password"])
    base = _free_block(12)
    token = proxy_services.issue_token("e2e buttons", authority="e2e-buttons")[1]
    live_stack.start("proxy", [sys.executable, "-m", "appproxy.worker", "--coordinator-url", live_stack.url,
                               "--name", "e2e-buttons", "--mode", "port", "--bind-host", "127.0.0.1",
                               "--port-range", f"{base}-{base + 9}", "--api-port", str(base + 10),
                               "--heartbeat-interval", "1", "--sync-interval", "2"], {"BAI_PROXY_TOKEN": token})

    def proxy_up():
        try:
            return httpx.get(f"http://127.0.0.1:{base + 10}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    live_stack.wait_for(proxy_up, what="the proxy worker")
    session = running_session(live_stack, owner, "apps-browser", image="bai-test/http:1.0")
    with logged_in_page(browser, live_stack.url, owner, password) as page:
        page.goto(f"/ui/sessions/{session.pk}/")
        with page.context.expect_page() as opened:
            page.click('[data-app-open="web"]')
        tab = opened.value
        tab.wait_for_load_state("domcontentloaded")
        assert "bai-test http app" in tab.content(), tab.url
        assert urlsplit(tab.url).port in range(base, base + 10), tab.url  # served by the worker, port mode
        assert page.url.endswith(f"/ui/sessions/{session.pk}/")  # the session page stays where it was
