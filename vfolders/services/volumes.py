"""Storage volumes and quota scopes as the admin GraphQL fields show and change them
(``storage_volume``, ``storage_volume_list``, ``quota_scope``, ``set_quota_scope``,
``unset_quota_scope``).

Storage volumes are the storage hosts (``<proxy>:<volume>``); only superadmins see
them, as in Backend.AI.  A quota scope (``user:<uuid>`` or ``project:<uuid>`` on one
host) is seen by superadmins, the domain admins of its user's or project's domain,
the user it belongs to and the members of its project; only superadmins and those
domain admins change its hard limit.  A scope one may not see is "not found", so
its existence is not revealed.

``set_quota_scope`` keeps the hard limit in ``QuotaScope.limit_bytes``, which the
quota checks (uploads, clones) read before the resource policy's
``max_quota_scope_size``; ``unset_quota_scope`` clears it, so the policy's limit (or
the host's default quota) applies again."""
from __future__ import annotations

import uuid

from django.db import transaction

from accounts.models import Project, ProjectMembership, User
from backendai.actions import audited
from backendai.api import errors
from backendai.api.gqlkit import apply_filter, apply_order
from vfolders.models import QuotaScope, StorageHost
from vfolders.services import proxy
from vfolders.services.inputs import check_text
from vfolders.services.quota import push_limit, scope_limit_for, scope_usage

VOLUME_FIELDS = {"id": "name", "name": "name", "backend": "backend"}
#: What a vfs volume reports as its performance metric: not measured.
UNMEASURED = {"iops_read": -1, "iops_write": -1, "io_bytes_read": -1, "io_bytes_write": -1,
              "io_usec_read": -1, "io_usec_write": -1}


def _require_superadmin(user: User, what: str) -> None:
    if not user.is_superadmin:
        raise errors.InsufficientPrivilege(f"Only superadmins may see {what}")


def volume_info(host: StorageHost) -> dict:
    """One storage host as a ``StorageVolume``, from what its proxy reports (``GET /volumes``);
    a proxy that does not answer shows the volume ``unavailable`` with the reason."""
    proxy_name, _, volume = host.name.partition(":")
    report, problem = None, None
    try:
        report = proxy.volume_report(host)
    except errors.BackendAIError as exc:
        problem = exc.msg or exc.error_title
    if report is None and problem is None:
        problem = f"The storage proxy {proxy_name!r} does not serve the volume {volume!r}"
    fs = (report or {}).get("fs") or {}
    usage = {"capacity_bytes": fs["capacity_bytes"], "used_bytes": fs["used_bytes"]} \
        if isinstance(fs, dict) and "capacity_bytes" in fs and "used_bytes" in fs else {}
    capabilities = host.capabilities or (report or {}).get("capabilities") or []
    return {
        "id": host.name,
        "backend": (report or {}).get("backend") or host.backend,
        "fsprefix": ".",
        "path": (report or {}).get("path") or host.path,
        "capabilities": [str(c) for c in capabilities],
        "hardware_metadata": {"status": "healthy" if report is not None else "unavailable",
                              "status_info": problem, "metadata": {}},
        "performance_metric": dict(UNMEASURED),
        "usage": usage,
        "proxy": proxy_name if volume else "",
        "name": volume or proxy_name,
    }


def storage_volume(user: User, volume_id) -> dict:
    """``storage_volume(id)``: one active storage host (superadmins only)."""
    _require_superadmin(user, "storage volumes")
    check_text(volume_id, "id", max_chars=128)
    host = StorageHost.objects.filter(name=volume_id, is_active=True).first()
    if host is None:
        raise errors.object_not_found("storage volume", f"No such storage volume: {volume_id}")
    return volume_info(host)


def storage_volume_list(user: User, limit: int, offset: int, filter: str | None = None,
                        order: str | None = None) -> tuple[list[dict], int]:
    """``storage_volume_list``: a page of the active storage hosts and their count (superadmins only)."""
    _require_superadmin(user, "storage volumes")
    query = apply_filter(StorageHost.objects.filter(is_active=True), filter, VOLUME_FIELDS)
    query = apply_order(query, order, VOLUME_FIELDS, "name")
    total = query.count()
    return [volume_info(host) for host in query.order_by(*query.query.order_by, "name")[offset:offset + limit]], total


# --- performance metric -------------------------------------------------------------------------

def performance_metric(user: User, folder_host) -> dict:
    """``GET /folders/_/perf-metric``: ``{"metric": {...}}`` of a storage host (superadmins only)."""
    _require_superadmin(user, "the performance of storage volumes")
    check_text(folder_host, "folder_host", max_chars=128)
    if not folder_host:
        raise errors.InvalidAPIParameters("folder_host must name a storage host, e.g. local:volume1")
    host = StorageHost.objects.filter(name=folder_host).first()
    if host is None:
        raise errors.object_not_found("storage volume", f"No such storage volume: {folder_host}")
    answer = proxy.host_call(host, "GET", "/volume/performance-metric")
    metric = answer.get("metric")
    if not isinstance(metric, dict):
        raise proxy.unavailable(host.proxy_name, "it gave no performance metric")
    return {"metric": metric}


