"""The audit log through the official 26.9.6 CLI against a live server: ``admin export
audit-logs`` writes the entries real calls wrote (a session created and a refused one) as
CSV, and ``v2 audit-log search`` (``POST /v2/audit-logs/search``) prints them as the
client's ``SearchAuditLogsPayload``; a user is refused by both."""
from __future__ import annotations

import csv
import json

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def audited(make_user, signed):
    """A superadmin, and a user who created one session and was refused another."""
    from accounts.models import UserRole
    from agents import services as agent_services
    from agents.models import ImageAlias
    from backendai.models import AuditEntry
    from helpers import client_body, seed_http_image_and_agent

    root = make_user("audit-root@example.com", role=UserRole.SUPERADMIN)
    user = make_user("audit-user@example.com")
    image, _ = seed_http_image_and_agent(agent_services.ensure_default_scaling_group())
    ImageAlias.objects.create(alias="http", image=image)
    AuditEntry.objects.all().delete()
    created = signed(user).post("/session", client_body(name="e2eaudited", enqueueOnly=True),
                                extra={"HTTP_X_REQUEST_ID": "e2e-audit-req"})
    assert created.status_code in (200, 201), created.content
    refused = signed(user).post("/session", client_body(name="e2erefused", image="no-such/image:1", enqueueOnly=True))
    assert 400 <= refused.status_code < 500, refused.content
    return root, user


def output_of(done) -> str:
    return f"rc={done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"


def test_the_26_09_cli_exports_the_audit_log_as_csv(audited, versioned_client, tmp_path):
    from backendai.models import AuditEntry

    root, user = audited
    client = versioned_client("26.9.6")
    done = client.cli(root.main_keypair, "admin", "export", "audit-logs", "--output", "audit.csv",
                      "--filter-entity-type", "session")  # oldest first (its --order cannot be sent: see below)
    assert done.returncode == 0 and "Exported to audit.csv" in done.stdout, output_of(done)
    with open(tmp_path / "26.9.6" / "client-cwd" / "audit.csv", newline="", encoding="utf-8") as handle:
        records = list(csv.DictReader(handle))
    expected = list(AuditEntry.objects.filter(entity="session").order_by("created_at", "pk"))
    assert [(r["ID"], r["Entity ID"], r["Operation"], r["Status"]) for r in records] == [
        (str(e.pk), e.target, "create", {"success": "success", "refused": "denied"}[e.outcome]) for e in expected]
    assert records[0]["Entity ID"].startswith("e2eaudited") and records[0]["Triggered By"] == str(user.pk)
    assert records[0]["Request ID"] == "e2e-audit-req" and records[1]["Entity ID"] == "e2erefused"

    refused = client.cli(user.main_keypair, "admin", "export", "audit-logs", "--output", "mine.csv")
    assert refused.returncode != 0, output_of(refused)
    # the 26.9.6 CLI lowercases --order's direction, then builds OrderDirection("asc"), whose values are
    # ASC/DESC: every --order fails in the client before a request is sent (the API takes either case)
    broken = client.cli(root.main_keypair, "admin", "export", "audit-logs", "--order", "created_at:asc")
    assert broken.returncode != 0 and "is not a valid OrderDirection" in broken.stderr, output_of(broken)


def test_the_26_09_cli_searches_the_audit_log(audited, versioned_client):
    from backendai.models import AuditEntry

    root, user = audited
    client = versioned_client("26.9.6")
    done = client.cli(root.main_keypair, "v2", "audit-log", "search", "--entity-type", "session",
                      "--order-by", "created_at:asc", "--limit", "10")
    assert done.returncode == 0, output_of(done)
    payload = json.loads(done.stdout[done.stdout.index("{"):])
    expected = list(AuditEntry.objects.filter(entity="session").order_by("created_at", "pk"))
    assert payload["total_count"] == len(expected) == 2, output_of(done)
    assert [item["entity_id"] for item in payload["items"]] == [e.target for e in expected]
    assert [item["status"] for item in payload["items"]] == ["success", "denied"]
    assert payload["items"][0]["triggered_by"] == str(user.pk) and payload["items"][0]["request_id"] == "e2e-audit-req"

    only = client.cli(root.main_keypair, "v2", "audit-log", "search", "--status", "success", "--operation", "create")
    assert only.returncode == 0, output_of(only)
    assert [i["entity_id"] for i in json.loads(only.stdout[only.stdout.index("{"):])["items"]] == [expected[0].target]

    refused = client.cli(user.main_keypair, "v2", "audit-log", "search")
    assert refused.returncode != 0 and "insufficient-privilege" in refused.stdout + refused.stderr, output_of(refused)
