"""The web UI's "Download CSV" links: "My usage" (``/ui/my-usage/csv/``, the signed-in user's
own usage buckets whatever their role) and the operators' usage page
(``/ui/usage-buckets/csv/``, the ``usage-buckets`` export with its rules: superadmins
everything, domain admins their domain, anyone else 403), for the shown period."""
from __future__ import annotations

import csv
import io
from datetime import datetime
from datetime import timezone as dt_timezone

import pytest
from django.urls import reverse
from django.utils import timezone

from agents import services as agent_services
from agents.models import Agent
from permission_matrix import ROLES
from sessions import services as session_services
from sessions.lifecycle import KernelStatus, SessionStatus
from sessions.models import Kernel, Session

pytestmark = pytest.mark.django_db

GIB = 2**30
MARCH = {"start": "2025-03-01", "end": "2025-03-31"}
HOSTILE = [{"start": "yesterday"}, {"end": "2025-02-30"}, {"start": "2000-01-01", "end": "2025-01-01"},
           {"start": "2025-03-10", "end": "2025-03-01"}, {"start": "2025-03-01\x00"}, {"start": "9999-12-31"},
           {"start": "2" * 5000}, {"end": "2025-03-10T00:00:00Z'; DROP TABLE x;--"}]


def utc(day: str, hour: int = 0) -> datetime:
    return datetime.strptime(day, "%Y-%m-%d").replace(hour=hour, tzinfo=dt_timezone.utc)


def place(user, agent, name, since, until):
    """A session of ``user`` that held 2 CPUs and 1 GiB on ``agent`` from ``since`` to ``until``."""
    session = session_services.create_session_on_agent(
        user=user, image="bai-test/http:1.0", agent=agent, name=name, slots={"cpu": "2", "mem": str(GIB)}, mounts=[])
    history = [{"status": "SCHEDULED", "timestamp": since.isoformat()}]
    Kernel.objects.filter(session=session).update(created_at=since, terminated_at=until, status_history=history,
                                                  status=KernelStatus.TERMINATED)
    Session.objects.filter(pk=session.pk).update(created_at=since, terminated_at=until,
                                                 status=SessionStatus.TERMINATED)


@pytest.fixture
def users(defaults, owner, member, outsider, foreign_admin, superadmin):
    from accounts.models import Project, ProjectMembership

    ProjectMembership.objects.create(user=outsider, project=Project.objects.create(
        domain_id="other", name="lab", resource_policy=defaults.project_policy))
    group = agent_services.ensure_default_scaling_group()
    agent = Agent.objects.create(id="node-1", scaling_group=group, available_slots={"cpu": "8", "mem": str(8 * GIB)},
                                 last_heartbeat=timezone.now())
    place(owner, agent, "ownersess", utc("2025-03-10", 9), utc("2025-03-10", 11))  # 4 core-hours
    place(member, agent, "membersess", utc("2025-03-11", 0), utc("2025-03-11", 3))  # 6
    place(outsider, agent, "outsidersess", utc("2025-03-12", 0), utc("2025-03-12", 1))  # 2
    return {"owner": owner, "member": member, "outsider": outsider, "foreign_admin": foreign_admin,
            "superadmin": superadmin}


def download(client, user, name, query):
    client.force_login(user)
    return client.get(reverse(f"ui-sessions:{name}"), query)


def rows_of(answer) -> list[tuple[str, str, str]]:
    assert answer.status_code == 200, answer.content[:500]
    assert answer["Content-Type"].startswith("text/csv") and "attachment" in answer["Content-Disposition"]
    assert answer["Cache-Control"] == "no-store"
    table = csv.DictReader(io.StringIO(b"".join(answer.streaming_content).decode()))
    return [(row["Day"], row["User Email"], row["CPU core-hours"]) for row in table]


OWN_ROWS = {"owner": [("2025-03-10", "owner@example.com", "4.0")],
            "member": [("2025-03-11", "member@example.com", "6.0")],
            "outsider": [("2025-03-12", "outsider@other.example.com", "2.0")], "foreign_admin": [], "superadmin": []}


