"""Business rules for virtual folders: the only place that changes folders,
permissions, invitations and the files inside folders.  REST views, web views,
admin actions, GraphQL resolvers, Celery tasks and session creation call these,
as ``vfolders.services.<name>``; each concern lives in its own module:

* ``config``    the folder settings, read with defaults;
* ``inputs``    folder names, free text, ids and choices as requests give them;
* ``access``    who sees which folder with what permission (``Access``, ``get_folder``,
  ``list_folders``, ``folder_json``);
* ``projects``  the project a request names, the projects one may create folders for;
* ``proxy``     the storage proxies: the manager API client (errors mapped back), their health;
* ``hosts``     storage hosts and host permissions;
* ``quota``     quota scopes: limits, bytes on disk, measured usage;
* ``status``    the one door for a folder's status (``move_status``, checked against
  ``vfolders.models.FOLDER_TRANSITIONS``);
* ``lifecycle`` create, rename, options, trash, restore, purge, the reconciler;
* ``files``     listing and changing the files inside a folder;
* ``transfers`` upload and download tokens from the storage proxy (clients send and fetch the
  bytes at the proxy's client API);
* ``sharing``   invitations, share, unshare, leave, the permissions users have on shared folders;
* ``ownership`` giving a user folder to another user;
* ``mounts``    ``container_path`` and ``resolve_mounts`` for new sessions;
* ``cloning``   ``vfolder clone``: the checks and the target (``start_clone``), the copy a
  background task runs (``run_clone``), the reconciler of clones whose worker died;
* ``queryfilter`` Backend.AI's filter and order language of the listings;
* ``listing``   the paginated GraphQL listings (``vfolder_list``, own, invited, project);
* ``volumes``   storage volumes and quota scopes for the admin GraphQL fields;
* ``overview``  what the folder pages show beside the folders: sizes, quota scope usage and
  limits, the folder count, the recipients an invitation or a share names.

Who may do what (reference §9, with the choices this project made):

* the **owner** of a user folder has ``wd`` and manages it (rename, options,
  trash, restore, purge, invite);
* an **invitee** who accepted gets the invitation's permission;
* a **project member** gets the project folder's permission, or the one a
  share gave them (it overrides);
* a **domain admin** has ``wd`` on and manages every folder of the domain, a
  **superadmin** on every folder (admins find other people's folders by id;
  names resolve among the folders one owns, is invited to or shares a project of);
* ``ro`` reads and downloads, ``rw`` also writes (upload, mkdir, rename, move),
  ``wd`` also deletes files.
* Host permissions (``allowed_vfolder_hosts`` of the domain, the user's projects
  and the keypair policy, united) gate creating, modifying, deleting, mounting,
  uploading, downloading and inviting per storage host; superadmins pass.
"""
from __future__ import annotations

