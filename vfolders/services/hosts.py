"""Storage hosts and host permissions: the default host, the ``allowed_vfolder_hosts``
of domains, projects and keypair policies, and which host a new folder goes to."""
from __future__ import annotations

import logging
from collections import defaultdict

from django.conf import settings
from django.db import transaction

from accounts import services as accounts_services
from accounts.models import Domain, KeypairResourcePolicy, Project, User
from backendai.api import errors
from vfolders.models import ALL_HOST_PERMISSIONS, HostPermission, StorageHost, StorageProxy
from vfolders.services import proxy as proxies
from vfolders.services.config import DEFAULT_HOST_NAME, default_host_name
from vfolders.services.inputs import check_text
from vfolders.services.projects import project_for

log = logging.getLogger(__name__)


def _merge_permissions(current: dict, host: str, permissions) -> tuple[dict, bool]:
    merged = dict(current or {})
    have = list(merged.get(host) or [])
    missing = [p for p in permissions if p not in have]
    if not missing and host in merged:
        return merged, False
    merged[host] = have + missing
    return merged, True


def ensure_default_proxy() -> StorageProxy:
    """The embedded storage proxy ``local`` as the settings describe it (``STORAGE_PROXY_*``):
    created, or brought in line with them (idempotent)."""
    wanted = {"manager_url": settings.STORAGE_PROXY_MANAGER_URL, "client_url": settings.STORAGE_PROXY_CLIENT_URL,
              "secret": settings.STORAGE_PROXY_SECRET}
    proxy, created = StorageProxy.objects.get_or_create(name=proxies.DEFAULT_PROXY_NAME, defaults=wanted)
    changed = {k: v for k, v in wanted.items() if getattr(proxy, k) != v}
    if changed:
        StorageProxy.objects.filter(pk=proxy.pk).update(**changed)
        for key, value in changed.items():
            setattr(proxy, key, value)
    if created:
        log.info("created storage proxy %s at %s", proxy.name, proxy.manager_url)
    return proxy


def ensure_default_storage_host() -> StorageHost:
    """``local:volume1`` on the embedded storage proxy ``local`` with every host permission for
    the ``default`` domain and the ``default`` keypair policy (idempotent); the proxy's health and
    the volume's path are asked for at once when it answers."""
    host = _ensure_default_host()
    proxy = StorageProxy.objects.get(name=host.proxy_name)
    proxies.check_proxy(proxy)
    host.refresh_from_db()
    return host


@transaction.atomic
def _ensure_default_host() -> StorageHost:
    defaults = accounts_services.ensure_defaults()
    ensure_default_proxy()
    host, created = StorageHost.objects.get_or_create(
        name=DEFAULT_HOST_NAME,
        defaults={"backend": "vfs", "capabilities": ["vfolder", "quota"],
                  "description": "The volume volume1 of the embedded storage proxy"},
    )
    for obj in (defaults.domain, defaults.keypair_policy):
        merged, changed = _merge_permissions(obj.allowed_vfolder_hosts, host.name, ALL_HOST_PERMISSIONS)
        if changed:
            type(obj).objects.filter(pk=obj.pk).update(allowed_vfolder_hosts=merged)
    if created:
        log.info("created storage host %s", host.name)
    return host


def grant_host_permissions(obj, host: str, permissions=None) -> None:
    """Add host permissions to a domain, project or keypair policy's ``allowed_vfolder_hosts``."""
    merged, changed = _merge_permissions(obj.allowed_vfolder_hosts, host, permissions or ALL_HOST_PERMISSIONS)
    if changed:
        type(obj).objects.filter(pk=obj.pk).update(allowed_vfolder_hosts=merged)
        obj.allowed_vfolder_hosts = merged


