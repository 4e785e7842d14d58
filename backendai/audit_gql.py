"""The audit log in ``/admin/gql``: ``audit_logs(limit, offset, action, entity, outcome,
actor, target, via, request_id, since, until)`` answering ``{items {...}, total_count}``,
newest first.  Superadmins read every entry, domain admins those whose actor or target
belongs to their domain; users and monitors are refused (``insufficient-privilege``,
403) — ``backendai.auditlog.visible_entries`` decides.  ``since``/``until`` are ISO
timestamps; ``actor``/``target`` match substrings, the rest exactly."""
from __future__ import annotations

from datetime import datetime
from typing import Optional

import strawberry
from django.utils import timezone
from strawberry.types import Info

from backendai import auditlog
from backendai.api import errors, gqlkit


@strawberry.type
class AuditLogEntry:
    id: strawberry.ID
    created_at: str
    actor: str
    actor_id: Optional[str]
    access_key: Optional[str]
    actor_domain: Optional[str]
    via: str
    action: str
    entity: str
    target_type: Optional[str]
    target: Optional[str]
    target_domain: Optional[str]
    outcome: str
    detail: Optional[str]
    request_id: Optional[str]
    remote_addr: Optional[str]
    user_agent: Optional[str]


@strawberry.type
class AuditLogList:
    items: list[AuditLogEntry]
    total_count: int


def _entry(row) -> AuditLogEntry:
    return AuditLogEntry(
        id=strawberry.ID(str(row.pk)), created_at=row.created_at.isoformat(), actor=row.actor,
        actor_id=row.actor_id or None, access_key=row.access_key or None, actor_domain=row.actor_domain or None,
        via=row.via, action=row.action, entity=row.entity, target_type=row.target_type or None,
        target=row.target or None, target_domain=row.target_domain or None, outcome=row.outcome,
        detail=row.detail or None, request_id=row.request_id or None, remote_addr=row.remote_addr or None,
        user_agent=row.user_agent or None)


def _when(name: str, value: Optional[str]):
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise errors.InvalidAPIParameters(f"{name}: expected an ISO 8601 timestamp, got {value[:40]!r}") from None
    return parsed if parsed.tzinfo else timezone.make_aware(parsed, timezone.utc)


@strawberry.type
class Query:
    @strawberry.field
    def audit_logs(self, info: Info, limit: int = 20, offset: int = 0, action: Optional[str] = None,
                   entity: Optional[str] = None, outcome: Optional[str] = None, actor: Optional[str] = None,
                   target: Optional[str] = None, via: Optional[str] = None, request_id: Optional[str] = None,
                   since: Optional[str] = None, until: Optional[str] = None) -> AuditLogList:
        user, _ = gqlkit.actor(info)
        limit, offset = gqlkit.page(limit, offset)
        query = auditlog.filtered(auditlog.visible_entries(user), action=action, entity=entity, outcome=outcome,
                                  actor=actor, target=target, via=via, request_id=request_id,
                                  since=_when("since", since), until=_when("until", until))
        rows = list(query.order_by("-created_at", "-id")[offset:offset + limit])
        return AuditLogList(items=[_entry(row) for row in rows], total_count=query.count())
