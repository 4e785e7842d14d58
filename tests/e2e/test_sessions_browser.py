"""The sessions web UI in a real browser against a live server, a real agent
daemon (local backend, a subprocess) and real scheduler passes: create a
session in the form, watch it reach RUNNING without reloading, read its logs,
destroy it and watch it reach TERMINATED.

Set ``SESSIONS_UI_SCREENSHOTS=<dir>`` to keep screenshots of the list, the
create form and the detail page."""
from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

try:
    from playwright.sync_api import expect
except ImportError:  # the ``browser`` fixture reports it through require()
    expect = None

ROOT = Path(__file__).resolve().parents[2]
AGENT_ID = "e2e-web-agent"
IMAGE = "bai-local/shell:1.0"
PORT_RANGE = (32450, 32499)
ARCH = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(), platform.machine().lower())
SCREENSHOTS = os.environ.get("SESSIONS_UI_SCREENSHOTS")


def wait_until(predicate, timeout: float, what: str, every: float = 0.25, between=None):
    deadline = time.monotonic() + timeout
    while True:
        if between is not None:
            between()
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def shot(page, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


@pytest.fixture
def local_agent(live_server, tmp_path, settings, defaults):
    """``python -m agents.daemon`` with the local backend, registered with the live server."""
    from agents import services as agent_services
    from agents.daemon.backends.base import BackendSettings
    from agents.daemon.backends.local import LocalBackend
    from agents.daemon.config import AgentConfig
    from agents.models import Agent, AgentStatus, Image

    settings.AGENT_SYNC_INTERVAL = 0.5
    group = agent_services.ensure_default_scaling_group()
    _, token = agent_services.issue_token("e2e-web", scaling_group=group)
    Image.objects.create(name=IMAGE, repository="bai-local/shell", tag="1.0", architecture=ARCH, is_local=True,
                         resources={"cpu": {"min": "0.1", "max": None}, "mem": {"min": str(64 * 2**20), "max": None}})
    scratch = tmp_path / "agent-scratch"
    log_path = tmp_path / "agent.log"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "BAI_AGENT_TOKEN": token,
           "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "agents.daemon", "--manager-url", live_server.url, "--agent-id", AGENT_ID,
            "--scaling-group", group.name, "--backend", "local", "--scratch-root", str(scratch),
            "--sync-interval", "0.5", "--stop-timeout", "2", "--port-range", f"{PORT_RANGE[0]}-{PORT_RANGE[1]}",
            "--cpu-limit", "2", "--mem-limit", "2g", "--log-level", "DEBUG", "--local-allow-root"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: process.poll() is not None or Agent.objects.filter(
            pk=AGENT_ID, status=AgentStatus.ALIVE).exists(), 30, "the agent to register")
        assert process.poll() is None, f"the agent daemon exited:\n{log_path.read_text()}"
        yield {"process": process, "log": log_path}
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        # The daemon leaves kernels running on purpose (a restart re-adopts them): stop what is left.
        config = AgentConfig(agent_id=AGENT_ID, backend="local", scratch_root=scratch, port_range=PORT_RANGE,
                             stop_timeout=2)
        backend = LocalBackend(BackendSettings.from_config(config))
        for state in backend.list_kernels():
            backend.stop(state.kernel_id, "test-cleanup")


