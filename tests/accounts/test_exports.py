"""CSV exports of users, keypairs and projects (``backend.ai admin export``, client 26.9.6:
``POST /export/<report>/csv`` with the client's body, ``GET /export/reports``): who may
run them and what each role sees, the client's filters, fields and orders, and bad
requests refused with 400 before any query."""
from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts import services as account_services
from accounts.models import Project, User
from helpers import csv_rows, slug
from permission_matrix import ROLES, Case, World, check, params

pytestmark = pytest.mark.django_db

ALL_OK = {role: 200 for role in ROLES}
ADMINS_ONLY = {"owner": 403, "member": 403, "outsider": 403, "foreign_admin": 200, "superadmin": 200}


@pytest.fixture
def world(owner, member, outsider, foreign_admin, superadmin, defaults):
    project = Project.objects.create(name="ownerproj", domain=defaults.domain, resource_policy=defaults.project_policy)
    return World(users={"owner": owner, "member": member, "outsider": outsider, "foreign_admin": foreign_admin,
                        "superadmin": superadmin}, objects={"project": project.name})


def export(api, report, body=None, **kw):
    return api.post(f"/export/{report}/csv", body if body is not None else {"encoding": "utf-8"}, **kw)


def column(rows, name) -> list[str]:
    index = rows[0].index(name)
    return [row[index] for row in rows[1:]]


CASES = [
    Case("GET /export/reports", lambda api, w, r: api.get("/export/reports"), ALL_OK),
    Case("GET /export/reports/users", lambda api, w, r: api.get("/export/reports/users"), ALL_OK),
    Case("POST /export/users/csv", lambda api, w, r: export(api, "users"), ADMINS_ONLY,
         marker=lambda w: w.users["owner"].email, sees=("superadmin",)),
    Case("POST /export/keypairs/csv", lambda api, w, r: export(api, "keypairs"), ADMINS_ONLY,
         marker=lambda w: w.users["owner"].main_keypair_id, sees=("superadmin",)),
    Case("POST /export/projects/csv", lambda api, w, r: export(api, "projects"), ADMINS_ONLY,
         marker=lambda w: w.objects["project"], sees=("superadmin",)),
]


@pytest.mark.parametrize("case,role", params(CASES))
def test_it_answers_each_role_as_the_matrix_says(case, role, world, signed):
    check(case, role, world, signed)


def test_it_refuses_a_user_with_problem_json(signed, owner):
    refused = export(signed(owner), "users")
    assert refused.status_code == 403 and slug(refused) == "insufficient-privilege"


@pytest.mark.parametrize("report", ["users", "keypairs", "projects"])
def test_it_shows_a_domain_admin_their_domain_only(signed, world, domain_admin, report):
    rows = csv_rows(export(signed(domain_admin), report))
    text = "\n".join(",".join(row) for row in rows)
    owner, outsider = world.users["owner"], world.users["outsider"]
    assert {"users": owner.email, "keypairs": owner.main_keypair_id, "projects": "ownerproj"}[report] in text
    assert outsider.email not in text and outsider.main_keypair_id not in text
    if report != "keypairs":
        assert set(column(rows, "Domain")) == {"default"}


def test_it_lists_every_report_with_its_fields(signed, superadmin):
    reports = {r["report_key"]: r for r in signed(superadmin).get("/export/reports").json()["reports"]}
    assert {"users", "keypairs", "projects", "sessions", "audit-logs"} <= set(reports)
    users = reports["users"]
    assert users["name"] and users["description"]
    assert {f["key"] for f in users["fields"]} >= {"uuid", "username", "email", "full_name", "domain_name", "role",
                                                   "status", "created_at", "modified_at"}
    assert all(set(f) == {"key", "name", "description", "field_type"} for f in users["fields"])
    one = signed(superadmin).get("/export/reports/keypairs").json()["report"]
    assert one == reports["keypairs"]


