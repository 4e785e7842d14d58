"""The sessions app's CSV report (``backend.ai admin export sessions``).

Superadmins and domain admins only (others get 403); a superadmin sees every session,
a domain admin those of their own domain (``sessions.services.visible_sessions``).

The ``audit-logs`` report is the audit log's (``backendai.audit_client``); each session's
status history stays in its ``status_history`` (GraphQL ``status_history``, the session's
page in the web UI).
"""
from __future__ import annotations

from accounts.services.access import is_admin_like
from backendai.exports.registry import Column, Report, queryset_rows
from backendai.exports.request import Choice, Nested, Range, Text
from sessions.models import SessionType
from sessions.services import visible_sessions

SESSIONS = Report(
    key="sessions",
    name="Sessions",
    description="Compute sessions: owner, image, status, resource group, occupied slots and lifetime.",
    columns=(
        Column("id", "ID", "The session's id.", "uuid"),
        Column("name", "Name", "The session's name.", "string"),
        Column("session_type", "Type", "interactive, batch, inference or system.", "string"),
        Column("domain_name", "Domain", "The owner's domain.", "string", "domain_id"),
        Column("project_name", "Project", "The project the session runs for.", "string", "project__name"),
        Column("user_email", "User Email", "The owner's e-mail address.", "string", "user__email"),
        Column("access_key", "Access Key", "The owner's keypair.", "string", "access_key_id"),
        Column("image", "Image", "The container image.", "string"),
        Column("status", "Status", "The session's status.", "string"),
        Column("status_info", "Status Info", "Why the status was last set.", "string"),
        Column("result", "Result", "UNDEFINED, SUCCESS or FAILURE.", "string"),
        Column("scaling_group_name", "Resource Group", "The resource group (scaling group) it runs in.", "string",
               "scaling_group_id"),
        Column("cluster_size", "Cluster Size", "The number of kernels.", "integer"),
        Column("occupying_slots", "Occupying Slots", "The resources it occupies (slot -> amount).", "json"),
        Column("created_at", "Created At", "When the session was created.", "datetime"),
        Column("terminated_at", "Terminated At", "When the session ended (empty while it lives).", "datetime"),
    ),
    filters={
        "name": Text("name"),
        "session_type": Choice("session_type", choices=tuple(SessionType.values), case="lower"),
        "domain_name": Text("domain__name"),  # a string lookup through the key (no join): not on domain_id
        "access_key": Text("access_key__access_key"),
        "user": Nested({"email": Text("user__email"), "username": Text("user__username")}),
        "status": Choice("status", case="upper"),  # a status of the real manager's that we lack matches nothing
        "scaling_group_name": Text("scaling_group__name"),
        "created_at": Range("created_at"),
        "terminated_at": Range("terminated_at"),
    },
    orders={"name": "name", "session_type": "session_type", "domain_name": "domain_id", "access_key": "access_key_id",
            "status": "status", "scaling_group_name": "scaling_group_id", "cluster_size": "cluster_size",
            "created_at": "created_at", "terminated_at": "terminated_at"},
    rows=lambda user, export: queryset_rows(visible_sessions(user), export),
    allowed=is_admin_like,
)


REPORTS = (SESSIONS,)
