"""The audit log in the 26.09 client's shapes (``backendai.audit_client``): the ``audit-logs``
CSV report (``backend.ai admin export audit-logs``) and ``POST /v2/audit-logs/search``
(``backend.ai v2 audit-log search``): the permission matrix, what a domain admin sees,
rows that are the entries real actions wrote, the client's filters and orders, and hostile
bodies answered 400 problem+json."""
from __future__ import annotations

import uuid

import pytest

from backendai import actions
from backendai.models import AuditEntry
from helpers import client_body, csv_rows, seed_http_image_and_agent, slug
from permission_matrix import Case, World, check, params

pytestmark = pytest.mark.django_db

ADMINS_ONLY = {"owner": 403, "member": 403, "outsider": 403, "foreign_admin": 200, "superadmin": 200}


@pytest.fixture
def cluster(defaults):
    from agents import services as agent_services
    from agents.models import ImageAlias

    group = agent_services.ensure_default_scaling_group()
    image, _ = seed_http_image_and_agent(group)
    ImageAlias.objects.create(alias="http", image=image)
    return group


@pytest.fixture
def world(cluster, owner, member, outsider, foreign_admin, superadmin, signed):
    """Entries written by real calls: the owner's session created (success) and a refused
    one, the outsider's refused one, and a failed action recorded by ``actions.record``."""
    AuditEntry.objects.all().delete()
    created = signed(owner).post("/session", client_body(name="auditedsess", enqueueOnly=True),
                                 extra={"HTTP_X_REQUEST_ID": "req-audited-1"})
    assert created.status_code in (200, 201), created.content
    refused = signed(owner).post("/session", client_body(name="nopesess", image="no-such/image:1", enqueueOnly=True))
    assert 400 <= refused.status_code < 500
    theirs = signed(outsider).post("/session", client_body(name="theirsess", image="no-such/image:1",
                                                           enqueueOnly=True))
    assert 400 <= theirs.status_code < 500
    actions.record("vfolder", "delete", outcome=actions.FAILED, actor=owner, target="brokenfolder", detail="OSError: disk")
    return World(users={"owner": owner, "member": member, "outsider": outsider, "foreign_admin": foreign_admin,
                        "superadmin": superadmin})


def export(api, body=None):
    return api.post("/export/audit-logs/csv", body if body is not None else {"encoding": "utf-8"})


def search(api, body=None):
    return api.post("/v2/audit-logs/search", body if body is not None else {})


def column(rows, name) -> list[str]:
    index = rows[0].index(name)
    return [row[index] for row in rows[1:]]


CASES = [
    Case("POST /export/audit-logs/csv", lambda api, w, r: export(api), ADMINS_ONLY,
         marker=lambda w: "auditedsess", sees=("superadmin",)),
    Case("POST /v2/audit-logs/search", lambda api, w, r: search(api), ADMINS_ONLY,
         marker=lambda w: "auditedsess", sees=("superadmin",)),
]


@pytest.mark.parametrize("case,role", params(CASES))
def test_it_answers_each_role_as_the_matrix_says(case, role, world, signed):
    check(case, role, world, signed)


def test_a_user_is_refused_as_by_the_other_admin_only_endpoints(world, signed):
    for response in (export(signed(world.users["owner"])), search(signed(world.users["member"]))):
        assert response.status_code == 403 and slug(response) == "insufficient-privilege"
        assert response["Content-Type"].startswith("application/problem+json")


def test_a_domain_admin_sees_their_domains_entries_only(world, signed, domain_admin):
    rows = csv_rows(export(signed(domain_admin), {"filter": {"entity_type": {"equals": "session"}}}))
    assert sorted(column(rows, "Entity ID")) == sorted(
        AuditEntry.objects.filter(entity="session", actor_domain="default").values_list("target", flat=True))
    assert not any("theirsess" in target for target in column(rows, "Entity ID"))
    foreign = search(signed(world.users["foreign_admin"]), {"filter": {"entity_type": {"equals": "session"}}}).json()
    assert [item["entity_id"] for item in foreign["items"]] == ["theirsess"]


