"""A user in a real browser follows "My usage" in the navigation: the chart and the table show
the 4 core-hours their session used yesterday (2 cores for 2 hours), by day and by month; the
pages pass the accessibility audit."""
from __future__ import annotations

from datetime import timedelta
from datetime import timezone as dt_timezone

import pytest
from django.utils import timezone
from ui_support import audit, expect

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def scientist(make_user):
    from agents import services as agent_services
    from helpers import seed_http_image_and_agent
    from sessions import services as session_services
    from sessions.lifecycle import KernelStatus
    from sessions.models import Kernel

    user = make_user("scientist@example.com")
    _, agent = seed_http_image_and_agent(agent_services.ensure_default_scaling_group())
    session = session_services.create_session_on_agent(user=user, image="bai-test/http:1.0", agent=agent,
                                                       name="yesterday", slots={"cpu": "2", "mem": "1073741824"})
    yesterday = (timezone.now() - timedelta(days=1)).astimezone(dt_timezone.utc)
    since = yesterday.replace(hour=10, minute=0, second=0, microsecond=0)
    Kernel.objects.filter(session=session).update(
        created_at=since, terminated_at=since + timedelta(hours=2), status=KernelStatus.TERMINATED,
        status_history=[{"status": "SCHEDULED", "timestamp": since.isoformat()}])
    return user


def test_a_user_sees_their_own_usage_by_day_and_by_month(page, login, scientist):
    login(scientist)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="My usage").click()
    expect(page.get_by_role("heading", name="My usage")).to_be_visible()
    expect(page.locator("figure.usage-chart svg rect").first).to_be_attached()
    expect(page.locator('#usage-table tr[data-owner="default/default"] td.total')).to_have_text("4.0")
    audit(page, "my-usage-days")
    page.select_option("#id_granularity", "month")
    page.fill("#id_start", "")
    page.get_by_role("button", name="Show").click()
    expect(page.locator('#usage-table tr[data-owner="default/default"] td.total')).to_have_text("4.0")
    expect(page.locator("#usage-table thead th")).to_have_count(12 + 5)
    audit(page, "my-usage-months")
