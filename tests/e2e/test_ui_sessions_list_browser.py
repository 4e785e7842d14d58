"""The sessions list and a running session's page in a real browser (issue 16, item 3): search and filters,
live usage columns that follow the agents' reports without a reload, per-row actions (destroy with its
confirmation), and the session page's live usage, mounts and idle countdowns with no stale text.

The sessions are written in the database as an agent's reports would leave them (as
tests/e2e/test_sessions_browser.py does for the cases that need no container): no agent process is needed
to show what was reported.  Every page visited is audited (screenshot + axe-core, tests/ui_support.py)."""
from __future__ import annotations

import re
import uuid

import pytest
from ui_support import audit, expect

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

IMAGE = "cr.example.com/stable/python:3.11"
GiB = 2**30


def expect_rows(page, count: int, text: str | None = None) -> None:
    """The sessions table shows ``count`` rows, ``text`` among them."""
    expect(page.locator("#session-rows tr[data-session]")).to_have_count(count)
    if text:
        expect(page.locator("#session-rows")).to_contain_text(text)


@pytest.fixture
def sessions_in_view(make_user, defaults):
    """An owner with a RUNNING session that reported its usage (with a folder mounted read-only and an idle
    timeout) and a PENDING one; a member of the domain with a session of their own; a superadmin."""
    from django.utils import timezone

    from accounts.models import UserRole
    from agents import services as agent_services
    from agents.models import Agent, Image
    from sessions.enqueue import EnqueueRequest, enqueue
    from sessions.models import Session

    group = agent_services.ensure_default_scaling_group()
    Image.objects.create(name=IMAGE, registry_name="cr.example.com", repository="stable/python", tag="3.11",
                         architecture="x86_64", resources={"cpu": {"min": "1", "max": None}},
                         service_ports=[{"name": "jupyter", "protocol": "http", "container_ports": [8888]}])
    Agent.objects.create(id="ui-node", scaling_group=group, available_slots={"cpu": "8", "mem": str(32 * GiB)},
                         last_heartbeat=timezone.now(), addr="127.0.0.1")
    owner = make_user("scientist@example.com")
    member = make_user("colleague@example.com")
    root = make_user("operator@example.com", role=UserRole.SUPERADMIN)
    policy = owner.main_keypair.resource_policy
    policy.idle_timeout = 1800
    policy.save()

    def new(user, name, **fields):
        return enqueue(user, user.main_keypair, EnqueueRequest(image=IMAGE, name=name, enqueue_only=True,
                                                               **fields)).session

    training = new(owner, "train-resnet", resources={"cpu": "2", "mem": "4g"})
    training.kernels.update(
        status="RUNNING", agent_id="ui-node", container_id="c0ffee0123456789", kernel_host="127.0.0.1",
        occupied_slots={"cpu": "2", "mem": str(4 * GiB)},
        service_ports=[{"name": "jupyter", "protocol": "http", "container_ports": [8888], "host_ports": [30001]}],
        last_stat={"cpu_util": "150.0", "mem_used": str(GiB)})
    Session.objects.filter(pk=training.pk).update(
        status="RUNNING", agent_ids=["ui-node"], status_changed=timezone.now(), vfolder_mounts=[
            {"vfolder_id": str(uuid.uuid4()), "name": "datasets", "subpath": ".", "mode": "ro",
             "container_path": "/home/work/datasets", "host_path": "/srv/vfroot/x"}])
    waiting = new(owner, "notebook-later")
    theirs = new(member, "colleague-run")
    return {"owner": owner, "member": member, "root": root, "training": training, "waiting": waiting,
            "theirs": theirs}