def test_the_csv_rows_are_the_entries_real_actions_wrote(world, signed, superadmin):
    rows = csv_rows(export(signed(superadmin), {"filter": {"triggered_by": {"equals": str(world.users["owner"].pk)}}}))
    records = [dict(zip(rows[0], row)) for row in rows[1:]]
    entries = list(AuditEntry.objects.filter(actor_id=str(world.users["owner"].pk)).order_by("created_at", "pk"))
    assert [r["ID"] for r in records] == [str(e.pk) for e in entries]
    created = next(r for r in records if r["Entity ID"].startswith("auditedsess"))
    entry = AuditEntry.objects.get(pk=int(created["ID"]))
    assert (created["Entity Type"], created["Operation"], created["Status"]) == ("session", "create", "success")
    assert created["Triggered By"] == created["Acted As"] == str(world.users["owner"].pk)
    assert created["Request ID"] == "req-audited-1" and created["Actor"] == "owner@example.com"
    assert created["Created At"] == entry.created_at.isoformat() and created["Via"] == "api"
    assert created["Description"].startswith("owner@example.com session.create auditedsess")
    refused = next(r for r in records if r["Entity ID"] == "nopesess")
    assert refused["Status"] == "denied" and refused["Detail"]
    failed = next(r for r in records if r["Entity ID"] == "brokenfolder")
    assert (failed["Entity Type"], failed["Operation"], failed["Status"]) == ("vfolder", "delete", "error")


def test_the_csv_applies_the_clients_filters_and_orders(world, signed, superadmin):
    api = signed(superadmin)

    def targets(body):
        return column(csv_rows(export(api, {"fields": ["entity_id", "status"], **body})), "Entity ID")

    assert targets({"filter": {"status": ["success"], "entity_type": {"equals": "session"}}}) == [
        AuditEntry.objects.get(action="session.create", outcome="success").target]
    assert targets({"filter": {"status": ["denied"], "entity_type": {"equals": "session"}}}) == ["nopesess", "theirsess"]
    assert targets({"filter": {"status": ["error"]}}) == ["brokenfolder"]
    assert targets({"filter": {"status": ["running", "unknown"]}}) == []
    assert targets({"filter": {"operation": {"equals": "delete"}, "entity_type": {"equals": "vfolder"}}}) == [
        "brokenfolder"]
    assert targets({"filter": {"request_id": {"equals": "req-audited-1"}}})[0].startswith("auditedsess")
    assert targets({"filter": {"acted_as": {"equals": str(world.users["outsider"].pk)}}}) == ["theirsess"]
    newest = targets({"filter": {"entity_type": {"in": ["session", "vfolder"]}},
                      "order": [{"field": "created_at", "direction": "DESC"}]})
    assert newest[0] == "brokenfolder" and newest[-1].startswith("auditedsess")
    by_status = column(csv_rows(export(api, {"fields": ["status"], "order": [{"field": "status", "direction": "ASC"}]})),
                       "Status")
    assert by_status == sorted(by_status)
    header = csv_rows(export(api, {"fields": ["operation", "triggered_by"]}))[0]
    assert header == ["Operation", "Triggered By"]


def test_the_search_answers_the_clients_payload_of_real_entries(world, signed, superadmin):
    payload = search(signed(superadmin), {"filter": {"entity_type": {"equals": "session"}, "status": {"equals": "success"}}}).json()
    assert set(payload) == {"items", "total_count", "has_next_page", "has_previous_page"}
    entry = AuditEntry.objects.get(action="session.create", outcome="success")
    assert payload["total_count"] == 1 and not payload["has_next_page"] and not payload["has_previous_page"]
    item = payload["items"][0]
    assert item == {
        "id": str(uuid.UUID(int=entry.pk)), "field_id": str(uuid.UUID(int=entry.pk)),
        "action_id": str(uuid.UUID(int=entry.pk)), "entity_type": "session", "operation": "create",
        "entity_id": entry.target, "created_at": entry.created_at.isoformat(), "request_id": "req-audited-1",
        "triggered_by": str(world.users["owner"].pk), "acted_as": str(world.users["owner"].pk),
        "description": item["description"], "duration": None, "client_ip": entry.remote_addr or None,
        "status": "success"}
    assert "owner@example.com session.create" in item["description"]


