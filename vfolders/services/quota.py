"""Quota scopes: their limits (from resource policies or the host's default), the
bytes they hold on disk, and the measured usage kept for the admin."""
from __future__ import annotations

import uuid
from pathlib import Path

from django.utils import timezone

from accounts.models import Project, User
from backendai.api import errors
from vfolders import storage
from vfolders.models import OwnershipType, QuotaScope, StorageHost, VFolder, VFolderStatus


def scope_dirname(quota_scope_id: str) -> str:
    kind, _, ident = quota_scope_id.partition(":")
    return f"{kind}-{uuid.UUID(ident).hex}"


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


def scope_bytes(host_root: Path, quota_scope_id: str) -> int:
    """Bytes the scope holds on a host now: its folders (trash included) and its staged uploads."""
    dirname = scope_dirname(quota_scope_id)
    used, _ = storage.usage(Path(host_root) / dirname)
    staged, _ = storage.usage(Path(host_root) / storage.STAGING_DIRNAME / dirname)
    return used + staged


def scope_usage(host: StorageHost, quota_scope_id: str) -> tuple[int, int]:
    """(bytes, regular files) the scope holds on ``host`` now, staged uploads included in the bytes."""
    dirname = scope_dirname(quota_scope_id)
    used, files = storage.usage(host.root / dirname)
    staged, _ = storage.usage(host.root / storage.STAGING_DIRNAME / dirname)
    return used + staged, files


def measure_scope(host: StorageHost, quota_scope_id: str) -> QuotaScope:
    """Re-measure one quota scope from the disk and keep the figure for the admin."""
    used, files = scope_usage(host, quota_scope_id)
    scope, _ = QuotaScope.objects.update_or_create(
        host=host, quota_scope_id=quota_scope_id,
        defaults={"usage_bytes": used, "usage_files": files, "measured_at": timezone.now()})
    return scope


def measure_all_scopes() -> int:
    pairs = set(VFolder.objects.exclude(status=VFolderStatus.DELETE_COMPLETE)
                .values_list("host_id", "quota_scope_id"))
    hosts = {h.name: h for h in StorageHost.objects.filter(name__in={h for h, _ in pairs})}
    for host_name, qsid in sorted(pairs):
        measure_scope(hosts[host_name], qsid)
    return len(pairs)


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


def check_room(folder: VFolder, more_bytes: int) -> None:
    """Refuse ``more_bytes`` that do not fit the folder's quota scope."""
    limit = scope_limit(folder)
    if limit < 0:
        return
    used = scope_bytes(folder.host.root, folder.quota_scope_id)
    if used + more_bytes > limit:
        raise errors.QuotaExceeded(
            f"The quota scope {folder.quota_scope_id} holds {used} of {limit} bytes; "
            f"{more_bytes} more do not fit", data={"limit": limit, "used": used, "requested": more_bytes})
