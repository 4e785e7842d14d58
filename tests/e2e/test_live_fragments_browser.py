"""The sessions pages' live fragments (htmx polling, static/sessions/live.js) in a real browser: what the user
opened survives an update, and a page whose login expired keeps its content and says it is reconnecting."""
from __future__ import annotations

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

try:
    from playwright.sync_api import expect
except ImportError:  # the ``browser`` fixture reports it through require()
    expect = None


@pytest.fixture
def session_of(defaults):
    """``session_of(user, name)``: a RUNNING session on an agent (no daemon: the page only reads the rows)."""
    from django.utils import timezone

    from agents import services as agent_services
    from agents.models import Agent
    from sessions import services as session_services
    from sessions.models import Session

    group = agent_services.ensure_default_scaling_group()
    agent = Agent.objects.create(id="live-browser-node", scaling_group=group, available_slots={"cpu": "4"},
                                 last_heartbeat=timezone.now())

    def make(user, name):
        created = session_services.create_session_on_agent(user=user, image="bai-test/http:1.0", agent=agent,
                                                           slots={"cpu": "1"}, name=name)
        Session.objects.filter(pk=created.pk).update(status="RUNNING", agent_ids=[agent.pk])
        return Session.objects.get(pk=created.pk)

    return make


def test_an_opened_confirmation_stays_open_while_the_status_updates(make_user, login, page, session_of):
    from sessions.models import Session

    user = make_user("live-details@example.com")
    session = session_of(user, "live-details")
    login(user)
    page.goto(f"/ui/sessions/{session.pk}/")
    expect(page.locator('[data-live-for="session-live"]')).to_have_text("live")
    page.click("#destroy-session")
    expect(page.locator("#confirm-destroy")).to_be_visible()
    Session.objects.filter(pk=session.pk).update(status="RUNNING_DEGRADED")
    expect(page.locator("#session-status")).to_contain_text("RUNNING_DEGRADED", timeout=10_000)
    expect(page.locator("#confirm-destroy")).to_be_visible()  # the <details> is still open after the swap
    assert page.evaluate("document.getElementById('destroy-box').open") is True


def test_a_page_whose_login_expired_keeps_its_rows_and_says_it_is_reconnecting(make_user, login, page, session_of):
    user = make_user("live-expired@example.com")
    session = session_of(user, "live-expired")
    login(user)
    page.goto("/ui/sessions/")
    mark = page.locator('.live-state[data-live-for="session-rows"]')
    expect(mark).to_have_text("live")
    page.context.clear_cookies()  # the next poll is redirected to the login page
    expect(mark).to_have_text("reconnecting…", timeout=10_000)
    expect(page.locator(f'tr[data-session="{session.pk}"]')).to_be_visible()  # the login page was not swapped in
    assert page.locator("#session-rows input[name=password]").count() == 0
