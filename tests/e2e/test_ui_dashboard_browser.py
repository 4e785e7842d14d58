"""The dashboard and the settings in a real browser (Debian's Chromium), every page audited
(``ui_support.audit``: a screenshot under var/screenshots/ and axe-core, no critical violation):

* the dashboard with two running sessions shows their live usage, and the figures follow the
  agent's next report without a reload (the live fragment polls);
* a user changes their password, logs out and logs in with the new one;
* the administrator's "must change password" flag forces the change at the next login.

The sessions and their kernels' ``last_stat`` rows are made in the database, the way an
agent's sync would leave them: no agent runs."""
from __future__ import annotations

import re

import pytest
from django.utils import timezone
from ui_support import audit, expect

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

GIB = 2**30
NEW_PASSWORD = "a-Different-horse-42"


def running(user, agent, name, cpu_util: str, mem_used: int):
    from sessions import services as session_services
    from sessions.lifecycle import KernelStatus, SessionStatus, history_entry
    from sessions.models import Kernel, Session

    session = session_services.create_session_on_agent(
        user=user, image="cr.example.com/stable/python:3.11", agent=agent, name=name,
        slots={"cpu": "2", "mem": str(4 * GIB)})
    now = timezone.now()
    Session.objects.filter(pk=session.pk).update(
        status=SessionStatus.RUNNING, status_changed=now,
        status_history=[*session.status_history, history_entry(SessionStatus.RUNNING, now)])
    Kernel.objects.filter(session=session).update(status=KernelStatus.RUNNING,
                                                  last_stat={"cpu_util": cpu_util, "mem_used": str(mem_used)})
    return session


@pytest.fixture
def agent(defaults):
    from agents import services as agent_services
    from agents.models import Agent

    group = agent_services.ensure_default_scaling_group()
    return Agent.objects.create(id="node-1", scaling_group=group, last_heartbeat=timezone.now(),
                                available_slots={"cpu": "8", "mem": str(16 * GIB)},
                                occupied_slots={"cpu": "4", "mem": str(8 * GIB)})


def test_the_dashboard_shows_the_live_usage_of_two_running_sessions(page, login, make_user, agent):
    from sessions.models import Kernel

    user = make_user("dash@example.com")
    notebook = running(user, agent, "notebook", "150", GIB)
    running(user, agent, "training", "50", 2 * GIB)
    login(user)
    expect(page.locator("h1")).to_contain_text("Welcome")
    sessions = page.locator("#running-sessions")
    expect(sessions.locator("li", has_text="notebook")).to_contain_text("1.5 of 2 cores (75 %)")
    expect(sessions.locator("li", has_text="notebook")).to_contain_text("1 GiB of 4 GiB (25 %)")
    expect(sessions.locator("li", has_text="training")).to_contain_text("0.5 of 2 cores (25 %)")
    expect(sessions.locator("li", has_text="training")).to_contain_text("2 GiB of 4 GiB (50 %)")
    expect(page.locator('#quota [data-gauge="sessions"]')).to_contain_text("2 of 30")
    expect(page.locator('[data-group="default"] [data-gauge="cpu"]')).to_contain_text("4 free of 8 cores")
    expect(page.locator("#events")).to_contain_text("notebook")
    audit(page, "dashboard-two-sessions")

    # the agent's next report: the page follows without a reload
    Kernel.objects.filter(session=notebook).update(last_stat={"cpu_util": "200", "mem_used": str(3 * GIB)})
    expect(sessions.locator("li", has_text="notebook")).to_contain_text("2 of 2 cores (100 %)", timeout=15_000)
    expect(sessions.locator("li", has_text="notebook")).to_contain_text("3 GiB of 4 GiB (75 %)")
    audit(page, "dashboard-updated")


def test_a_user_changes_their_password_then_logs_in_with_the_new_one(page, login, make_user, password):
    user = make_user("changer@example.com")
    login(user)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Settings").click()
    expect(page.locator("h1")).to_have_text("Settings")
    audit(page, "settings")

    form = page.locator("section#password form")
    form.get_by_label("Old password").fill("not-my-password")
    form.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    form.get_by_label("New password confirmation").fill(NEW_PASSWORD)
    form.get_by_role("button", name="Change password").click()
    expect(page.locator("#error-old_password")).to_be_visible()  # beside the field, on the password page
    audit(page, "settings-password-refused")

    page.get_by_label("Old password").fill(password)
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("New password confirmation").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change password").click()
    expect(page.locator(".messages")).to_contain_text("Your password has been changed.")
    expect(page.locator("h1")).to_have_text("Settings")  # still logged in
    audit(page, "settings-password-changed")

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    login(user, password)  # the old one no longer works
    expect(page.locator("[role=alert]")).to_contain_text("Email or password is wrong")
    audit(page, "login-old-password-refused")
    login(user, NEW_PASSWORD)
    expect(page.locator("h1")).to_contain_text("Welcome")
    audit(page, "dashboard-after-new-password")


def test_the_must_change_password_flag_forces_the_change_at_the_next_login(page, login, make_user, password):
    from accounts.models import User

    user = make_user("flagged@example.com", need_password_change=True)
    login(user)
    expect(page).to_have_url(re.compile(r"/ui/settings/password/$"))
    expect(page.locator("#password-required")).to_be_visible()
    audit(page, "password-required")

    page.goto("/ui/sessions/")  # every page sends them back until they change it
    expect(page).to_have_url(re.compile(r"/ui/settings/password/$"))

    page.get_by_label("Old password").fill(password)
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("New password confirmation").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change password").click()
    expect(page.locator(".messages")).to_contain_text("Your password has been changed.")
    assert not User.objects.get(pk=user.pk).need_password_change
    page.goto("/ui/sessions/")
    expect(page).to_have_url(re.compile(r"/ui/sessions/$"))
    audit(page, "password-required-done")