@pytest.mark.parametrize("role", ROLES)
def test_my_usage_csv_holds_the_callers_own_rows_and_no_one_elses(client, users, role):
    assert rows_of(download(client, users[role], "my-usage-csv", MARCH)) == OWN_ROWS[role]


EXPORT_ROWS = {
    "owner": 403, "member": 403, "outsider": 403,
    "foreign_admin": [("2025-03-12", "outsider@other.example.com", "2.0")],
    "superadmin": [("2025-03-10", "owner@example.com", "4.0"), ("2025-03-11", "member@example.com", "6.0"),
                   ("2025-03-12", "outsider@other.example.com", "2.0")],
}


@pytest.mark.parametrize("role", ROLES)
def test_the_usage_buckets_csv_follows_the_exports_rules(client, users, role):
    answer = download(client, users[role], "usage-buckets-csv", MARCH)
    if EXPORT_ROWS[role] == 403:
        assert answer.status_code == 403 and answer["Content-Type"].startswith("text/html")
        assert b"CPU core-hours" not in answer.content and b"ownersess" not in answer.content
    else:
        assert rows_of(answer) == EXPORT_ROWS[role]


def test_the_csv_covers_only_the_asked_days(client, users):
    one_day = {"start": "2025-03-11", "end": "2025-03-11"}
    assert rows_of(download(client, users["owner"], "my-usage-csv", one_day)) == []
    assert rows_of(download(client, users["superadmin"], "usage-buckets-csv", one_day)) == [
        ("2025-03-11", "member@example.com", "6.0")]


@pytest.mark.parametrize("name", ["my-usage-csv", "usage-buckets-csv"])
def test_a_signed_out_visitor_is_sent_to_the_login_page(client, users, name):
    answer = client.get(reverse(f"ui-sessions:{name}"), MARCH)
    assert answer.status_code == 302 and "login" in answer["Location"]


@pytest.mark.parametrize("name", ["my-usage-csv", "usage-buckets-csv"])
@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_query_parameters_answer_the_pages_400_not_500(client, users, name, query):
    answer = download(client, users["superadmin"], name, query)
    assert answer.status_code == 400 and answer["Content-Type"].startswith("text/html")
    html = answer.content.decode()
    assert 'class="error"' in html and "Traceback" not in html


def test_my_usage_links_the_csv_of_the_shown_period_and_the_link_downloads_it(client, users):
    client.force_login(users["owner"])
    html = client.get(reverse("ui-sessions:my-usage"), MARCH).content.decode()
    link = f'{reverse("ui-sessions:my-usage-csv")}?start=2025-03-01&amp;end=2025-03-31'
    assert f'href="{link}"' in html and "Download CSV" in html
    assert rows_of(client.get(link.replace("&amp;", "&"))) == OWN_ROWS["owner"]


def test_the_operators_usage_page_links_the_usage_buckets_csv_of_the_shown_period(client, users):
    client.force_login(users["superadmin"])
    html = client.get(reverse("ui-operators:usage"), {"start": "2025-03-10", "end": "2025-03-12"}).content.decode()
    link = f'{reverse("ui-sessions:usage-buckets-csv")}?start=2025-03-10&amp;end=2025-03-12'
    assert f'href="{link}"' in html and "Download CSV" in html
    assert rows_of(client.get(link.replace("&amp;", "&"))) == EXPORT_ROWS["superadmin"]


def test_the_csv_names_the_period_in_its_file_name(client, users):
    answer = download(client, users["owner"], "my-usage-csv", MARCH)
    assert 'filename="my-usage-20250301-20250331.csv"' in answer["Content-Disposition"]
    answer = download(client, users["superadmin"], "usage-buckets-csv", MARCH)
    assert 'filename="usage-buckets-20250301-20250331.csv"' in answer["Content-Disposition"]
