"""The accounts app's CSV reports (``backend.ai admin export users|keypairs|projects``).

Who may run them and what they see follow ``accounts.services.access``: superadmins
and domain admins only (others get 403), a superadmin every row, a domain admin the
rows of their own domain.  A keypair's secret key and SSH private key are never a
column.  Registered from ``AccountsConfig.ready()``; ``backendai.exports`` serves them.
"""
from __future__ import annotations

from accounts.models import UserRole, UserStatus
from accounts.services.access import is_admin_like, visible_keypairs, visible_projects, visible_users
from backendai.exports.registry import Column, Report, queryset_rows
from backendai.exports.request import Choice, Flag, Range, Text

_CREATED = Column("created_at", "Created At", "When the row was created.", "datetime")
_MODIFIED = Column("modified_at", "Modified At", "When the row was last changed.", "datetime")

USERS = Report(
    key="users",
    name="Users",
    description="User accounts: identity, domain, role and status.",
    columns=(
        Column("uuid", "UUID", "The user's id.", "uuid", "id"),
        Column("username", "Username", "The login name.", "string"),
        Column("email", "Email", "The e-mail address (also a login name).", "string"),
        Column("full_name", "Full Name", "The display name.", "string"),
        Column("domain_name", "Domain", "The domain the user belongs to.", "string", "domain_id"),
        Column("role", "Role", "superadmin, admin (of the domain), user or monitor.", "string"),
        Column("status", "Status", "active, inactive, deleted or before-verification.", "string"),
        Column("status_info", "Status Info", "Why the status was last set, if recorded.", "string"),
        Column("need_password_change", "Need Password Change", "Whether the next login must change the password.",
               "boolean"),
        Column("resource_policy", "Resource Policy", "The user resource policy's name.", "string",
               "resource_policy_id"),
        Column("main_access_key", "Main Access Key", "The access key of the user's main keypair.", "string",
               "main_keypair_id"),
        _CREATED,
        _MODIFIED,
    ),
    filters={
        "username": Text("username"), "email": Text("email"), "domain_name": Text("domain__name"),
        "role": Choice("role", choices=tuple(UserRole.values), case="lower"),
        "status": Choice("status", choices=tuple(UserStatus.values), case="lower"),
        "created_at": Range("created_at"),
    },
    orders={"username": "username", "email": "email", "full_name": "full_name", "domain_name": "domain_id",
            "role": "role", "status": "status", "created_at": "created_at", "modified_at": "modified_at"},
    rows=lambda user, export: queryset_rows(visible_users(user), export),
    allowed=is_admin_like,
)

KEYPAIRS = Report(
    key="keypairs",
    name="Keypairs",
    description="API keypairs (access keys only, never a secret): owner, flags, policy and use.",
    columns=(
        Column("access_key", "Access Key", "The keypair's access key.", "string"),
        Column("user_id", "User ID", "The owner's e-mail address.", "string", "user__email"),
        Column("user_uuid", "User UUID", "The owner's id.", "uuid", "user_id"),
        Column("is_active", "Active", "Whether the keypair may sign requests.", "boolean"),
        Column("is_admin", "Admin", "Whether the keypair is marked admin.", "boolean"),
        Column("resource_policy_name", "Resource Policy", "The keypair resource policy's name.", "string",
               "resource_policy_id"),
        Column("rate_limit", "Rate Limit", "Requests allowed per 15-minute window.", "integer"),
        Column("num_queries", "Queries", "Requests signed with the keypair so far.", "integer"),
        _CREATED,
        _MODIFIED,
        Column("last_used", "Last Used", "When the keypair last signed a request.", "datetime"),
    ),
    filters={
        "access_key": Text("access_key"), "user_id": Text("user__email"), "is_active": Flag("is_active"),
        "is_admin": Flag("is_admin"), "created_at": Range("created_at"),
    },
    orders={"access_key": "access_key", "user_id": "user__email", "is_active": "is_active", "is_admin": "is_admin",
            "created_at": "created_at", "modified_at": "modified_at", "last_used": "last_used"},
    rows=lambda user, export: queryset_rows(visible_keypairs(user), export),
    allowed=is_admin_like,
)

PROJECTS = Report(
    key="projects",
    name="Projects",
    description="Projects (groups): domain, state, policy and resource limits.",
    columns=(
        Column("id", "ID", "The project's id.", "uuid"),
        Column("name", "Name", "The project's name (unique in its domain).", "string"),
        Column("description", "Description", "The project's description.", "string"),
        Column("domain_name", "Domain", "The domain the project belongs to.", "string", "domain_id"),
        Column("is_active", "Active", "Whether the project is active.", "boolean"),
        Column("type", "Type", "general or model-store.", "string"),
        Column("resource_policy", "Resource Policy", "The project resource policy's name.", "string",
               "resource_policy_id"),
        Column("total_resource_slots", "Total Resource Slots", "The project's resource limits (slot -> amount).",
               "json"),
        Column("container_registry", "Container Registry", "The project's container registry settings.", "json"),
        _CREATED,
        _MODIFIED,
    ),
    filters={"name": Text("name"), "domain_name": Text("domain__name"), "is_active": Flag("is_active"),
             "created_at": Range("created_at")},
    orders={"name": "name", "domain_name": "domain_id", "is_active": "is_active", "created_at": "created_at",
            "modified_at": "modified_at"},
    rows=lambda user, export: queryset_rows(visible_projects(user), export),
    allowed=is_admin_like,
)

REPORTS = (USERS, KEYPAIRS, PROJECTS)