def test_a_session_created_in_the_browser_runs_on_a_real_agent_and_is_destroyed(
        make_user, login, page, live_server, local_agent):
    from sessions import scheduler  # the scheduler pass (sessions/scheduler/)
    from sessions.models import Session

    user = make_user("webuser@example.com")
    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url) if frame == page.main_frame else None)

    def passes():
        from django.db import OperationalError

        try:
            scheduler.run_all_passes()
        except OperationalError:  # SQLite: a writer from the live server holds the lock; the next pass retries
            pass

    login(user)
    page.goto("/ui/sessions/")
    expect(page.locator("#session-table")).to_contain_text("No sessions here yet")
    page.click("#new-session")
    expect(page).to_have_url(live_server.url + "/ui/sessions/new/")
    page.select_option("#id_image", IMAGE)
    page.fill("#id_name", "web-e2e")
    page.fill("#id_slot_cpu", "0.5")
    page.fill("#id_slot_mem", "256m")
    page.fill("#id_environ", "GREETING=hello")
    shot(page, "create-form")
    page.click("#create-submit")

    session = Session.objects.get(name="web-e2e")
    expect(page).to_have_url(f"{live_server.url}/ui/sessions/{session.pk}/")
    expect(page.locator("#session-status")).to_have_text("PENDING")
    expect(page.locator("#why-waiting")).to_be_visible()
    assert session.user == user and session.environ == {"GREETING": "hello"}

    # The list shows it PENDING, then RUNNING once the scheduler placed it and the agent started it.
    page.click("text=← Sessions")
    row = page.locator(f'tr[data-session="{session.pk}"]')
    expect(row.locator(".status-badge")).to_have_text("PENDING")
    shot(page, "list-pending")
    page.evaluate("window.__noReload = 'list'")
    seen = len(navigations)
    wait_until(lambda: row.locator(".status-badge").inner_text().strip() == "RUNNING", 60,
               "the list to show RUNNING", every=0.5, between=passes)
    assert page.evaluate("window.__noReload") == "list" and len(navigations) == seen  # no reload
    expect(page.locator('.live-state[data-live-for="session-rows"]')).to_be_visible()
    shot(page, "list-running")

    page.click(f'tr[data-session="{session.pk}"] a')
    expect(page.locator("#session-status")).to_have_text("RUNNING")
    kernel = session.kernels.get()
    kernel_row = page.locator(f'tr[data-kernel="{kernel.pk}"]')
    expect(kernel_row).to_contain_text(AGENT_ID)
    expect(kernel_row.locator(".status-badge")).to_have_text("RUNNING")
    expect(page.locator("#why-waiting")).to_have_count(0)
    expect(page.locator("#timeline")).to_contain_text("SCHEDULED")
    page.click("#refresh-logs")
    expect(page.locator("#logs-output .logs")).to_be_visible(timeout=15_000)
    shot(page, "detail-running")

    # Destroy it (a confirmation in place, no dialog), then watch TERMINATED arrive by itself.
    page.click("#destroy-session")
    page.click("#confirm-destroy")
    expect(page.locator(".messages")).to_contain_text("Session web-e2e")  # "is terminated" or "destroy requested"
    page.evaluate("window.__noReload = 'detail'")
    seen = len(navigations)
    expect(page.locator("#session-status")).to_have_text("TERMINATED", timeout=30_000)
    assert page.evaluate("window.__noReload") == "detail" and len(navigations) == seen
    expect(page.locator("#session-actions")).not_to_contain_text("Destroy")
    shot(page, "detail-terminated")
    session.refresh_from_db()
    kernel.refresh_from_db()
    assert session.status == "TERMINATED" and kernel.status == "TERMINATED"
    assert kernel.container_id and kernel.agent_id == AGENT_ID


def test_a_session_too_big_for_the_cluster_shows_why_it_waits_and_can_be_cancelled(
        make_user, login, page, live_server, local_agent):
    from sessions import scheduler
    from sessions.models import Session

    user = make_user("bigspender@example.com")
    login(user)
    page.goto("/ui/sessions/new/")
    page.select_option("#id_image", IMAGE)
    page.fill("#id_name", "too-big")
    page.fill("#id_slot_cpu", "16")  # the agent offers 2 cores
    page.fill("#id_slot_mem", "512m")
    page.click("#create-submit")
    # the launcher refuses it at once (sessions/launch_check.py); the API still queues it, as Backend.AI does
    expect(page.locator("#error-resources")).to_contain_text("the largest agent has 2")
    assert not Session.objects.filter(name="too-big").exists()
    from sessions.enqueue import EnqueueRequest, enqueue

    session = enqueue(user, user.main_keypair, EnqueueRequest(
        image=IMAGE, name="too-big", enqueue_only=True, resources={"cpu": "16", "mem": "512m"})).session
    page.goto(f"/ui/sessions/{session.pk}/")
    expect(page.locator("#why-waiting")).to_contain_text("has not looked at it yet")

    page.evaluate("window.__noReload = 'waiting'")
    scheduler.run_all_passes()
    session.refresh_from_db()
    assert session.status == "PENDING", session.status_data
    reasons = scheduler.wait_reasons(session)
    assert reasons, session.status_data
    # The page learns why by itself: the scheduler's own words, shown while it waits.
    expect(page.locator("#why-waiting")).not_to_contain_text("has not looked at it yet", timeout=10_000)
    expect(page.locator("#why-waiting")).to_contain_text("Tried 1 time")
    shown = page.locator("#why-waiting").inner_text()
    first = (session.status_data["scheduler"].get("failed_predicates") or [{}])[0].get("msg") \
        or session.status_data["scheduler"].get("msg")
    assert first and first in shown
    assert page.evaluate("window.__noReload") == "waiting"
    shot(page, "detail-waiting")

    page.click("#destroy-session")
    expect(page.locator("#confirm-destroy")).to_be_visible()
    page.click("#confirm-destroy")
    expect(page.locator(".messages")).to_contain_text("Session too-big is cancelled.")
    expect(page.locator("#session-status")).to_have_text("CANCELLED")
    assert Session.objects.get(pk=session.pk).status == "CANCELLED"


