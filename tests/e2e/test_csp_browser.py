"""Every page of the web UI, the admin and the Swagger page in a real browser
(Debian's Chromium through Playwright) under the Content-Security-Policy: no
violation is reported and no script fails.  The terminal (xterm.js adds <style>
elements at run time) and the app proxy's Open button (a form redirected to the
proxy's origin) are exercised too."""
from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from helpers import running_on_a_local_agent

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

try:
    from playwright.sync_api import expect
except ImportError:  # the ``browser`` fixture reports it through require()
    expect = None

# Runs before any page script (Playwright injects it outside the page's CSP) and
# records every violation the browser reports to the page.
WATCH_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__cspViolations.push(e.effectiveDirective + " blocked " + (e.blockedURI || "inline") + " at " +
                              e.sourceFile + ":" + e.lineNumber);
});
"""


class Watcher:
    """Collects CSP messages from the console, violation events and uncaught errors of every tab."""

    def __init__(self, context):
        self.problems: list[str] = []
        context.add_init_script(WATCH_VIOLATIONS)
        context.on("page", self.watch)

    def watch(self, page):
        page.on("console", lambda msg: self.problems.append(f"console {msg.type}: {msg.text}")
                if "Content Security Policy" in msg.text or "Content-Security-Policy" in msg.text else None)
        page.on("pageerror", lambda exc: self.problems.append(f"page error on {page.url}: {exc}"))

    def check(self, page, what: str) -> None:
        page.wait_for_load_state("load")
        events = page.evaluate("window.__cspViolations || []")
        found = self.problems + [f"violation event: {e}" for e in events]
        assert not found, f"{what}:\n" + "\n".join(found)


@pytest.fixture
def scene(make_user, settings, tmp_path, db):
    """A superadmin with a running session (on a local-process agent, with apps), a folder and a proxy worker."""
    from accounts.models import UserRole
    from vfolders import services as vfolder_services

    settings.VFOLDER_ROOT = tmp_path / "vfroot"
    vfolder_services.ensure_default_storage_host()
    user = make_user("csp-root@example.com", role=UserRole.SUPERADMIN)
    folder = vfolder_services.create_folder(user, name="csp-folder")
    (folder.path / "notes.txt").write_text("hello")
    created, agent = running_on_a_local_agent(user, "csp-node", "csp-session", service_ports=[
        {"name": "web", "protocol": "http", "container_ports": [8080], "host_ports": [31001]},
        {"name": "echo", "protocol": "tcp", "container_ports": [9000], "host_ports": [31002]}])
    return {"user": user, "folder": folder, "session": created, "group": agent.scaling_group}


def test_every_page_loads_with_no_csp_violation(browser, live_server, scene, password):
    from appproxy.models import Worker
    from django.utils import timezone

    # the proxy's setup endpoint: another origin (127.0.0.1 vs localhost), served here by the live server
    port = urlsplit(live_server.url).port
    Worker.objects.create(authority="csp-proxy", advertised_host="127.0.0.1", api_endpoint=f"http://127.0.0.1:{port}",
                          secret="s" * 40, protocols=["http", "tcp"], port_range_start=40000, port_range_end=40009,
                          last_heartbeat=timezone.now())
    user, folder, session = scene["user"], scene["folder"], scene["session"]
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(15_000)
    watcher = Watcher(context)
    page = context.new_page()
    try:
        page.goto("/ui/login/")
        watcher.check(page, "login")
        page.fill("input[name=username]", user.email)
        page.fill("input[name=password]", password)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(live_server.url + "/ui/")
        watcher.check(page, "dashboard")

        pages = {
            "API keys": "/ui/keys/",
            "background tasks": "/ui/tasks/",
            "sessions": "/ui/sessions/",
            "new session": "/ui/sessions/new/",
            "folders": "/ui/folders/",
            "folder": f"/ui/folders/{folder.pk}/",
            "invitations": "/ui/folders/invitations/",
            "resource groups": "/ui/resource-groups/",
            "admin index": "/admin/",
            "admin change form": f"/admin/accounts/user/{user.pk}/change/",
            "admin user list": "/admin/accounts/user/",
            "admin cluster overview": "/admin/compute_sessions/session/overview/",
        }
        for what, path in pages.items():
            response = page.goto(path)
            assert response.status == 200, (what, response.status)
            assert "Content-Security-Policy" in response.headers or "content-security-policy" in response.headers
            watcher.check(page, what)
        expect(page.locator(".usage-bar").first).to_be_visible()  # the overview's bars, drawn without style=

        page.goto("/ui/resource-groups/")
        expect(page.locator(f'[data-no-isolation="{scene["group"].name}"]')).to_be_visible()

        page.goto("/spec/docs")
        expect(page.locator(".swagger-ui .info")).to_be_visible()
        watcher.check(page, "Swagger")

        # the session page: live updates, the terminal's run-time styles, the Open button's redirect
        page.goto(f"/ui/sessions/{session.pk}/")
        expect(page.locator("#no-isolation")).to_be_visible()
        expect(page.locator("#service-ports")).not_to_contain_text("31001")
        # predicates as functions: a bare expression would be eval()ed in the page, which the CSP refuses
        page.wait_for_function("() => !!document.querySelector('[data-live-for=\"session-live\"]') &&"
                               " !document.querySelector('[data-live-for=\"session-live\"]').hidden")
        page.click("#terminal-open")
        page.wait_for_selector("#terminal-screen .xterm-rows")
        assert page.evaluate("document.querySelectorAll('#terminal-screen style, style').length") > 0
        # xterm's rules apply: its screen got the dimensions it computed
        assert page.evaluate("getComputedStyle(document.querySelector('#terminal-screen .xterm-rows span') ||"
                             " document.querySelector('#terminal-screen .xterm-rows')).display") != ""
        watcher.check(page, "session page with the terminal")
        with page.expect_popup() as opened:
            page.click('[data-app-open="web"]')
        popup = opened.value
        popup.wait_for_load_state("domcontentloaded")
        assert popup.url.startswith(f"http://127.0.0.1:{port}/setup?token="), popup.url
        watcher.check(page, "Open button redirected to the app proxy")

        # the watcher does see a violation: an injected inline script is refused and reported
        page.evaluate("""() => { const s = document.createElement('script');
                                 s.textContent = 'window.__injected = 1'; document.body.appendChild(s); }""")
        page.wait_for_function("() => window.__cspViolations.length > 0")
        assert page.evaluate("window.__injected") is None
        assert any("script-src" in v for v in page.evaluate("window.__cspViolations"))
    finally:
        context.close()


def test_the_lockout_message_shows_beside_the_login_form(browser, live_server, make_user, password, settings):
    user = make_user("locked@example.com")
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(15_000)
    watcher = Watcher(context)
    page = context.new_page()
    try:
        for _ in range(settings.LOGIN_FAILURE_LIMIT):
            page.goto("/ui/login/")
            page.fill("input[name=username]", user.email)
            page.fill("input[name=password]", "wrong-password")
            page.get_by_role("button", name="Log in").click()
            page.wait_for_load_state("domcontentloaded")
        page.goto("/ui/login/")
        page.fill("input[name=username]", user.email)
        page.fill("input[name=password]", password)
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("#login-locked")).to_contain_text("Too many failed logins")
        expect(page.get_by_role("button", name="Log in")).to_be_visible()
        expect(page).to_have_url(live_server.url + "/ui/login/")
        watcher.check(page, "lockout page")
    finally:
        context.close()
