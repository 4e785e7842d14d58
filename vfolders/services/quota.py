"""Quota scopes: their limits (from resource policies or the host's default), decided here and
pushed to the storage proxy that enforces them (``POST``/``PATCH /quota-scope``), the bytes they
hold (asked of the proxy), and the measured usage kept for the admin."""
from __future__ import annotations

import logging

from django.utils import timezone

from accounts.models import Project, User
from backendai.api import errors
from vfolders.models import OwnershipType, QuotaScope, StorageHost, VFolder, VFolderStatus
from vfolders.services import proxy

log = logging.getLogger(__name__)


def set_limit(host_name: str, quota_scope_id: str) -> int | None:
    """The hard limit an admin set for the scope on the host (``set_quota_scope``), if any."""
    return (QuotaScope.objects.filter(host_id=host_name, quota_scope_id=quota_scope_id)
            .values_list("limit_bytes", flat=True).first())


def scope_limit(folder: VFolder) -> int:
    """Bytes the folder's quota scope may hold; negative is unlimited."""
    override = set_limit(folder.host_id, folder.quota_scope_id)
    if override is not None:
        return override
    if folder.ownership_type == OwnershipType.USER:
        policy = folder.user.resource_policy if folder.user_id else None
    else:
        policy = folder.project.resource_policy if folder.project_id else None
    limit = policy.max_quota_scope_size if policy is not None else -1
    if limit is not None and limit >= 0:
        return limit
    return folder.host.default_quota if folder.host.default_quota is not None else -1


def scope_bytes(host: StorageHost, quota_scope_id: str) -> int:
    """Bytes the scope holds on a host now: its folders (trash included) and its staged uploads."""
    return scope_usage(host, quota_scope_id)[0]


def scope_usage(host: StorageHost, quota_scope_id: str) -> tuple[int, int]:
    """(bytes, regular files) the scope holds on ``host`` now (the proxy measures; staged
    uploads are included in the bytes)."""
    answer = proxy.host_call(host, "GET", "/quota-scope", {"qsid": quota_scope_id})
    try:
        return int(answer.get("used_bytes") or 0), int(answer.get("file_count") or 0)
    except (TypeError, ValueError):
        raise proxy.unavailable(host.proxy_name, "it reported a quota scope's usage that is not a number") from None


def push_limit(host: StorageHost, quota_scope_id: str, *, create: bool = False) -> int:
    """Tell the host's proxy the scope's limit as ``scope_limit_for`` decides it (``POST`` creates
    the scope, ``PATCH`` changes its limit); returns the limit (negative: unlimited)."""
    limit = scope_limit_for(quota_scope_id, host)
    proxy.host_call(host, "POST" if create else "PATCH", "/quota-scope",
                    {"qsid": quota_scope_id, "options": {"limit_bytes": limit if limit >= 0 else None}})
    return limit


def push_policy_limits(kind: str, policy_name: str) -> int:
    """After a resource policy changed: push the limit of every quota scope of its users (``kind``
    ``user``) or projects (``project``) that has none set of its own; returns how many were pushed.
    A proxy that does not answer keeps the old limit until the next push (every upload request
    and clone pushes again)."""
    owners = (User.objects.filter(resource_policy_id=policy_name) if kind == "user"
              else Project.objects.filter(resource_policy_id=policy_name))
    qsids = [f"{kind}:{pk}" for pk in owners.values_list("pk", flat=True)]
    pushed = 0
    for scope in QuotaScope.objects.filter(quota_scope_id__in=qsids, limit_bytes__isnull=True).select_related("host"):
        try:
            push_limit(scope.host, scope.quota_scope_id, create=True)
            pushed += 1
        except errors.BackendAIError as exc:
            log.warning("cannot push the limit of %s to %s: %s", scope.quota_scope_id, scope.host_id,
                        exc.msg or exc.error_title)
    return pushed


def measure_scope(host: StorageHost, quota_scope_id: str) -> QuotaScope:
    """Re-measure one quota scope (the proxy measures) and keep the figure for the admin."""
    used, files = scope_usage(host, quota_scope_id)
    scope, _ = QuotaScope.objects.update_or_create(
        host=host, quota_scope_id=quota_scope_id,
        defaults={"usage_bytes": used, "usage_files": files, "measured_at": timezone.now()})
    return scope


def measure_all_scopes() -> int:
    pairs = set(VFolder.objects.exclude(status=VFolderStatus.DELETE_COMPLETE)
                .values_list("host_id", "quota_scope_id"))
    hosts = {h.name: h for h in StorageHost.objects.filter(name__in={h for h, _ in pairs})}
    measured = 0
    for host_name, qsid in sorted(pairs):
        try:
            measure_scope(hosts[host_name], qsid)
            measured += 1
        except errors.BackendAIError as exc:  # its proxy is down: the next round measures it
            log.warning("cannot measure %s on %s: %s", qsid, host_name, exc.msg or exc.error_title)
    return measured


def scope_limit_for(quota_scope_id: str, host: StorageHost) -> int:
    """Bytes the scope may hold on ``host`` (the limit set for it, else its policy's, else
    the host's default); negative is unlimited."""
    override = set_limit(host.name, quota_scope_id)
    if override is not None:
        return override
    kind, _, ident = quota_scope_id.partition(":")
    policy = None
    if kind == "user":
        user = User.objects.select_related("resource_policy").filter(pk=ident).first()
        policy = user.resource_policy if user else None
    elif kind == "project":
        project = Project.objects.select_related("resource_policy").filter(pk=ident).first()
        policy = project.resource_policy if project else None
    limit = policy.max_quota_scope_size if policy is not None else -1
    return limit if limit >= 0 else host.default_quota