def test_it_answers_404_for_an_unknown_report(signed, superadmin):
    assert slug(signed(superadmin).get("/export/reports/nope")) == "object-not-found"
    assert slug(export(signed(superadmin), "nope")) == "object-not-found"


def test_it_writes_all_user_fields_with_display_names_as_the_header(signed, superadmin, owner):
    rows = csv_rows(export(signed(superadmin), "users"))
    assert rows[0][:4] == ["UUID", "Username", "Email", "Full Name"]
    line = rows[1 + column(rows, "Email").index("owner@example.com")]
    record = dict(zip(rows[0], line))
    assert record["UUID"] == str(owner.pk) and record["Domain"] == "default" and record["Role"] == "user"
    assert record["Need Password Change"] == "false" and record["Main Access Key"] == owner.main_keypair_id
    assert record["Created At"] == owner.created_at.isoformat()


def test_it_writes_the_asked_fields_in_the_asked_order(signed, superadmin, owner):
    rows = csv_rows(export(signed(superadmin), "users", {"fields": ["email", "role", "email"]}))
    assert rows[0] == ["Email", "Role"]
    assert ["owner@example.com", "user"] in rows


def test_it_applies_the_clients_user_filters_and_order(signed, superadmin, owner, member, outsider, domain_admin):
    api = signed(superadmin)
    body = {"filter": {"email": {"contains": "example.com"}, "role": ["user"], "status": ["active"]},
            "order": [{"field": "email", "direction": "DESC"}], "encoding": "utf-8"}
    emails = column(csv_rows(export(api, "users", body)), "Email")
    assert emails == sorted([owner.email, member.email, outsider.email], reverse=True)
    admins = column(csv_rows(export(api, "users", {"filter": {"role": ["ADMIN"]}})), "Email")
    assert admins == [domain_admin.email]
    none = column(csv_rows(export(api, "users", {"filter": {"email": {"i_not_contains": "EXAMPLE"}}})), "Email")
    assert none == []
    domain = column(csv_rows(export(api, "users", {"filter": {"domain_name": {"equals": "other"}}})), "Email")
    assert domain == [outsider.email]


def test_it_takes_the_body_the_cli_builds_from_its_filter_options(signed, superadmin, owner, outsider):
    """``admin export users --fields email --filter-username owner --filter-domain def --filter-role user
    --filter-status active --filter-after 2024-01-01`` (26.9.6 builds every string filter as ``contains`` and
    sends naive datetimes)."""
    body = {"fields": ["email"], "filter": {"username": {"contains": "owner"}, "domain_name": {"contains": "def"},
                                            "role": ["user"], "status": ["active"],
                                            "created_at": {"after": "2024-01-01T00:00:00"}},
            "order": [{"field": "email", "direction": "DESC"}], "encoding": "utf-8"}
    assert csv_rows(export(signed(superadmin), "users", body)) == [["Email"], [owner.email]]