from vfolders.models import ALIVE_STATUSES, LISTED_STATUSES, TRASH_STATUSES, USABLE_STATUSES
from vfolders.services.access import (
    Access,
    AccessContext,
    access_for,
    folder_id_by_name,
    folder_info,
    folder_json,
    get_folder,
    iso,
    list_folders,
    personal_q as _personal_q,
    require,
    require_usable,
)
from vfolders.services.cloning import clone_json, reconcile_clones, run_clone, start_clone
from vfolders.services.config import (
    DEFAULT_HOST_NAME,
    default_host_name,
    max_upload_size,
    token_lifetime,
)
from vfolders.services.files import (
    check_new_name,
    delete_files,
    display_path,
    list_files,
    make_dirs,
    move_file,
    rename_file,
)
from vfolders.services.hosts import (
    all_hosts_info,
    allowed_hosts,
    ensure_default_proxy,
    ensure_default_storage_host,
    grant_host_permissions,
    host_permissions,
    hosts_info,
    require_host_permission,
)
from vfolders.services.inputs import (
    FOLDER_TYPES,
    PERMISSIONS,
    RESERVED_VFOLDERS,
    ROUTE_NAMES,
    USAGE_MODES,
    check_text,
    name_errors,
    parse_uuid as _parse_uuid,
    validate_folder_name,
    verify_vfolder_name,
)
from vfolders.services.lifecycle import (
    create_folder,
    move_to_trash,
    purge,
    reconcile,
    rename_folder,
    restore_from_trash,
    update_options,
)
from vfolders.services.listing import folder_by_id, folder_item, folder_page, vfolder_list
from vfolders.services.mounts import WORK_DIR, agent_path, container_path, resolve_mounts
from vfolders.services.ownership import change_owner
from vfolders.services.overview import (
    FolderCount,
    ScopeUsage,
    UsageOverview,
    check_recipients,
    folder_count,
    folder_size,
    project_member_emails,
    usage_overview,
)
from vfolders.services.projects import creatable_projects
from vfolders.services.proxy import check_all_proxies, check_proxy, client_origin, volume_root
from vfolders.services.quota import (
    measure_all_scopes,
    measure_scope,
    push_limit,
    scope_bytes,
    scope_limit,
    scope_limit_for,
    scope_usage,
)
from vfolders.services.queryfilter import parse_filter, parse_order
from vfolders.services.sharing import (
    MAX_EMAILS,
    accept_invitation,
    delete_invitation,
    folder_grants,
    invitation_json,
    invitations_received,
    invitations_sent,
    invite,
    leave,
    set_shared_permission,
    share,
    shared_permissions,
    unshare,
    update_invitation,
)
from vfolders.services.status import IllegalFolderMove, move_status
from vfolders.services.transfers import read_file, request_download, request_upload, token_expires_in, upload_file_object
from vfolders.services.volumes import (
    performance_metric,
    quota_scope,
    set_quota_scope,
    storage_volume,
    storage_volume_list,
    unset_quota_scope,
    volume_info,
)

__all__ = [
    # statuses (defined in vfolders.models)
    "ALIVE_STATUSES", "LISTED_STATUSES", "TRASH_STATUSES", "USABLE_STATUSES",
    # access
    "Access", "AccessContext", "access_for", "folder_id_by_name", "folder_info", "folder_json", "get_folder",
    "iso", "list_folders", "require", "require_usable", "_parse_uuid", "_personal_q",
    # cloning
    "clone_json", "reconcile_clones", "run_clone", "start_clone",
    # config
    "DEFAULT_HOST_NAME", "default_host_name", "max_upload_size", "token_lifetime",
    # files
    "check_new_name", "delete_files", "display_path", "list_files", "make_dirs", "move_file",
    "rename_file",
    # hosts
    "all_hosts_info", "allowed_hosts", "ensure_default_proxy", "ensure_default_storage_host", "grant_host_permissions", "host_permissions",
    "hosts_info", "require_host_permission",
    # inputs
    "FOLDER_TYPES", "PERMISSIONS", "RESERVED_VFOLDERS", "ROUTE_NAMES", "USAGE_MODES", "check_text", "name_errors",
    "validate_folder_name", "verify_vfolder_name",
    # lifecycle
    "create_folder", "move_to_trash", "purge", "reconcile", "rename_folder", "restore_from_trash", "update_options",
    # listing and its filter language
    "folder_by_id", "folder_item", "folder_page", "vfolder_list", "parse_filter", "parse_order",
    # mounts
    "WORK_DIR", "agent_path", "container_path", "resolve_mounts",
    # storage proxies
    "check_all_proxies", "check_proxy", "client_origin", "volume_root",
    # ownership
    "change_owner",
    # what the folder pages show beside the folders
    "FolderCount", "ScopeUsage", "UsageOverview", "check_recipients", "folder_count", "folder_size",
    "project_member_emails", "usage_overview",
    # projects
    "creatable_projects",
    # quota
    "measure_all_scopes", "measure_scope", "push_limit", "scope_bytes", "scope_limit", "scope_limit_for",
    "scope_usage",
    # sharing
    "MAX_EMAILS", "accept_invitation", "delete_invitation", "folder_grants", "invitation_json",
    "invitations_received", "invitations_sent", "invite", "leave", "set_shared_permission", "share",
    "shared_permissions", "unshare", "update_invitation",
    # status
    "IllegalFolderMove", "move_status",
    # transfers
    "read_file", "request_download", "request_upload", "token_expires_in", "upload_file_object",
    # volumes and quota scopes
    "performance_metric", "quota_scope", "set_quota_scope", "storage_volume", "storage_volume_list", "unset_quota_scope", "volume_info",
]
