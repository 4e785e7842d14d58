"""The cards that work inside a running session (run code, files, SSH, commit) in Debian's Chromium against the
real-process stack with a local agent: they offer only what can work (no commit for a session outside Docker, no
actions while the session waits or while its agent is lost, and the page reloads itself when they can), a refusal shows beside its field (an upload over the
limit before it is sent, a name taken by a folder after it), the keyboard runs code, and the file list fits a
phone's width."""
from __future__ import annotations

import pytest

from agents.models import Agent, AgentStatus
from helpers import logged_in_page
from sessions.models import Session

from .test_tcpproxy_e2e import api, running_session

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

AGENT = "e2e-cards-local"
LIMIT = 2000


@pytest.fixture
def live_stack_env():
    return {"SESSION_UPLOAD_MAX_SIZE": str(LIMIT)}


def test_the_session_cards_offer_only_what_works_and_show_refusals_beside_the_field(live_stack, cluster, owner,
                                                                                    password, browser, settings,
                                                                                    tmp_path):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]  # daphne checks for real
    owner.set_password(password)
    owner.save(update_fields=["password"])
    live_stack.start_local_agent(AGENT, cluster[1])
    try:
        session = running_session(live_stack, owner, "cards1", image="local/shell:1.0")
        waiting = api(live_stack, owner.main_keypair, "POST", "/session",
                      {"image": "local/shell:1.0", "name": "cards2", "enqueueOnly": True,
                       "config": {"resources": {"cpu": "500", "mem": "128m"}}})
        assert waiting.status_code in (200, 201), waiting.text
        (tmp_path / "big.bin").write_bytes(b"x" * (LIMIT + 1))
        (tmp_path / "taken").write_text("a folder has this name")
        with logged_in_page(browser, live_stack.url, owner, password, viewport={"width": 1280, "height": 900}) as page:
            csp = []
            page.on("console", lambda m: csp.append(m.text) if "Content Security Policy" in m.text else None)
            page.goto(f"/ui/sessions/{session.pk}/")
            page.wait_for_selector("#files-browser")

            # commit: a local-process session is not offered a commit that would be refused
            assert page.locator("#commit-session").is_disabled()
            assert "only sessions in docker containers" in page.locator("#commit-note").inner_text().lower()

            # run code from the keyboard; a folder made there takes a name the upload then wants
            page.fill("#execute-code", "import os\nos.mkdir('taken')\nprint(6 * 7)")
            page.press("#execute-code", "Control+Enter")
            page.wait_for_function("() => document.getElementById('execute-state').textContent.includes('exit code 0')")
            assert "42" in page.locator("#execute-output").inner_text()

            # over the limit: refused beside the field, nothing sent
            page.set_input_files("#files-upload-file", str(tmp_path / "big.bin"))
            error = page.locator("#files-upload-error")
            assert error.is_visible() and "more than the limit of 2.0 KB" in error.inner_text()
            assert page.locator("#files-upload-file").get_attribute("aria-invalid") == "true"
            page.click("#files-upload-send")
            assert page.url.endswith(f"/ui/sessions/{session.pk}/")  # no request: the page stayed

            # a name taken by a folder: the agent's refusal, in the card beside the field, not atop the page
            page.set_input_files("#files-upload-file", str(tmp_path / "taken"))
            assert error.is_hidden()
            page.click("#files-upload-send")
            page.wait_for_selector("#files #files-message")
            message = page.locator("#files #files-message").inner_text()
            assert message == "Could not upload: /home/work/taken is a directory.", message
            assert page.locator("ul.messages li").count() == 0

            # a phone's width: the card fits, its listing scrolls inside it
            page.set_viewport_size({"width": 390, "height": 844})
            page.wait_for_selector("#files-browser")
            fits = page.evaluate("() => { const c = document.getElementById('files');"
                                 " return c.scrollWidth <= c.clientWidth; }")
            assert fits

            # a session that waits: nothing offered that cannot work yet
            page.set_viewport_size({"width": 1280, "height": 900})
            pending = Session.objects.get(name="cards2")
            page.goto(f"/ui/sessions/{pending.pk}/")
            assert page.locator("#files-refresh").count() == 0 and page.locator("#files-upload").count() == 0
            assert page.locator("#execute-run").is_disabled() and page.locator("#commit-session").is_disabled()
            assert "once the session is running" in page.locator("#files").inner_text()

            # its agent lost: the running session's cards say so instead of offering actions
            live_stack.kill(AGENT)
            live_stack.wait_for(lambda: Agent.objects.filter(pk=AGENT, status=AgentStatus.LOST).exists(),
                                what="the agent LOST")
            page.goto(f"/ui/sessions/{session.pk}/")
            assert page.locator("#execute-code").is_disabled() and page.locator("#execute-run").is_disabled()
            assert page.locator("#files-upload").count() == 0 and page.locator("#files-refresh").count() == 0
            assert "agent can't be reached" in page.locator("#files").inner_text()
            assert "agent can't be reached" in page.locator("#execute-note").inner_text()
            assert page.locator("#commit-session").is_disabled()

            # the agent back: the page loads itself again and the cards offer their actions
            live_stack.restart(AGENT)
            page.wait_for_selector("#execute-run:not([disabled])", timeout=40_000)
            page.wait_for_selector("#files-browser")
            assert page.locator("#files-upload-file").is_enabled()
            assert not csp, csp
    finally:
        live_stack.kill_local_kernels()
