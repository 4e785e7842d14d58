"""CSV exports of sessions (``backend.ai admin export sessions``, client 26.9.6): who may run
them and what each role sees, the client's filters and orders.  (The ``audit-logs`` report is
the audit log's: tests/backendai/test_audit_client.py.)"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Project
from helpers import csv_rows, slug
from permission_matrix import Case, World, check, params
from sessions.models import Session

pytestmark = pytest.mark.django_db

ADMINS_ONLY = {"owner": 403, "member": 403, "outsider": 403, "foreign_admin": 200, "superadmin": 200}
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def make_session(user, name, statuses, *, start=0, project=None):
    """A session of ``user`` that went through ``statuses``, one a minute from ``start``."""
    history = [{"status": status, "timestamp": at(start + i).isoformat()} for i, status in enumerate(statuses)]
    session = Session.objects.create(
        name=name, domain_id=user.domain_id, project=project or user.projects.order_by("name").first(), user=user,
        access_key=user.main_keypair, image="python:3.12", status=statuses[-1], status_history=history,
        occupying_slots={"cpu": "1"}, terminated_at=at(start + len(statuses) - 1) if statuses[-1] == "TERMINATED" else None)
    Session.objects.filter(pk=session.pk).update(created_at=at(start))
    return Session.objects.get(pk=session.pk)


@pytest.fixture
def other_project(defaults, outsider):
    return Project.objects.create(name="otherproj", domain_id=outsider.domain_id, resource_policy=defaults.project_policy)


@pytest.fixture
def world(owner, member, outsider, foreign_admin, superadmin, other_project):
    mine = make_session(owner, "ownersess", ["PENDING", "SCHEDULED", "RUNNING", "TERMINATING", "TERMINATED"])
    theirs = make_session(outsider, "outsidersess", ["PENDING", "RUNNING"], start=1.5, project=other_project)
    return World(users={"owner": owner, "member": member, "outsider": outsider, "foreign_admin": foreign_admin,
                        "superadmin": superadmin}, objects={"session": str(mine.pk), "other": str(theirs.pk)})


def export(api, report, body=None):
    return api.post(f"/export/{report}/csv", body if body is not None else {"encoding": "utf-8"})


def column(rows, name) -> list[str]:
    index = rows[0].index(name)
    return [row[index] for row in rows[1:]]


CASES = [
    Case("POST /export/sessions/csv", lambda api, w, r: export(api, "sessions"), ADMINS_ONLY,
         marker=lambda w: w.objects["session"], sees=("superadmin",)),
]


@pytest.mark.parametrize("case,role", params(CASES))
def test_it_answers_each_role_as_the_matrix_says(case, role, world, signed):
    check(case, role, world, signed)


def test_it_refuses_a_non_admin_and_shows_a_domain_admin_their_domain_only(signed, world, domain_admin):
    refused = export(signed(world.users["owner"]), "sessions")
    assert refused.status_code == 403 and slug(refused) == "insufficient-privilege"
    rows = csv_rows(export(signed(domain_admin), "sessions"))
    assert set(column(rows, "ID")) == {world.objects["session"]}
    foreign = csv_rows(export(signed(world.users["foreign_admin"]), "sessions"))
    assert set(column(foreign, "ID")) == {world.objects["other"]}


def test_it_writes_the_session_columns(signed, world, superadmin):
    rows = csv_rows(export(signed(superadmin), "sessions", {"filter": {"name": {"equals": "ownersess"}}}))
    assert len(rows) == 2
    record = dict(zip(rows[0], rows[1]))
    assert record["ID"] == world.objects["session"] and record["Status"] == "TERMINATED"
    assert record["User Email"] == "owner@example.com" and record["Project"] == "default"
    assert record["Domain"] == "default" and record["Access Key"] == world.users["owner"].main_keypair_id
    assert record["Occupying Slots"] == '{"cpu": "1"}' and record["Cluster Size"] == "1"
    assert record["Created At"] == at(0).isoformat() and record["Terminated At"] == at(4).isoformat()


def test_it_applies_the_clients_session_filters_and_order(signed, world, superadmin):
    api = signed(superadmin)
    by_user = {"filter": {"user": {"email": {"contains": "outsider@"}}}}
    assert column(csv_rows(export(api, "sessions", by_user)), "Name") == ["outsidersess"]
    running = {"filter": {"status": ["running", "PULLING"], "session_type": ["INTERACTIVE"]}}
    assert column(csv_rows(export(api, "sessions", running)), "Name") == ["outsidersess"]
    ended = {"filter": {"terminated_at": {"after": at(0).isoformat()}}}
    assert column(csv_rows(export(api, "sessions", ended)), "Name") == ["ownersess"]
    newest_first = {"order": [{"field": "created_at", "direction": "DESC"}], "fields": ["name"]}
    assert csv_rows(export(api, "sessions", newest_first)) == [["Name"], ["outsidersess"], ["ownersess"]]


def test_it_reads_sessions_in_a_constant_number_of_queries(signed, world, superadmin, owner):
    api = signed(superadmin)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            csv_rows(export(api, "sessions"))
        return len(captured)

    few = queries()
    for n in range(12):
        make_session(owner, f"more{n}", ["PENDING", "RUNNING"], start=10 + n)
    assert queries() == few
