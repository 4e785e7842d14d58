"""Usage statistics through the official clients against a live server, with a user's session
that held 2 cores for the last 2 hours: each client's ``Resource.user_monthly_stats()`` reads
``/resource/stats/user/month`` (4 core-hours over the 30 days), and the 26.09 CLI's
``resource-usage user list --json`` reads the daily buckets (``/fair-share/usage-buckets/...``)."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

VERSIONS = ("23.9.10", "24.9.14", "26.9.6")
MONTHLY = """
import json
from ai.backend.client.session import Session
with Session() as api:
    print(json.dumps(api.Resource.user_monthly_stats()))
"""


@pytest.fixture
def usage_world(make_user):
    """A superadmin, and a user's session on node-1 that held 2 cores for the last 2 hours."""
    from accounts.models import UserRole
    from agents import services as agent_services
    from helpers import seed_http_image_and_agent
    from sessions import services as session_services
    from sessions.lifecycle import KernelStatus, SessionStatus
    from sessions.models import Kernel, Session

    root = make_user("stats-root@example.com", role=UserRole.SUPERADMIN)
    user = make_user("stats-user@example.com")
    _, agent = seed_http_image_and_agent(agent_services.ensure_default_scaling_group())
    session = session_services.create_session_on_agent(user=user, image="bai-test/http:1.0", agent=agent,
                                                       name="statsess", slots={"cpu": "2", "mem": "1073741824"})
    now = timezone.now()
    since, until = now - timedelta(hours=2, minutes=1), now - timedelta(minutes=1)
    history = [{"status": "SCHEDULED", "timestamp": since.isoformat()}]
    Kernel.objects.filter(session=session).update(created_at=since, terminated_at=until,
                                                  status=KernelStatus.TERMINATED, status_history=history)
    Session.objects.filter(pk=session.pk).update(created_at=since, terminated_at=until,
                                                 status=SessionStatus.TERMINATED)
    return root, user


def output_of(done) -> str:
    return f"rc={done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"


@pytest.mark.parametrize("version", VERSIONS)
def test_each_client_reads_the_users_monthly_stats(version, usage_world, versioned_client):
    _, user = usage_world
    series = versioned_client(version).script_json(user.main_keypair, MONTHLY)
    assert len(series) == 30
    assert sum(day["usage"].get("cpu", 0) for day in series) == pytest.approx(4.0, abs=0.01)
    assert sum(day["num_sessions"]["value"] for day in series) in (1, 2)  # 2 when it spanned midnight


def test_the_26_09_cli_lists_the_users_usage_buckets(usage_world, versioned_client):
    root, user = usage_world
    done = versioned_client("26.9.6").cli(root.main_keypair, "resource-usage", "user", "list", "--json")
    assert done.returncode == 0, output_of(done)
    items = json.loads(done.stdout)
    assert {item["user_uuid"] for item in items} == {str(user.pk)}, output_of(done)
    cpu = sum(float(e["quantity"]) for item in items for e in item["resource_usage"]["entries"]
              if e["resource_type"] == "cpu")
    assert cpu == pytest.approx(4.0, abs=0.01)
