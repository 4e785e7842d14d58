"""Business rules for accounts: the only place that changes users, keypairs, projects,
domains and policies.  REST views, web views, admin actions, GraphQL resolvers and
management commands call these, as ``accounts.services.<name>``; each concern lives in
its own module:

* ``keys``       access and secret keys, SSH keypairs, ``MASKED_SECRET``;
* ``defaults``   the default domain, project and policies;
* ``access``     who sees what and who manages what (``visible_*``, ``managed_keypair``,
  ``administered_*``, ``require_*``);
* ``inputs``     the values administration requests carry, checked before any work;
* ``references`` what other apps still hold of an object about to be purged;
* ``users``      users: creation, login, passwords, roles, administration;
* ``dashboard``  what the web UI's dashboard shows (``dashboard_context``) and its gauges;
* ``keypairs``   keypairs: creation, secrets, activity, policies, SSH keys, administration;
* ``projects``   projects (groups) and their members;
* ``domains``    domains, renames included;
* ``policies``   keypair, user and project resource policies.
* ``tasks``      whose background tasks a user sees (the web UI's task pages; imported as
  ``accounts.services.tasks``).
* ``preferences`` a user's web UI preferences (``preferences_for``: default preset and
  resource group, language, time zone; imported as ``accounts.services.preferences``).

Secrets follow docs/security.md: a secret key is shown in clear only to its owner, once
(``admin_create_keypair`` returns it only when the caller owns the new keypair)."""
from __future__ import annotations

from accounts.services.access import (
    administered_keypair,
    administered_project,
    administered_user,
    is_admin_like,
    managed_keypair,
    require_admin,
    require_domain,
    require_superadmin,
    visible_domains,
    visible_keypairs,
    visible_projects,
    visible_users,
)
from accounts.services.dashboard import dashboard_context
from accounts.services.defaults import DEFAULT_NAME, Defaults, ensure_defaults
from accounts.services.domains import (
    admin_create_domain,
    admin_delete_domain,
    admin_modify_domain,
    admin_purge_domain,
    domain_named,
)
from accounts.services.inputs import client_ips
from accounts.services.keypairs import (
    admin_create_keypair,
    admin_delete_keypair,
    admin_modify_keypair,
    assign_keypair_policy,
    create_keypair,
    deactivate_own_keypair,
    keypair_for_authentication,
    keypair_policy_named,
    listed_keypairs,
    record_keypair_use,
    regenerate_secret,
    regenerate_ssh_keypair,
    set_keypair_active,
    upload_ssh_keypair,
)
from accounts.services.keys import MASKED_SECRET, generate_access_key, generate_secret_key, generate_ssh_keypair
from accounts.services.policies import (
    KEYPAIR as KEYPAIR_POLICY,
    PROJECT as PROJECT_POLICY,
    USER as USER_POLICY,
    PolicyKind,
    admin_create_policy,
    admin_delete_policy,
    admin_modify_policy,
    visible_policies,
)
from accounts.services.projects import (
    admin_create_project,
    admin_delete_project,
    admin_modify_project,
    admin_purge_project,
    listed_projects,
    project_for_user,
)
from accounts.services.references import blocking_references
from accounts.services.users import (
    admin_create_user,
    admin_delete_user,
    admin_modify_user,
    admin_purge_user,
    assign_user_policy,
    authorize,
    change_password,
    check_login,
    create_user,
    projects_of_domain,
    roles_of,
    set_user_status,
)

__all__ = [
    "DEFAULT_NAME", "KEYPAIR_POLICY", "MASKED_SECRET", "PROJECT_POLICY", "USER_POLICY", "Defaults", "PolicyKind",
    "admin_create_domain", "admin_create_keypair", "admin_create_policy", "admin_create_project",
    "admin_create_user", "admin_delete_domain", "admin_delete_keypair", "admin_delete_policy",
    "admin_delete_project", "admin_delete_user", "admin_modify_domain", "admin_modify_keypair",
    "admin_modify_policy", "admin_modify_project", "admin_modify_user", "admin_purge_domain",
    "admin_purge_project", "admin_purge_user", "administered_keypair", "administered_project",
    "administered_user", "assign_keypair_policy", "assign_user_policy", "authorize", "blocking_references",
    "change_password", "check_login", "client_ips", "create_keypair", "create_user", "dashboard_context",
    "deactivate_own_keypair", "domain_named", "ensure_defaults", "generate_access_key", "generate_secret_key",
    "generate_ssh_keypair", "is_admin_like", "keypair_for_authentication", "keypair_policy_named",
    "listed_keypairs", "listed_projects", "managed_keypair", "project_for_user", "projects_of_domain",
    "record_keypair_use", "regenerate_secret", "regenerate_ssh_keypair", "require_admin", "require_domain",
    "require_superadmin", "roles_of", "set_keypair_active", "set_user_status", "upload_ssh_keypair",
    "visible_domains", "visible_keypairs", "visible_policies", "visible_projects", "visible_users",
]
