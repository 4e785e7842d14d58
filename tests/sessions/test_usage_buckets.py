"""Usage statistics (sessions.usage_buckets): slot-hours per UTC day from kernel lifetimes, per
user, project and resource group; ``GET /resource/stats``, ``/resource/stats/user/month`` and
``/resource/stats/admin/month``; the ``usage-buckets`` CSV report; the "My usage" page."""
from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from agents import services as agent_services
from agents.models import Agent
from helpers import problem
from permission_matrix import ROLES, Case, World, check, params
from sessions import services as session_services
from sessions import usage_buckets
from sessions.lifecycle import KernelStatus, SessionStatus
from sessions.models import Kernel, Session

pytestmark = pytest.mark.django_db

GIB = 2**30
UTC = dt_timezone.utc


def utc(day: str, hour: int = 0) -> datetime:
    return datetime.strptime(day, "%Y-%m-%d").replace(hour=hour, tzinfo=UTC)


def place(user, agent, name, since, until=None, slots=None) -> Session:
    """A session placed on ``agent`` that held ``slots`` from ``since`` until ``until`` (None:
    still running)."""
    session = session_services.create_session_on_agent(
        user=user, image="bai-test/http:1.0", agent=agent, name=name,
        slots=slots or {"cpu": "2", "mem": str(GIB)}, mounts=[])
    history = [{"status": "PENDING", "timestamp": (since - timedelta(minutes=5)).isoformat()},
               {"status": "SCHEDULED", "timestamp": since.isoformat()}]
    Kernel.objects.filter(session=session).update(
        created_at=since - timedelta(minutes=5), terminated_at=until, status_history=history,
        status=KernelStatus.TERMINATED if until else KernelStatus.RUNNING)
    Session.objects.filter(pk=session.pk).update(
        created_at=since, terminated_at=until, status=SessionStatus.TERMINATED if until else SessionStatus.RUNNING)
    return Session.objects.get(pk=session.pk)


@pytest.fixture
def agent(defaults):
    group = agent_services.ensure_default_scaling_group()
    return Agent.objects.create(id="node-1", scaling_group=group, available_slots={"cpu": "8", "mem": str(8 * GIB)},
                                last_heartbeat=timezone.now())


def everything(user, first, last, **kwargs):
    return usage_buckets.compute(usage_buckets.scope_for(user), first.date(), last.date(), **kwargs)


# --- the arithmetic -----------------------------------------------------------------------------

def test_it_counts_a_two_hour_two_cpu_session_as_four_cpu_hours_for_the_user_and_the_project(owner, agent,
                                                                                              superadmin):
    session = place(owner, agent, "two-hours", utc("2025-03-10", 9), utc("2025-03-10", 11))
    by_user = everything(superadmin, utc("2025-03-09"), utc("2025-03-11"), group_by=("user",))
    assert [(b.period.isoformat(), b.user_email, b.usage) for b in by_user] == [
        ("2025-03-10", "owner@example.com", {"cpu": 4, "mem": 2})]
    by_project = everything(superadmin, utc("2025-03-09"), utc("2025-03-11"), group_by=("project",))
    assert [(b.period.isoformat(), b.project_id, b.usage["cpu"]) for b in by_project] == [
        ("2025-03-10", str(session.project_id), 4)]
    assert by_project[0].session_ids == {session.pk} and by_project[0].kernels == 1


def test_it_counts_from_the_placement_not_from_the_creation(owner, agent, superadmin):
    place(owner, agent, "queued-first", utc("2025-03-10", 9), utc("2025-03-10", 10))  # created 5 min before
    (bucket,) = everything(superadmin, utc("2025-03-10"), utc("2025-03-10"))
    assert bucket.usage["cpu"] == 2


def test_it_splits_a_session_that_spans_midnight_between_the_two_days(owner, agent, superadmin):
    place(owner, agent, "overnight", utc("2025-03-10", 22), utc("2025-03-11", 3))
    buckets = everything(superadmin, utc("2025-03-01"), utc("2025-03-31"))
    assert [(b.period.isoformat(), b.usage["cpu"]) for b in buckets] == [("2025-03-10", 4), ("2025-03-11", 6)]
    (month,) = everything(superadmin, utc("2025-03-01"), utc("2025-03-31"), granularity="month")
    assert month.period.isoformat() == "2025-03-01" and month.usage["cpu"] == 10