# --- quota scopes -------------------------------------------------------------------------------

def parse_scope_id(quota_scope_id) -> tuple[str, uuid.UUID]:
    """``user:<uuid>`` or ``project:<uuid>`` as (kind, id); 400 for anything else."""
    check_text(quota_scope_id, "quota_scope_id", max_chars=64)
    kind, _, ident = quota_scope_id.partition(":")
    try:
        parsed = uuid.UUID(ident)
    except ValueError:
        parsed = None
    if kind not in ("user", "project") or parsed is None:
        raise errors.InvalidAPIParameters("quota_scope_id must be user:<uuid> or project:<uuid>")
    return kind, parsed


def _scope_domain(user: User, kind: str, ident: uuid.UUID) -> str:
    """The domain of the scope's owner if ``user`` may see the scope; 404 otherwise."""
    if kind == "user":
        owner = User.objects.filter(pk=ident).values_list("domain_id", flat=True).first()
        own = ident == user.pk
    else:
        owner = Project.objects.filter(pk=ident).values_list("domain_id", flat=True).first()
        own = owner is not None and ProjectMembership.objects.filter(project_id=ident, user_id=user.pk).exists()
    visible = owner is not None and (
        user.is_superadmin or own or (user.is_domain_admin and owner == user.domain_id))
    if not visible:
        raise errors.object_not_found("quota scope", f"No such quota scope: {kind}:{ident}")
    return owner


def _host(name) -> StorageHost:
    check_text(name, "storage_host_name", max_chars=128)
    host = StorageHost.objects.filter(name=name, is_active=True).first()
    if host is None:
        raise errors.object_not_found("storage volume", f"No such storage volume: {name}")
    return host


def _scope_json(host: StorageHost, qsid: str) -> dict:
    used, files = scope_usage(host, qsid)
    limit = scope_limit_for(qsid, host)
    return {"quota_scope_id": qsid, "storage_host_name": host.name,
            "details": {"usage_bytes": used, "usage_count": files,
                        "hard_limit_bytes": limit if limit >= 0 else None}}


def quota_scope(user: User, storage_host_name, quota_scope_id) -> dict:
    """``quota_scope``: the scope's usage (measured now) and hard limit."""
    kind, ident = parse_scope_id(quota_scope_id)
    host = _host(storage_host_name)
    _scope_domain(user, kind, ident)
    return _scope_json(host, f"{kind}:{ident}")


def _require_scope_admin(user: User, kind: str, ident: uuid.UUID) -> None:
    domain = _scope_domain(user, kind, ident)
    if not (user.is_superadmin or (user.is_domain_admin and domain == user.domain_id)):
        raise errors.InsufficientPrivilege("Only superadmins and the domain's admins change quota scopes")


@audited("quota-scope", "set", "quota_scope_id")
def set_quota_scope(user: User, storage_host_name, quota_scope_id, hard_limit_bytes=None) -> dict:
    """``set_quota_scope``: keep ``hard_limit_bytes`` as the scope's limit on the host
    (None changes nothing, as Backend.AI does with an unset value)."""
    kind, ident = parse_scope_id(quota_scope_id)
    host = _host(storage_host_name)
    _require_scope_admin(user, kind, ident)
    qsid = f"{kind}:{ident}"
    if hard_limit_bytes is not None:
        if isinstance(hard_limit_bytes, bool) or not isinstance(hard_limit_bytes, int) or hard_limit_bytes < 0:
            raise errors.InvalidAPIParameters("hard_limit_bytes must be a number of bytes (0 or more)")
        with transaction.atomic():
            scope, _ = QuotaScope.objects.select_for_update().get_or_create(host=host, quota_scope_id=qsid)
            QuotaScope.objects.filter(pk=scope.pk).update(limit_bytes=hard_limit_bytes)
            push_limit(host, qsid, create=True)  # the proxy refuses: nothing changed here either
    return _scope_json(host, qsid)


@audited("quota-scope", "unset", "quota_scope_id")
def unset_quota_scope(user: User, storage_host_name, quota_scope_id) -> dict:
    """``unset_quota_scope``: forget the limit set for the scope (the policy's applies again)."""
    kind, ident = parse_scope_id(quota_scope_id)
    host = _host(storage_host_name)
    _require_scope_admin(user, kind, ident)
    qsid = f"{kind}:{ident}"
    with transaction.atomic():
        QuotaScope.objects.filter(host=host, quota_scope_id=qsid).update(limit_bytes=None)
        push_limit(host, qsid, create=True)  # the policy's limit (or the host's default) again
    return _scope_json(host, qsid)
