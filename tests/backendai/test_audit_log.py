"""The audit log (issue 17, item 4): one entry per state-changing call, refusals
included, through the REST API, GraphQL, the web UI and the admin; the admin cannot
change it; ``audit_logs`` follows the permission matrix; retention prunes old entries
only; a failing audit write never fails the action."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from backendai.models import AuditEntry
from helpers import PASSWORD, client_body, seed_http_image_and_agent
from permission_matrix import ROLES, gql_post

pytestmark = pytest.mark.django_db


@pytest.fixture
def cluster(defaults):
    from agents import services as agent_services
    from agents.models import ImageAlias

    group = agent_services.ensure_default_scaling_group()
    image, _ = seed_http_image_and_agent(group)
    ImageAlias.objects.create(alias="http", image=image)
    return group, image


@pytest.fixture
def host(db, storage_proxy):
    from vfolders import services

    return services.ensure_default_storage_host()


def only_entry(**filters) -> AuditEntry:
    found = list(AuditEntry.objects.filter(**filters))
    assert len(found) == 1, [str(e) for e in AuditEntry.objects.all()]
    return found[0]


# --- one entry per call, across the ways in --------------------------------------------------------

def _session_create(signed, world):
    return signed(world["owner"]).post("/session", client_body(name="audited", enqueueOnly=True)), \
        dict(actor="owner@example.com", action="session.create", target__startswith="audited", outcome="success",
             via="api")


def _session_create_refused(signed, world):
    return signed(world["owner"]).post("/session", client_body(name="nope", image="no-such/image:1", enqueueOnly=True)), \
        dict(actor="owner@example.com", action="session.create", target="nope", outcome="refused", via="api")


def _session_destroy(signed, world):
    from sessions.models import Session
    signed(world["owner"]).post("/session", client_body(name="todestroy", enqueueOnly=True))
    AuditEntry.objects.all().delete()
    session = Session.objects.get(name="todestroy")
    return signed(world["owner"]).delete("/session/todestroy"), \
        dict(actor="owner@example.com", action="session.destroy", target__contains=str(session.pk), outcome="success")


def _session_destroy_by_someone_else(signed, world):
    signed(world["owner"]).post("/session", client_body(name="notyours", enqueueOnly=True))
    AuditEntry.objects.all().delete()
    # the view's lookup refuses before any service runs: the refusal middleware records it
    return signed(world["member"]).delete("/session/notyours"), \
        dict(actor="member@example.com", entity="request", target="/session/notyours", outcome="refused")


def _folder_create(signed, world):
    return signed(world["owner"]).post("/folders", {"name": "auditdata", "host": "local:volume1"}), \
        dict(actor="owner@example.com", action="vfolder.create", target__startswith="auditdata", outcome="success")


def _gql_create_user(signed, world):
    document = ("mutation($email: String!, $input: UserInput!) { create_user(email: $email, props: $input) "
                "{ ok msg } }")
    variables = {"email": "new@example.com", "input": {"password": "S3cret-pass!", "username": "newone",
                                                      "domain_name": "default"}}
    return gql_post(signed(world["superadmin"]), document, variables), \
        dict(actor="root@example.com", action="user.create", target="new@example.com", outcome="success",
             via="graphql", actor_domain="default")


def _gql_modify_user_refused(signed, world):
    document = ("mutation($email: String!, $input: ModifyUserInput!) { modify_user(email: $email, props: $input) "
                "{ ok msg } }")
    # a user may not see (so not change) another user: the service refuses with 404
    return gql_post(signed(world["member"]), document, {"email": "owner@example.com", "input": {"full_name": "x"}}), \
        dict(actor="member@example.com", action="user.modify", target="owner@example.com", outcome="refused",
             via="graphql", detail__contains="object-not-found")


CASES = {
    "session-create": (_session_create, 201),
    "session-create-refused": (_session_create_refused, 404),
    "session-destroy": (_session_destroy, 200),
    "session-destroy-of-another-user": (_session_destroy_by_someone_else, 404),
    "folder-create": (_folder_create, 201),
    "graphql-create-user": (_gql_create_user, 200),
    "graphql-modify-user-refused": (_gql_modify_user_refused, 404),
}


@pytest.mark.parametrize("name", list(CASES))
def test_it_writes_one_entry_with_actor_action_target_and_outcome_per_call(name, signed, owner, member, superadmin,
                                                                           cluster, host):
    call, status = CASES[name]
    AuditEntry.objects.all().delete()  # the fixtures' own users and hosts
    response, expected = call(signed, {"owner": owner, "member": member, "superadmin": superadmin})
    assert response.status_code == status, response.content
    entry = only_entry()
    assert AuditEntry.objects.filter(pk=entry.pk, **expected).exists(), (str(entry), entry.detail, expected)
    assert entry.request_id and entry.request_id == response["X-Request-ID"]


def test_a_web_ui_form_records_its_action_and_a_refused_one(client, owner, member, host):
    from vfolders.models import VFolder

    client.force_login(owner)
    AuditEntry.objects.all().delete()
    response = client.post("/ui/folders/", {"name": "photos", "host": "local:volume1", "usage_mode": "general",
                                            "permission": "rw"})
    assert response.status_code == 302
    folder = VFolder.objects.get(name="photos")
    entry = only_entry()
    assert (entry.action, entry.actor, entry.via, entry.outcome) == ("vfolder.create", owner.email, "webui", "success")
    assert str(folder.pk) in entry.target
    client.force_login(member)
    AuditEntry.objects.all().delete()
    refused = client.post(f"/ui/folders/{folder.pk}/rename/", {"new_name": "stolen"})
    assert refused.status_code in (302, 403, 404)
    entry = only_entry()
    assert (entry.actor, entry.outcome, entry.via) == (member.email, "refused", "webui")
    assert VFolder.objects.get(pk=folder.pk).name == "photos"


def test_a_periodic_sweep_is_recorded_as_the_system_only_when_it_changed_something(cluster):
    from agents import tasks as agent_tasks
    from agents.models import Agent

    AuditEntry.objects.all().delete()
    assert agent_tasks.mark_lost_agents() == 0
    assert not AuditEntry.objects.exists()
    Agent.objects.filter(pk="node-1").update(last_heartbeat=timezone.now() - timedelta(hours=1))
    assert agent_tasks.mark_lost_agents() == 1
    entry = only_entry()
    assert (entry.action, entry.actor, entry.outcome) == ("agent.mark-lost", "system", "success")


def test_it_records_the_request_id_the_client_sent_and_where_the_call_came_from(signed, owner, cluster):
    AuditEntry.objects.all().delete()
    response = signed(owner).post("/session", client_body(name="traced", enqueueOnly=True),
                                  extra={"HTTP_X_REQUEST_ID": "trace-me-1", "HTTP_USER_AGENT": "audit-test/1",
                                         "REMOTE_ADDR": "10.9.8.7"})
    assert response.status_code == 201, response.content
    entry = only_entry(action="session.create")
    assert (entry.request_id, entry.user_agent, entry.remote_addr) == ("trace-me-1", "audit-test/1", "10.9.8.7")
    assert entry.access_key == owner.main_keypair.access_key


def test_a_read_writes_no_entry(signed, owner, cluster):
    AuditEntry.objects.all().delete()
    assert signed(owner).get("/folders/_/hosts").status_code == 200
    assert gql_post(signed(owner), "{ compute_session_list(limit: 5, offset: 0) { total_count } }").status_code == 200
    assert not AuditEntry.objects.exists()


def test_a_refused_graphql_query_is_not_recorded_as_a_state_change(signed, owner, defaults):
    AuditEntry.objects.all().delete()
    response = gql_post(signed(owner), "{ audit_logs { total_count } }")
    assert response.status_code == 403
    assert not AuditEntry.objects.exists()


def test_web_ui_logins_and_their_failures_are_recorded(client, owner):
    AuditEntry.objects.all().delete()
    assert client.post("/ui/login/", {"username": owner.email, "password": "wrong-password"}).status_code == 200
    refused = only_entry(action="user.login")
    assert (refused.actor, refused.outcome, refused.via) == ("owner@example.com", "refused", "webui")
    assert client.post("/ui/login/", {"username": owner.email, "password": PASSWORD}).status_code == 302
    done = only_entry(action="user.login", outcome="success")
    assert done.actor == owner.email and done.actor_domain == "default" and done.target.startswith(owner.email)


def test_an_admin_change_made_through_a_service_is_recorded_once(client, superadmin, django_capture_on_commit_callbacks):
    client.force_login(superadmin)
    AuditEntry.objects.all().delete()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/admin/backendai/announcement/add/", {"enabled": "on", "message": "maintenance"})
    assert response.status_code == 302, response.content[:2000]
    entry = only_entry()
    assert (entry.action, entry.actor, entry.via, entry.outcome) == ("announcement.set", superadmin.email, "admin",
                                                                     "success")


def test_an_admin_change_without_a_service_is_recorded_from_its_log_entry(client, superadmin,
                                                                         django_capture_on_commit_callbacks):
    client.force_login(superadmin)
    AuditEntry.objects.all().delete()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/admin/backendai/resourceslottype/add/",
                               {"name": "tpu.device", "slot_type": "count", "display_name": "TPU", "display_unit": ""})
    assert response.status_code == 302, response.content[:2000]
    entry = only_entry()
    assert (entry.action, entry.actor, entry.via, entry.outcome) == ("backendai.resourceslottype.add",
                                                                     superadmin.email, "admin", "success")
    assert entry.target.startswith("tpu.device")


# --- the admin cannot change the log ---------------------------------------------------------------

def test_the_admin_shows_the_log_but_a_superadmin_cannot_add_change_or_delete_entries(client, superadmin):
    entry = AuditEntry.objects.create(actor="someone@example.com", via="api", entity="session",
                                      action="session.create", target="s1", outcome="success")
    client.force_login(superadmin)
    base = "/admin/backendai/auditentry/"
    listing = client.get(base + "?outcome__exact=success&q=s1")
    assert listing.status_code == 200 and b"someone@example.com" in listing.content
    assert client.get(f"{base}{entry.pk}/change/").status_code == 200  # read-only view
    assert client.get(base + "add/").status_code == 403
    assert client.post(base + "add/", {"actor": "forged", "via": "api", "entity": "x", "action": "x.y",
                                       "outcome": "success"}).status_code == 403
    assert client.post(f"{base}{entry.pk}/change/", {"actor": "forged"}).status_code == 403
    assert client.post(f"{base}{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert client.post(base, {"action": "delete_selected", "_selected_action": [entry.pk]}).status_code in (200, 302)
    entry.refresh_from_db()
    assert entry.actor == "someone@example.com"
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


# --- GraphQL audit_logs: the permission matrix -----------------------------------------------------

AUDIT_QUERY = ("query($action: String) { audit_logs(limit: 50, offset: 0, action: $action) "
               "{ total_count items { actor action target outcome actor_domain } } }")


@pytest.fixture
def world(owner, member, outsider, foreign_admin, superadmin):
    users = {"owner": owner, "member": member, "outsider": outsider, "foreign_admin": foreign_admin,
             "superadmin": superadmin}
    AuditEntry.objects.all().delete()
    AuditEntry.objects.create(actor=owner.email, actor_domain="default", via="api", entity="vfolder",
                              action="vfolder.create", target="owners-marker-folder", outcome="success")
    AuditEntry.objects.create(actor=outsider.email, actor_domain="other", via="api", entity="vfolder",
                              action="vfolder.delete", target="outsiders-marker-folder", outcome="refused")
    return users


EXPECTED = {"owner": 403, "member": 403, "outsider": 403, "foreign_admin": 200, "superadmin": 200}


@pytest.mark.parametrize("role", ROLES)
def test_audit_logs_answers_by_the_permission_matrix(role, world, signed):
    response = gql_post(signed(world[role]), AUDIT_QUERY)
    assert response.status_code == EXPECTED[role], response.content
    text = response.content.decode()
    assert ("owners-marker-folder" in text) == (role == "superadmin")
    assert ("outsiders-marker-folder" in text) == (role in ("foreign_admin", "superadmin"))
    if role == "foreign_admin":
        assert response.json()["data"]["audit_logs"]["total_count"] == 1


def test_a_domain_admin_sees_the_entries_of_their_domains_actors(world, signed, domain_admin):
    body = gql_post(signed(domain_admin), AUDIT_QUERY).json()
    targets = [item["target"] for item in body["data"]["audit_logs"]["items"]]
    assert "owners-marker-folder" in targets and "outsiders-marker-folder" not in targets


def test_audit_logs_filters_and_pages(world, signed):
    api = signed(world["superadmin"])
    body = gql_post(api, AUDIT_QUERY, {"action": "vfolder.delete"}).json()
    assert [i["target"] for i in body["data"]["audit_logs"]["items"]] == ["outsiders-marker-folder"]
    paged = gql_post(api, "{ audit_logs(limit: 1, offset: 1) { total_count items { target } } }").json()
    logs = paged["data"]["audit_logs"]
    assert logs["total_count"] >= 2 and len(logs["items"]) == 1
    bad = gql_post(api, '{ audit_logs(since: "yesterday") { total_count } }')
    assert bad.status_code == 400 and "since" in bad.content.decode()
    for hostile, named in (("\x00", "NUL"), ("x" * 300, "actor: at most 255 characters")):
        refused = gql_post(api, "query($a: String) { audit_logs(actor: $a) { total_count } }", {"a": hostile})
        assert refused.status_code == 400 and named in refused.json()["msg"], refused.content


# --- retention --------------------------------------------------------------------------------------

def test_the_retention_prune_deletes_old_entries_only(settings, defaults):
    from backendai import tasks

    settings.AUDIT_RETENTION_DAYS = 30
    now = timezone.now()
    old = AuditEntry.objects.create(created_at=now - timedelta(days=31), actor="a", via="api", entity="x",
                                    action="x.old", outcome="success")
    recent = AuditEntry.objects.create(created_at=now - timedelta(days=29), actor="a", via="api", entity="x",
                                       action="x.recent", outcome="success")
    assert tasks.prune_audit_log() == 1
    assert not AuditEntry.objects.filter(pk=old.pk).exists() and AuditEntry.objects.filter(pk=recent.pk).exists()
    settings.AUDIT_RETENTION_DAYS = 0
    recent.created_at = now - timedelta(days=3650)
    recent.save()
    assert tasks.prune_audit_log() == 0 and AuditEntry.objects.filter(pk=recent.pk).exists()


def test_beat_prunes_the_audit_log_hourly(settings):
    assert settings.CELERY_BEAT_SCHEDULE["backendai.prune_audit_log"] == {
        "task": "backendai.tasks.prune_audit_log", "schedule": 3600.0}


def test_a_bad_retention_value_names_the_variable():
    from backendai import config

    with pytest.raises(config.ConfigError, match="AUDIT_RETENTION_DAYS"):
        config.load({"AUDIT_RETENTION_DAYS": "-1"})
    with pytest.raises(config.ConfigError, match="AUDIT_RETENTION_DAYS"):
        config.load({"AUDIT_RETENTION_DAYS": "ninety"})
    assert config.load({}).audit_retention_days == 90


# --- transactions and failures -----------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_a_failing_audit_write_does_not_fail_the_action(signed, cluster):
    from accounts import services as account_services
    from accounts.models import UserRole
    from backendai import actions
    from sessions.models import Session

    owner = account_services.create_user(email="owner@example.com", password=PASSWORD, role=UserRole.USER)
    lost_before = actions.AUDIT_WRITE_FAILURES._value.get()
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE backendai_auditentry RENAME TO backendai_auditentry_away")
    try:
        response = signed(owner).post("/session", client_body(name="unaudited", enqueueOnly=True))
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE backendai_auditentry_away RENAME TO backendai_auditentry")
    assert response.status_code == 201, response.content
    assert Session.objects.filter(name="unaudited").exists()
    assert actions.AUDIT_WRITE_FAILURES._value.get() > lost_before


@pytest.mark.django_db(transaction=True)
def test_a_refusal_inside_a_rolled_back_transaction_keeps_its_entry(defaults):
    from django.db import transaction

    from accounts import services as account_services
    from accounts.models import UserRole
    from backendai import actions
    from backendai.api import errors

    user = account_services.create_user(email="plain@example.com", password=PASSWORD, role=UserRole.USER)
    AuditEntry.objects.all().delete()
    with actions.request_scope():  # as in a request (PostgreSQL: another connection; SQLite: after the answer)
        with pytest.raises(errors.InsufficientPrivilege):
            with transaction.atomic():
                account_services.admin_create_domain(user, "forbidden", {})
    entry = only_entry()
    assert (entry.action, entry.outcome, entry.actor, entry.target) == ("domain.create", "refused",
                                                                        "plain@example.com", "forbidden")


@pytest.mark.django_db(transaction=True)
def test_a_success_rolled_back_by_its_caller_is_not_recorded_as_done(defaults):
    from django.db import transaction

    from accounts import services as account_services
    from accounts.models import UserRole

    root = account_services.create_user(email="root@example.com", password=PASSWORD, role=UserRole.SUPERADMIN)
    AuditEntry.objects.all().delete()

    class Undo(Exception):
        pass

    with pytest.raises(Undo):
        with transaction.atomic():
            account_services.admin_create_domain(root, "undone", {})
            raise Undo
    assert not AuditEntry.objects.exists()
    account_services.admin_create_domain(root, "kept", {})
    assert only_entry().target == "kept"


def test_a_nested_service_call_writes_one_entry_for_the_outer_action(defaults, superadmin):
    from accounts import services as account_services

    AuditEntry.objects.all().delete()
    # admin_create_user calls create_user and create_keypair, each wrapped too
    account_services.admin_create_user(superadmin, email="nested@example.com", password="S3cret-pass!",
                                       domain_name="default")
    entry = only_entry()
    assert (entry.action, entry.target, entry.actor, entry.via) == ("user.create", "nested@example.com",
                                                                    superadmin.email, "task")