def test_a_superadmin_reaches_the_cluster_overview_from_the_admin_index(
        make_user, login, page, live_server, local_agent):
    from accounts.models import UserRole

    root = make_user("root@example.com", role=UserRole.SUPERADMIN)
    login(root)
    page.goto("/admin/")
    page.click("#cluster-overview-link")
    expect(page).to_have_url(live_server.url + "/admin/compute_sessions/session/overview/")
    agent_row = page.locator(f'#agents tr[data-agent="{AGENT_ID}"]')
    expect(agent_row).to_contain_text("ALIVE")
    expect(agent_row.locator('[data-slot="cpu"]')).to_contain_text("0 / 2")
    expect(page.locator('#groups tr[data-group="default"]')).to_contain_text("1 / 1 / 1")
    shot(page, "admin-overview")


def test_the_pages_work_without_javascript(make_user, browser, live_server, password):
    from agents import services as agent_services
    from agents.models import Image
    from sessions.enqueue import EnqueueRequest, enqueue
    from sessions.models import Session

    agent_services.ensure_default_scaling_group()
    Image.objects.create(name=IMAGE, repository="bai-local/shell", tag="1.0", architecture=ARCH, is_local=True,
                         resources={"cpu": {"min": "0.1", "max": None}, "mem": {"min": str(64 * 2**20), "max": None}})
    user = make_user("nojs@example.com")
    session = enqueue(user, user.main_keypair, EnqueueRequest(image=IMAGE, name="static-one", enqueue_only=True)).session
    context = browser.new_context(base_url=live_server.url, java_script_enabled=False)
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        page.goto("/ui/login/")
        page.fill("input[name=username]", user.email)
        page.fill("input[name=password]", password)
        page.get_by_role("button", name="Log in").click()
        # Refused input comes back beside its fields, with what was typed kept.
        page.goto("/ui/sessions/new/")
        page.select_option("#id_image", IMAGE)
        page.select_option("#id_session_type", "batch")
        page.fill("#id_name", "x")
        page.fill("#id_environ", "GOOD=1\nthis is not a pair")
        page.fill("#id_slot_mem", "lots")
        page.click("#create-submit")
        expect(page.locator("#error-startup_command")).to_contain_text("Batch sessions need a startup command")
        expect(page.locator("#error-environ")).to_contain_text("KEY=VALUE")
        expect(page.locator("#error-slot_mem")).to_contain_text("invalid binary size")
        expect(page.locator("#id_name")).to_have_value("x")
        shot(page, "create-errors")
        page.select_option("#id_session_type", "interactive")
        page.fill("#id_environ", "GOOD=1")
        page.fill("#id_slot_mem", "")
        page.click("#create-submit")
        expect(page.locator("#error-name")).to_contain_text("Session name must be 4-64 characters")
        assert list(Session.objects.values_list("name", flat=True)) == ["static-one"]

        page.goto("/ui/sessions/")
        row = page.locator(f'tr[data-session="{session.pk}"]')
        expect(row.locator(".status-badge")).to_have_text("PENDING")
        expect(page.locator(".live-state")).to_be_hidden()  # nothing claims to be live
        row.locator("a").click()
        expect(page.locator("#why-waiting")).to_be_visible()
        page.click("#refresh-logs")  # a plain link: the logs as a page of their own
        expect(page).to_have_url(f"{live_server.url}/ui/sessions/{session.pk}/logs/")
        expect(page.locator("#logs-text")).to_have_text("No output yet.")
        page.go_back()
        page.click("#destroy-session")  # <details>: the confirmation needs no script
        page.click("#confirm-destroy")
        expect(page.locator("#session-status")).to_have_text("CANCELLED")
        assert Session.objects.get(pk=session.pk).status == "CANCELLED"
    finally:
        context.close()