def host_permissions(user: User, keypair=None, project: Project | None = None) -> dict[str, set[str]]:
    """The union of ``allowed_vfolder_hosts`` of the user's domain, the given project
    (or all the user's projects) and the keypair's resource policy."""
    key = (getattr(keypair, "pk", None), getattr(project, "pk", None))
    cache = getattr(user, "_vfolder_host_permissions", None)
    if cache is not None and key in cache:
        return cache[key]
    result: dict[str, set[str]] = defaultdict(set)

    def merge(mapping):
        if not isinstance(mapping, dict):
            return
        for host, perms in mapping.items():
            if isinstance(perms, (list, tuple, set)):
                result[host].update(p for p in perms if isinstance(p, str))

    merge(Domain.objects.filter(pk=user.domain_id).values_list("allowed_vfolder_hosts", flat=True).first())
    if project is not None:
        merge(project.allowed_vfolder_hosts)
    else:
        for mapping in Project.objects.filter(memberships__user=user, is_active=True).values_list(
                "allowed_vfolder_hosts", flat=True):
            merge(mapping)
    if keypair is not None and getattr(keypair, "resource_policy_id", None):
        if "resource_policy" in getattr(keypair, "_state").fields_cache:
            merge(keypair.resource_policy.allowed_vfolder_hosts)
        else:
            merge(KeypairResourcePolicy.objects.filter(pk=keypair.resource_policy_id)
                  .values_list("allowed_vfolder_hosts", flat=True).first())
    elif user.main_keypair_id:
        merge(KeypairResourcePolicy.objects.filter(keypairs__access_key=user.main_keypair_id)
              .values_list("allowed_vfolder_hosts", flat=True).first())
    result = dict(result)
    if cache is None:
        cache = {}
        user._vfolder_host_permissions = cache
    cache[key] = result
    return result


def require_host_permission(user: User, host: str, permission: str, keypair=None, project=None) -> None:
    if user.is_superadmin:
        return
    permission = HostPermission(permission)
    if permission.value not in host_permissions(user, keypair, project).get(host, set()):
        raise errors.VFolderPermissionError(
            f"You are not allowed to {permission.label.lower()} on the storage host {host} "
            f"(needs the '{permission.value}' host permission)")


def allowed_hosts(user: User, keypair=None, project=None) -> list[StorageHost]:
    hosts = list(StorageHost.objects.filter(is_active=True))
    if user.is_superadmin:
        return hosts
    perms = host_permissions(user, keypair, project)
    return [h for h in hosts if perms.get(h.name)]


def hosts_info(user: User, keypair=None, group=None) -> dict:
    """``GET /folders/_/hosts``."""
    project = project_for(user, group) if group else None
    hosts = allowed_hosts(user, keypair, project)
    names = [h.name for h in hosts]
    preferred = default_host_name()
    default = preferred if preferred in names else (names[0] if names else None)
    volume_info = {}
    reports = _volume_reports({h.proxy_name for h in hosts})
    for host in hosts:
        fs = (reports.get(host.proxy_name, {}).get(host.volume_name) or {}).get("fs") or {}
        try:
            total, used = int(fs["capacity_bytes"]), int(fs["used_bytes"])
            percentage = round(100.0 * used / total, 2) if total else 0.0
        except (KeyError, TypeError, ValueError):
            percentage = None  # the proxy is down or does not know the volume
        volume_info[host.name] = {"backend": host.backend, "capabilities": list(host.capabilities or []),
                                  "usage": {"percentage": percentage}, "sftp_scaling_groups": []}
    return {"default": default, "allowed": names, "volume_info": volume_info}


def _volume_reports(proxy_names) -> dict[str, dict[str, dict]]:
    """``{proxy: {volume: report}}`` from one ``GET /volumes`` per proxy (none for a proxy that
    does not answer)."""
    reports = {}
    for proxy in StorageProxy.objects.filter(name__in=sorted(proxy_names)):
        try:
            answer = proxies.call(proxy, "GET", "/volumes")
        except errors.BackendAIError:
            continue
        volumes = proxies._volume_entries(answer)
        reports[proxy.name] = {v["name"]: v for v in volumes}
    return reports


def all_hosts_info() -> dict:
    names = list(StorageHost.objects.filter(is_active=True).values_list("name", flat=True))
    preferred = default_host_name()
    return {"default": preferred if preferred in names else (names[0] if names else None), "allowed": names}


def pick_host(name: str | None, user: User, keypair=None, project=None) -> StorageHost:
    """The active host ``name``, or the user's default one (the configured default when
    allowed, else the first allowed host)."""
    if name:
        check_text(name, "host", max_chars=128)
    if not name:
        hosts = allowed_hosts(user, keypair, project)
        names = [h.name for h in hosts]
        name = default_host_name() if default_host_name() in names else (names[0] if names else None)
        if name is None:
            raise errors.InvalidAPIParameters("No storage host is allowed for you; ask an admin")
    host = StorageHost.objects.filter(name=name, is_active=True).first()
    if host is None:
        raise errors.InvalidAPIParameters(f"Invalid vfolder host {name!r}")
    return host