def test_it_clips_a_session_to_the_asked_period(owner, agent, superadmin):
    place(owner, agent, "long", utc("2025-03-01", 12), utc("2025-03-20", 12))
    buckets = everything(superadmin, utc("2025-03-05"), utc("2025-03-06"))
    assert [(b.period.day, b.usage["cpu"]) for b in buckets] == [(5, 48), (6, 48)]


def test_it_counts_a_running_kernel_up_to_now(owner, agent, superadmin):
    now = timezone.now()
    place(owner, agent, "running", now - timedelta(hours=3))
    buckets = usage_buckets.compute(usage_buckets.scope_for(superadmin), (now - timedelta(days=1)).date(),
                                    now.date(), now=now)
    assert round(sum(float(b.usage["cpu"]) for b in buckets), 6) == 6.0
    later = usage_buckets.compute(usage_buckets.scope_for(superadmin), (now - timedelta(days=1)).date(),
                                  (now + timedelta(days=1)).date(), now=now + timedelta(hours=1))
    assert round(sum(float(b.usage["cpu"]) for b in later), 6) == 8.0


def test_it_counts_gpu_slots_in_hours_and_memory_in_gib_hours(owner, agent, superadmin):
    place(owner, agent, "gpu", utc("2025-03-10", 0), utc("2025-03-10", 3),
          slots={"cpu": "1", "mem": str(4 * GIB), "cuda.device": "2", "cuda.shares": "0.5"})
    (bucket,) = everything(superadmin, utc("2025-03-10"), utc("2025-03-10"))
    assert bucket.usage == {"cpu": 3, "mem": 12, "cuda.device": 6, "cuda.shares": 1.5}


def test_it_keeps_users_projects_and_resource_groups_apart(defaults, owner, member, outsider, agent, superadmin):
    from accounts.models import Project, ProjectMembership

    ProjectMembership.objects.create(user=outsider, project=Project.objects.create(
        domain_id="other", name="lab", resource_policy=defaults.project_policy))
    place(owner, agent, "a", utc("2025-03-10", 0), utc("2025-03-10", 1))
    place(member, agent, "b", utc("2025-03-10", 0), utc("2025-03-10", 2))
    place(outsider, agent, "c", utc("2025-03-10", 0), utc("2025-03-10", 4))
    buckets = everything(superadmin, utc("2025-03-10"), utc("2025-03-10"))
    assert sorted((b.user_email, b.domain_name, b.resource_group, float(b.usage["cpu"])) for b in buckets) == [
        ("member@example.com", "default", "default", 4.0), ("outsider@other.example.com", "other", "default", 8.0),
        ("owner@example.com", "default", "default", 2.0)]


def test_it_reads_the_kernels_in_one_query_whatever_their_number(owner, agent, superadmin):
    place(owner, agent, "first", utc("2025-03-10", 0), utc("2025-03-12", 0))
    with CaptureQueriesContext(connection) as one:
        everything(superadmin, utc("2025-03-01"), utc("2025-03-31"))
    for i in range(1, 7):  # each held on 6 days, the 10th to the 15th
        place(owner, agent, f"more{i}", utc("2025-03-10", i), utc("2025-03-15", i))
    with CaptureQueriesContext(connection) as seven:
        buckets = everything(superadmin, utc("2025-03-01"), utc("2025-03-31"))
    assert len(one.captured_queries) == len(seven.captured_queries) == 1
    assert sum(b.kernels for b in buckets) == 2 + 6 * 6


# --- the API ------------------------------------------------------------------------------------

@pytest.fixture
def world(owner, member, outsider, foreign_admin, superadmin, agent):
    place(owner, agent, "ownersess", utc("2025-03-10", 9), utc("2025-03-10", 11))
    place(owner, agent, "recent", timezone.now() - timedelta(hours=1))
    users = {"owner": owner, "member": member, "outsider": outsider, "foreign_admin": foreign_admin,
             "superadmin": superadmin}
    return World(users=users)


def owner_id(world) -> str:
    return str(world.users["owner"].pk)