def test_the_search_filters_orders_and_pages(world, signed, superadmin):
    api = signed(superadmin)

    def ids(body):
        answer = search(api, body)
        assert answer.status_code == 200, answer.content
        return [item["entity_id"] for item in answer.json()["items"]]

    everything = AuditEntry.objects.count()
    assert search(api).json()["total_count"] == everything
    assert ids({"filter": {"operation": {"contains": "dele"}}}) == ["brokenfolder"]
    assert ids({"filter": {"status": {"in": ["denied"]}}, "order": [{"field": "created_at", "direction": "ASC"}]}) == [
        "nopesess", "theirsess"]
    assert ids({"filter": {"status": {"not_in": ["success", "denied"]}}}) == ["brokenfolder"]
    assert ids({"filter": {"triggered_by": {"contains": str(world.users["outsider"].pk)[:8]}}}) == ["theirsess"]
    assert ids({"filter": {"acted_as": {"equals": str(world.users["outsider"].pk)}}}) == ["theirsess"]
    assert ids({"filter": {"OR": [{"entity_id": {"equals": "nopesess"}}, {"entity_id": {"equals": "brokenfolder"}}]},
                "order": [{"field": "entity_type", "direction": "ASC"}]}) == ["nopesess", "brokenfolder"]
    assert ids({"filter": {"entity_type": {"equals": "session"}, "NOT": [{"status": {"equals": "success"}}],
                           "AND": [{"entity_id": {"ends_with": "sess"}}]},
                "order": [{"field": "created_at", "direction": "DESC"}]}) == ["theirsess", "nopesess"]
    first = AuditEntry.objects.order_by("created_at").first().created_at
    assert len(ids({"filter": {"created_at": {"after": first.isoformat()}}, "limit": 1000})) == everything - 1
    assert ids({"filter": {"created_at": {"before": first.isoformat()}}}) == []
    page = search(api, {"limit": 1, "offset": 1, "order": [{"field": "created_at", "direction": "ASC"}]}).json()
    assert page["has_previous_page"] and page["has_next_page"] == (everything > 2) and len(page["items"]) == 1
    assert page["items"][0]["id"] == str(uuid.UUID(int=AuditEntry.objects.order_by("created_at", "pk")[1].pk))
    assert ids({"filter": {"status": {"equals": "running"}}}) == []


@pytest.mark.parametrize("body", [
    [], 5, {"nope": 1}, {"limit": 0}, {"limit": 10**9}, {"limit": "5"}, {"offset": -1}, {"limit": True},
    {"first": 3}, {"after": "Y3Vyc29y"}, {"filter": []}, {"filter": {"entity_type": "session"}},
    {"filter": {"entity_type": {"like": "x"}}}, {"filter": {"entity_type": {"equals": "a\x00b"}}},
    {"filter": {"entity_type": {"equals": "x" * 10_000}}}, {"filter": {"status": {"equals": "RUNNINGG"}}},
    {"filter": {"status": {"in": "success"}}}, {"filter": {"acted_as": {"equals": "not-a-uuid"}}},
    {"filter": {"created_at": {"after": "yesterday"}}}, {"filter": {"AND": {"entity_type": {}}}},
    {"filter": {"AND": [{"AND": [{"AND": [{"AND": [{"AND": [{"AND": [{}]}]}]}]}]}]}},
    {"filter": {"OR": [{}] * 100}}, {"order": [{"field": "request_id"}]}, {"order": {"field": "created_at"}},
    {"order": [{"field": "created_at", "direction": "SIDEWAYS"}]}, {"order": [{"field": "created_at"}] * 20},
])
def test_the_search_refuses_a_hostile_body_with_400(body, world, signed, superadmin):
    refused = search(signed(superadmin), body)
    assert refused.status_code == 400, refused.content
    assert slug(refused) == "invalid-api-params" and refused["Content-Type"].startswith("application/problem+json")


def test_the_search_refuses_a_malformed_json_body_with_400(world, signed, superadmin):
    refused = signed(superadmin).post("/v2/audit-logs/search", "{not json", content_type="application/json")
    assert refused.status_code == 400 and refused["Content-Type"].startswith("application/problem+json")


@pytest.mark.parametrize("body", [
    {"filter": {"status": ["RUN NING"]}}, {"filter": {"acted_as": {"equals": "x"}}},
    {"order": [{"field": "request_id"}]}, {"fields": ["nope"]}, {"filter": {"entity_id": {"equals": 3}}},
])
def test_the_csv_refuses_bad_filters_with_400(body, world, signed, superadmin):
    refused = export(signed(superadmin), body)
    assert refused.status_code == 400 and slug(refused) == "invalid-api-params", body


def test_the_csv_reads_the_log_in_a_constant_number_of_queries(world, signed, superadmin, owner):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    api = signed(superadmin)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            rows = csv_rows(export(api))
        return len(captured), len(rows)

    few, before = queries()
    for n in range(25):
        actions.record("session", "rename", outcome=actions.SUCCESS, actor=owner, target=f"more{n}")
    many, after = queries()
    assert many == few and after >= before + 25
