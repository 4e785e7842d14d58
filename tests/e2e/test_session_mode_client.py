"""The official client in session mode (``BACKEND_ENDPOINT_TYPE=session``, no keypair)
against a live server: ``login`` (a password typed on stdin; 24.09+ send the encoded
body over http), ``ps`` through ``/func/`` with the cookie it saved, ``logout``, after
which the cookie opens nothing.  23.9.10 always; 24.9.14 and 26.9.6 where scripts/test
installed them (``BACKENDAI_CLIENT24_BIN`` / ``BACKENDAI_CLIENT26_BIN``)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from .conftest import CLIENT_VERSIONS, client_binary

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TIMEOUT = 90


class SessionModeClient:
    """The CLI with a home and working directory of its own, talking to ``endpoint`` in session mode."""

    def __init__(self, binary: Path, endpoint: str, tmp_path: Path):
        self.binary = binary
        self.home = tmp_path / "home"
        self.cwd = tmp_path / "cwd"
        self.home.mkdir()
        self.cwd.mkdir()
        self.env = {
            "PATH": f"{binary.parent}{os.pathsep}/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "BACKEND_ENDPOINT": endpoint,
            "BACKEND_ENDPOINT_TYPE": "session",
        }

    def run(self, *args, stdin: str = "") -> subprocess.CompletedProcess:
        # a session of its own: no controlling terminal, so getpass() reads the password from stdin
        return subprocess.run([str(self.binary), *args], cwd=self.cwd, env=self.env, input=stdin, text=True,
                              capture_output=True, timeout=TIMEOUT, start_new_session=True)

    @property
    def cookie_file(self) -> Path:
        return self.home / ".local" / "state" / "backend.ai" / "cookie.dat"


def shown(done: subprocess.CompletedProcess) -> str:
    return f"rc={done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"


@pytest.fixture
def queued_session(make_user, password):
    """A user with a PENDING session (what ``ps`` must list)."""
    from agents import services as agent_services
    from helpers import seed_http_image_and_agent
    from sessions.enqueue import EnqueueRequest, enqueue

    user = make_user("session-mode@example.com")
    seed_http_image_and_agent(agent_services.ensure_default_scaling_group())
    enqueue(user, user.main_keypair, EnqueueRequest(image="bai-test/http:1.0", name="cookie-sess",
                                                    enqueue_only=True, resources={"cpu": "1", "mem": "256m"}))
    return user


@pytest.mark.parametrize("version", list(CLIENT_VERSIONS))
def test_login_ps_and_logout_work_in_session_mode(version, require, live_server, queued_session, password,
                                                  make_user, tmp_path):
    from accounts.models import Keypair

    other = make_user("someone-else@example.com")
    cli = SessionModeClient(client_binary(version, require), live_server.url, tmp_path)

    login = cli.run("login", stdin=f"{queued_session.email}\n{password}\n")
    assert login.returncode == 0 and "Login succeeded" in login.stdout + login.stderr, shown(login)
    assert cli.cookie_file.is_file()

    listed = cli.run("--output", "json", "ps")
    assert listed.returncode == 0, shown(listed)
    # an APIVersionWarning (our v8 is newer than 23.09's v7) may come before the JSON document
    items = json.loads(listed.stdout[listed.stdout.index("{"):])["items"]
    assert [item["name"] for item in items] == ["cookie-sess"], shown(listed)
    used = Keypair.objects.get(pk=queued_session.main_keypair_id)
    assert used.num_queries >= 2 and Keypair.objects.get(pk=other.main_keypair_id).num_queries == 0

    logout = cli.run("logout")
    assert logout.returncode == 0 and "Logout done" in logout.stdout + logout.stderr, shown(logout)
    assert not cli.cookie_file.exists()

    after = cli.run("--output", "json", "ps")
    assert after.returncode != 0 or "cookie-sess" not in after.stdout, shown(after)


@pytest.mark.parametrize("version", list(CLIENT_VERSIONS))
def test_a_wrong_password_is_reported_and_saves_no_cookie(version, require, live_server, queued_session, tmp_path):
    cli = SessionModeClient(client_binary(version, require), live_server.url, tmp_path)
    login = cli.run("login", stdin=f"{queued_session.email}\nnot-the-password\n")
    assert "Login failed" in login.stdout + login.stderr, shown(login)
    assert "User credential mismatch" in login.stdout + login.stderr, shown(login)
    assert login.returncode != 0 and not cli.cookie_file.exists(), shown(login)