def export_csv(api):
    return api.post("/export/usage-buckets/csv", data={"filter": {"period": {"after": "2025-03-01T00:00:00Z",
                                                                             "before": "2025-03-31T00:00:00Z"}}},
                    content_type="application/json")


ADMINS = {"owner": 403, "member": 403, "outsider": 403, "foreign_admin": 200, "superadmin": 200}
CASES = [
    Case("GET /resource/stats", lambda api, w, r: api.get("/resource/stats?start=2025-03-01&end=2025-03-31"),
         {role: 200 for role in ROLES}, marker=owner_id, sees=("owner", "superadmin")),
    Case("GET /resource/stats (mine)", lambda api, w, r: api.get("/resource/stats?start=20250301&end=20250331&mine=1"),
         {role: 200 for role in ROLES}, marker=owner_id, sees=("owner",)),
    Case("GET /resource/stats/user/month", lambda api, w, r: api.get("/resource/stats/user/month"),
         {role: 200 for role in ROLES}),
    Case("GET /resource/stats/admin/month", lambda api, w, r: api.get("/resource/stats/admin/month"), ADMINS),
    Case("POST /export/usage-buckets/csv", lambda api, w, r: export_csv(api), ADMINS,
         marker=lambda w: "owner@example.com", sees=("superadmin",)),
    Case("POST /fair-share/usage-buckets/users/search", lambda api, w, r: search(api, "users"), ADMINS,
         marker=owner_id, sees=("superadmin",)),
]


def search(api, level, **body):
    body.setdefault("filter", {"period_start": {"after": "2025-03-01", "before": "2025-03-31"}})
    return api.post(f"/fair-share/usage-buckets/{level}/search", data=body, content_type="application/json")


@pytest.mark.parametrize("case, role", params(CASES))
def test_usage_statistics_answer_each_role_what_it_may_see(case, role, world, signed):
    check(case, role, world, signed)


def test_the_stats_endpoint_answers_the_buckets_with_their_units(world, owner, signed):
    answer = signed(owner).get("/resource/stats?start=2025-03-01&end=2025-03-31&group_by=user,project")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["units"] == {"cpu": "core-hours", "mem": "GiB-hours"} and body["timezone"] == "UTC"
    (bucket,) = body["buckets"]
    assert bucket["period"] == "2025-03-10" and bucket["usage"] == {"cpu": 4.0, "mem": 2.0}
    assert bucket["user_email"] == "owner@example.com" and bucket["project_name"] == "default"
    assert "resource_group" not in bucket and bucket["sessions"] == 1 and body["totals"] == {"cpu": 4.0, "mem": 2.0}
    month = signed(owner).get("/resource/stats?start=2025-01-01&end=2025-12-31&granularity=month&group_by=project")
    assert [(b["period"], b["usage"]["cpu"]) for b in month.json()["buckets"]] == [("2025-03", 4.0)]


def test_a_domain_admin_sees_their_domains_usage_and_no_other(world, domain_admin, foreign_admin, signed):
    mine = signed(domain_admin).get("/resource/stats?start=2025-03-01&end=2025-03-31").json()
    assert [b["user_email"] for b in mine["buckets"]] == ["owner@example.com"]
    theirs = signed(foreign_admin).get("/resource/stats?start=2025-03-01&end=2025-03-31").json()
    assert theirs["buckets"] == []


def test_the_month_series_has_thirty_days_in_the_clients_shape(world, owner, member, signed):
    series = signed(owner).get("/resource/stats/user/month").json()
    assert len(series) == 30
    today = series[-1]
    assert today["date"] == int(utc(timezone.now().astimezone(UTC).date().isoformat()).timestamp())
    assert today["num_sessions"] == {"value": 1, "unit_hint": "count"}
    assert today["cpu_allocated"]["unit_hint"] == "count" and today["mem_allocated"]["unit_hint"] == "bytes"
    assert sum(day["usage"].get("cpu", 0) for day in series) == pytest.approx(2.0, abs=0.01)
    assert all(day["num_sessions"]["value"] == 0 for day in signed(member).get("/resource/stats/user/month").json())