def test_it_filters_by_creation_time_inclusively(signed, superadmin, owner, member):
    User.objects.filter(pk=owner.pk).update(created_at=timezone.now() - timedelta(days=10))
    owner.refresh_from_db()
    api = signed(superadmin)
    old = {"filter": {"created_at": {"before": (timezone.now() - timedelta(days=5)).isoformat()}}}
    assert column(csv_rows(export(api, "users", old)), "Email") == [owner.email]
    exact = {"filter": {"created_at": {"after": owner.created_at.isoformat(), "before": owner.created_at.isoformat()}}}
    assert column(csv_rows(export(api, "users", exact)), "Email") == [owner.email]
    naive = {"filter": {"created_at": {"after": (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")}}}
    assert owner.email not in column(csv_rows(export(api, "users", naive)), "Email")


def test_it_never_writes_a_keypair_secret_and_filters_keypairs(signed, superadmin, owner):
    second, _ = account_services.create_keypair(owner)
    account_services.deactivate_own_keypair(owner, second.access_key, False)
    api = signed(superadmin)
    rows = csv_rows(export(api, "keypairs", {"filter": {"user_id": {"equals": owner.email}},
                                             "order": [{"field": "access_key"}]}))
    assert sorted(column(rows, "Access Key")) == column(rows, "Access Key")
    assert set(column(rows, "Access Key")) == {owner.main_keypair_id, second.access_key}
    text = "\n".join(",".join(row) for row in rows)
    assert second.secret_key not in text and owner.main_keypair.secret_key not in text
    inactive = csv_rows(export(api, "keypairs", {"filter": {"is_active": False}}))
    assert column(inactive, "Access Key") == [second.access_key] and column(inactive, "Active") == ["false"]


def test_it_writes_project_limits_as_json_and_filters_by_activity(signed, superadmin, defaults):
    Project.objects.create(name="closed", domain=defaults.domain, resource_policy=defaults.project_policy,
                           is_active=False, total_resource_slots={"cpu": "4", "mem": "8g"})
    api = signed(superadmin)
    rows = csv_rows(export(api, "projects", {"fields": ["name", "total_resource_slots", "is_active"],
                                             "filter": {"is_active": False}}))
    assert rows == [["Name", "Total Resource Slots", "Active"], ["closed", '{"cpu": "4", "mem": "8g"}', "false"]]
    names = column(csv_rows(export(api, "projects", {"order": [{"field": "name", "direction": "desc"}]})), "Name")
    assert names == sorted(names, reverse=True) and "closed" in names and "default" in names


def test_it_writes_euc_kr_when_asked(signed, superadmin, make_user):
    make_user("kim@example.com", full_name="김철수")
    response = export(signed(superadmin), "users", {"fields": ["email", "full_name"], "encoding": "euc-kr"})
    rows = csv_rows(response, "euc-kr")
    assert ["kim@example.com", "김철수"] in rows


def test_it_defuses_spreadsheet_formulas_in_text_cells(signed, superadmin, make_user):
    make_user("formula@example.com", full_name="=HYPERLINK(\"http://x\")")
    rows = csv_rows(export(signed(superadmin), "users", {"fields": ["email", "full_name"]}))
    assert ["formula@example.com", "'=HYPERLINK(\"http://x\")"] in rows


def test_it_names_the_file_after_the_report_or_the_clients_header(signed, superadmin):
    api = signed(superadmin)
    default = export(api, "users")
    assert default["Content-Disposition"].startswith('attachment; filename="users-')
    named = export(api, "users", extra={"HTTP_X_EXPORT_FILENAME": "../all users.csv"})
    assert named["Content-Disposition"] == 'attachment; filename="all users.csv"'
    assert b"".join(named.streaming_content).startswith(b"UUID,")


def test_it_reads_the_rows_in_a_constant_number_of_queries(signed, superadmin, make_user):
    api = signed(superadmin)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            csv_rows(export(api, "keypairs"))
        return len(captured)

    few = queries()
    for n in range(15):
        make_user(f"many{n}@example.com")
    assert queries() == few


@pytest.mark.parametrize("body,where", [
    ({"fields": ["email", "password"]}, "fields"),
    ({"fields": "email"}, "fields"),
    ({"fields": [1]}, "fields[0]"),
    ({"filter": {"nope": {"equals": "x"}}}, "filter"),
    ({"filter": {"email": {"like": "x"}}}, "filter.email"),
    ({"filter": {"email": "x"}}, "filter.email"),
    ({"filter": {"email": {"contains": 7}}}, "filter.email.contains"),
    ({"filter": {"email": {"contains": "x" * 513}}}, "filter.email.contains"),
    ({"filter": {"email": {"contains": "\ud800"}}}, "filter.email.contains"),
    ({"filter": {"email": {"in": ["a"] * 1001}}}, "filter.email.in"),
    ({"filter": {"role": "user"}}, "filter.role"),
    ({"filter": {"role": ["root"]}}, "filter.role[0]"),
    ({"filter": {"created_at": {"after": "yesterday"}}}, "filter.created_at.after"),
    ({"filter": {"created_at": {"after": "2024-02-30T00:00:00"}}}, "filter.created_at.after"),
    ({"filter": {"created_at": {"after": "2025-01-02", "before": "2025-01-01"}}}, "filter.created_at"),
    ({"filter": {"created_at": {"since": "2025-01-01"}}}, "filter.created_at"),
    ({"filter": []}, "filter"),
    ({"order": [{"field": "password"}]}, "order[0].field"),
    ({"order": [{"field": "email", "direction": "up"}]}, "order[0].direction"),
    ({"order": {"field": "email"}}, "order"),
    ({"order": [{"field": "email"}] * 11}, "order"),
    ({"encoding": "ebcdic"}, "encoding"),
    ({"encoding": "latin-1"}, "encoding"),
    ({"max_rows": 10}, "body"),
])
def test_it_refuses_a_bad_request_with_400_naming_the_part(signed, superadmin, body, where):
    refused = export(signed(superadmin), "users", body)
    assert refused.status_code == 400 and slug(refused) == "invalid-api-params", refused.content
    assert refused.json()["msg"].startswith(f"{where}:")


def test_it_refuses_a_bad_flag_and_a_bad_file_name(signed, superadmin):
    api = signed(superadmin)
    assert slug(export(api, "keypairs", {"filter": {"is_active": "yes"}})) == "invalid-api-params"
    bad_name = export(api, "users", extra={"HTTP_X_EXPORT_FILENAME": "a\tb.csv"})
    assert bad_name.status_code == 400 and slug(bad_name) == "invalid-api-params"


def test_it_refuses_a_non_admin_before_reading_the_body(signed, owner):
    refused = export(signed(owner), "users", {"fields": ["nope"]})
    assert refused.status_code == 403


def test_a_superadmin_sees_every_domains_users(signed, superadmin, owner, outsider):
    emails = column(csv_rows(export(signed(superadmin), "users")), "Email")
    assert {owner.email, outsider.email, superadmin.email} <= set(emails)


@pytest.fixture
def many_users(defaults):
    User.objects.bulk_create([
        User(username=f"bulk{n}", email=f"bulk{n}@example.com", full_name=f"Bulk User Number {n:04d}" + "x" * 30,
             domain=defaults.domain, resource_policy=defaults.user_policy, password="!")
        for n in range(1500)])


def test_it_streams_many_rows_in_bounded_chunks(signed, superadmin, many_users):
    from backendai.exports.views import CHUNK_BYTES

    response = export(signed(superadmin), "users")
    chunks = list(response.streaming_content)
    assert len(chunks) >= 3 and all(len(chunk) < CHUNK_BYTES + 1024 for chunk in chunks)
    rows = list(csv.reader(io.StringIO(b"".join(chunks).decode(), newline="")))
    assert len(rows) == 1 + User.objects.count()


def test_under_asgi_the_csv_streams_through_an_async_iterator(superadmin, many_users):
    """Django's ASGI handler would collect a synchronous iterator into a list first."""
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    from helpers import SignedClient

    keypair = superadmin.main_keypair
    meta = SignedClient(None, keypair.access_key, keypair.secret_key).headers("POST", "/export/users/csv")
    headers = {key[5:].replace("_", "-"): value for key, value in meta.items() if key != "HTTP_HOST"}

    async def download():
        response = await AsyncClient().post("/export/users/csv", {}, content_type="application/json",
                                            headers=headers)
        assert response.status_code == 200 and response.is_async, response.content
        return [chunk async for chunk in response.streaming_content]

    chunks = async_to_sync(download)()
    assert len(chunks) >= 2
    rows = list(csv.reader(io.StringIO(b"".join(chunks).decode(), newline="")))
    emails = column(rows, "Email")
    assert "bulk1499@example.com" in emails and len(emails) == User.objects.count()