def test_the_list_filters_shows_live_usage_and_the_session_page_is_current(login, page, sessions_in_view):
    from sessions.models import Kernel, Session

    data = sessions_in_view
    training, waiting = data["training"], data["waiting"]
    login(data["owner"])
    page.goto("/ui/sessions/")
    table = page.locator("#session-table")
    expect(table).to_contain_text("train-resnet")
    expect(table).to_contain_text("notebook-later")
    expect(table).not_to_contain_text("colleague-run")  # another user's session
    row = page.locator(f'tr[data-session="{training.pk}"]')
    expect(row.locator('[data-usage="cpu"]')).to_contain_text("1.5 of 2 cores (75 %)")
    expect(row.locator('[data-usage="mem"]')).to_contain_text("1 GiB of 4 GiB (25 %)")
    expect(row.locator('[data-row-action="open"]')).to_have_text(re.compile(r"Open jupyter"))
    expect(row.locator('[data-row-action="terminal"]')).to_be_visible()
    audit(page, "sessions-list")

    # the agent reports again: the row follows without a reload
    page.evaluate("window.__noReload = 'list'")
    Kernel.objects.filter(session=training).update(last_stat={"cpu_util": "50.0", "mem_used": str(3 * GiB)})
    expect(row.locator('[data-usage="cpu"]')).to_contain_text("0.5 of 2 cores (25 %)", timeout=10_000)
    expect(row.locator('[data-usage="mem"]')).to_contain_text("3 GiB of 4 GiB (75 %)")
    assert page.evaluate("window.__noReload") == "list"

    # search by name, then by the start of the id; a status filter from the form
    page.fill("#filter-q", "resnet")
    page.press("#filter-q", "Enter")
    expect_rows(page, 1)
    expect(page.locator("#clear-filters")).to_be_visible()
    page.fill("#filter-q", str(waiting.pk)[:8])
    page.click("#apply-filters")
    expect_rows(page, 1, "notebook-later")
    page.click("#clear-filters")
    page.select_option("#filter-status", "RUNNING")
    page.click("#apply-filters")
    expect_rows(page, 1, "train-resnet")
    audit(page, "sessions-list-filtered")

    # destroy from its row, after the confirmation: the waiting one is cancelled, the list comes back
    page.click("#clear-filters")
    waiting_row = page.locator(f'tr[data-session="{waiting.pk}"]')
    page.once("dialog", lambda dialog: dialog.dismiss())
    waiting_row.locator('[data-row-action="destroy"]').click()
    assert Session.objects.get(pk=waiting.pk).status == "PENDING"  # dismissed: nothing happened
    page.once("dialog", lambda dialog: dialog.accept())
    waiting_row.locator('[data-row-action="destroy"]').click()
    expect(page.locator(".messages")).to_contain_text("Session notebook-later is cancelled.")
    expect(page).to_have_url(re.compile(r"/ui/sessions/\?"))
    expect(waiting_row.locator(".status-badge")).to_have_text("CANCELLED")
    assert Session.objects.get(pk=waiting.pk).status == "CANCELLED"

    # the running session's page: live usage, mounts with their paths, idle countdowns; nothing stale
    row.locator(f'a[href="/ui/sessions/{training.pk}/"]').first.click()
    expect(page.locator("#session-status")).to_have_text("RUNNING")
    expect(page.locator("#live-usage")).to_contain_text("0.5 of 2 cores (25 %)")
    expect(page.locator("#live-usage meter")).to_have_count(2)
    mounts = page.locator("#mounts")
    expect(mounts).to_contain_text("datasets")
    expect(mounts).to_contain_text("/home/work/datasets")
    expect(mounts).to_contain_text("read only")
    expect(page.locator('#idle-checks [data-check="network_timeout"]')).to_contain_text(
        re.compile(r"terminates in (30|29) min if idle"))
    expect(page.locator("#terminal-state")).to_contain_text("A shell in the main container")
    body = page.locator("main").inner_text()
    for stale in ("Queued", "Why it waits", "once the session is running", "result: undefined"):
        assert stale not in body, stale
    assert "/srv/vfroot" not in page.content()
    Kernel.objects.filter(session=training).update(last_stat={"cpu_util": "190.0", "mem_used": str(2 * GiB)})
    expect(page.locator("#live-usage")).to_contain_text("1.9 of 2 cores (95 %)", timeout=10_000)
    audit(page, "sessions-detail-running")


def test_a_superadmin_filters_every_session_by_owner(login, page, sessions_in_view):
    data = sessions_in_view
    login(data["root"])
    page.goto("/ui/sessions/?scope=all")
    expect_rows(page, 3)
    page.fill("#filter-owner", "colleague@")
    page.click("#apply-filters")
    expect_rows(page, 1, "colleague@example.com")
    audit(page, "sessions-list-admin-owner")
    # keyboard: the search field, the filters and the button are reached with Tab
    page.focus("#filter-q")
    page.keyboard.type("colleague")
    page.keyboard.press("Enter")
    expect_rows(page, 1)
    expect(page.locator("#filter-q")).to_have_value("colleague")