@pytest.mark.parametrize("query", [
    "start=yesterday", "start=2025-02-30", "start=2025-03-10&end=2025-03-01", "start=2000-01-01&end=2025-01-01",
    "start=0001-01-01", "granularity=hour", "granularity=day,month", "group_by=planet", "project_id=not-a-uuid",
    "user_id=1,2,3", "mine=maybe", "resource_group=" + "x" * 100, "resource_group=a%00b", "start=2025-03-01%00", "start=" + "9" * 5000,
])
def test_it_refuses_hostile_parameters_with_a_problem(world, superadmin, signed, query):
    answer = signed(superadmin).get(f"/resource/stats?{query}")
    assert answer.status_code == 400, answer.content
    assert problem(answer)["type"].endswith("invalid-api-params")


def test_the_csv_report_has_one_row_per_day_and_group(world, owner, superadmin, signed):
    place(owner, Agent.objects.get(), "overnight", utc("2025-03-20", 23), utc("2025-03-21", 1))
    answer = export_csv(signed(superadmin))
    assert answer.status_code == 200 and answer["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(answer.streaming_content).decode())))
    assert [(r["Day"], r["User Email"], r["CPU core-hours"], r["Memory GiB-hours"]) for r in rows] == [
        ("2025-03-10", "owner@example.com", "4.0", "2.0"), ("2025-03-20", "owner@example.com", "2.0", "1.0"),
        ("2025-03-21", "owner@example.com", "2.0", "1.0")]


def test_the_csv_report_walks_a_long_period_in_windows_and_in_either_order(world, owner, superadmin, signed):
    place(owner, Agent.objects.get(), "in-2023", utc("2023-06-01", 8), utc("2023-06-01", 9))
    api = signed(superadmin)
    body = {"filter": {"period": {"after": "2000-01-01T00:00:00Z", "before": "2025-03-31T00:00:00Z"}}}
    rows = list(csv.DictReader(io.StringIO(b"".join(
        api.post("/export/usage-buckets/csv", data=body, content_type="application/json").streaming_content).decode())))
    assert [(r["Day"], r["CPU core-hours"]) for r in rows] == [("2023-06-01", "2.0"), ("2025-03-10", "4.0")]
    newest_first = api.post("/export/usage-buckets/csv", data={**body, "order": [{"field": "period", "direction": "desc"}]},
                            content_type="application/json")
    rows = list(csv.DictReader(io.StringIO(b"".join(newest_first.streaming_content).decode())))
    assert [r["Day"] for r in rows] == ["2025-03-10", "2023-06-01"]
    backwards = api.post("/export/usage-buckets/csv", data={"filter": {"period": {
        "after": "2025-03-31T00:00:00Z", "before": "2025-03-01T00:00:00Z"}}}, content_type="application/json")
    assert backwards.status_code == 400 and problem(backwards)["type"].endswith("invalid-api-params")


def test_the_26_09_bucket_search_answers_per_level_in_the_clients_shape(world, owner, superadmin, signed):
    api = signed(superadmin)
    place(owner, Agent.objects.get(), "overnight", utc("2025-03-20", 23), utc("2025-03-21", 1))
    users = search(api, "users", order=[{"field": "period_start", "direction": "asc"}], limit=2)
    assert users.status_code == 200, users.content
    body = users.json()
    assert body["pagination"] == {"total": 3, "offset": 0, "limit": 2}
    first = body["items"][0]
    assert first["user_uuid"] == str(owner.pk) and first["domain_name"] == "default"
    assert first["resource_group"] == "default" and first["metadata"]["period_start"] == "2025-03-10"
    assert first["metadata"]["period_end"] == "2025-03-11" and first["metadata"]["decay_unit_days"] == 1
    assert first["resource_usage"] == {"entries": [{"resource_type": "cpu", "quantity": "4"},
                                                   {"resource_type": "mem", "quantity": "2"}]}
    assert first["capacity_snapshot"]["entries"] == [{"resource_type": "cpu", "quantity": "8"},
                                                     {"resource_type": "mem", "quantity": "8"}]
    assert first["metadata"]["usage_capacity_ratio"]["entries"][0]["quantity"] == "0.020833"
    newest = search(api, "domains").json()["items"]
    assert [i["metadata"]["period_start"] for i in newest] == ["2025-03-21", "2025-03-20", "2025-03-10"]
    assert "project_id" not in newest[0] and "user_uuid" not in newest[0]
    projects = search(api, "projects", filter={"project_id": {"equals": str(world.users["owner"].projects.get().pk)},
                                               "period_start": {"after": "2025-03-15", "before": "2025-03-25"}})
    assert [i["metadata"]["period_start"] for i in projects.json()["items"]] == ["2025-03-21", "2025-03-20"]
    nobody = search(api, "users", filter={"user_uuid": {"equals": str(superadmin.pk)}})
    assert nobody.json() == {"items": [], "pagination": {"total": 0, "offset": 0, "limit": 20}}


@pytest.mark.parametrize("body", [
    {"filter": {"planet": {"equals": "x"}}}, {"filter": {"user_uuid": {"equals": "nope"}}},
    {"filter": {"period_start": {"after": "2000-01-01", "before": "2025-01-01"}}},
    {"filter": {"period_start": {"after": "2025-13-01"}}}, {"filter": {"resource_group": {"equals": "a\x00b"}}},
    {"limit": 0}, {"limit": 100000}, {"offset": -1}, {"limit": "10"}, {"order": [{"field": "cpu"}]},
    {"order": [{"field": "period_start", "direction": "sideways"}]}, {"filter": []}, ["not", "an", "object"],
])
def test_the_bucket_search_refuses_hostile_bodies_with_a_problem(world, superadmin, signed, body):
    answer = signed(superadmin).post("/fair-share/usage-buckets/users/search", data=body,
                                     content_type="application/json")
    assert answer.status_code == 400, answer.content
    assert problem(answer)["type"].endswith("invalid-api-params")


def test_the_bucket_search_answers_404_for_an_unknown_level(world, superadmin, signed):
    answer = signed(superadmin).post("/fair-share/usage-buckets/planets/search", data={},
                                     content_type="application/json")
    assert answer.status_code == 404 and problem(answer)


# --- the web UI ---------------------------------------------------------------------------------

def test_my_usage_shows_my_own_core_hours_per_day_as_a_chart(client, world, owner, member):
    client.force_login(owner)
    page = client.get(reverse("ui-sessions:my-usage"), {"start": "2025-03-01", "end": "2025-03-31"})
    html = page.content.decode()
    assert page.status_code == 200 and "<svg" in html and 'style="' not in html
    assert 'data-owner="default/default"' in html and '<td class="total">4.0</td>' in html
    assert reverse("ui-sessions:my-usage") in html  # in the navigation
    client.force_login(member)
    html = client.get(reverse("ui-sessions:my-usage"), {"start": "2025-03-01", "end": "2025-03-31"}).content.decode()
    assert "data-owner=" not in html and "No session held resources" in html


def test_my_usage_shows_months(client, world, owner):
    client.force_login(owner)
    page = client.get(reverse("ui-sessions:my-usage"), {"granularity": "month", "start": "2025-01-01",
                                                        "end": "2025-06-30"})
    html = page.content.decode()
    assert page.status_code == 200 and ">2025-03<" in html and '<td class="total">4.0</td>' in html


@pytest.mark.parametrize("query", [{"start": "yesterday"}, {"granularity": "hour"},
                                   {"start": "2000-01-01", "end": "2025-01-01"}])
def test_my_usage_refuses_a_bad_period_with_a_message(client, world, owner, query):
    client.force_login(owner)
    page = client.get(reverse("ui-sessions:my-usage"), query)
    assert page.status_code == 400
    assert "errorlist" in page.content.decode() or 'class="error"' in page.content.decode()


def test_operators_see_usage_by_project_and_by_resource_group(client, world, superadmin):
    client.force_login(superadmin)
    day = {"start": "2025-03-10", "end": "2025-03-10"}
    html = client.get(reverse("ui-operators:usage"), {**day, "by": "project"}).content.decode()
    assert 'data-owner="default/default"' in html and '<td class="total">4.0</td>' in html
    html = client.get(reverse("ui-operators:usage"), {**day, "by": "resource_group"}).content.decode()
    assert 'data-owner="default"' in html
