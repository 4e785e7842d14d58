"""What the folder pages show beside the folders themselves: each folder's bytes, the quota
scopes' usage against their limits, the user's folder count against ``max_vfolder_count``,
and the checks of the emails an invitation or a share names (unknown users, non-members).

The folder list renders at once with the count (``folder_count``); its sizes come after the page
(``usage_overview``, one request for all of them).  Bytes are measured by the storage proxies
(``GET /folder/usage`` walks a folder): at most ``VFOLDER_USAGE_WORKERS`` at a time, each within
``VFOLDER_USAGE_TIMEOUT`` seconds, and a proxy that does not answer once is not asked again in the
same round.  A quota scope's usage is the figure kept on its ``QuotaScope`` row (measured by
``vfolders.tasks.measure_quota_scopes`` and after purges, clones and hand-overs) when there is one;
only a scope never measured is walked (``GET /quota-scope``).  The database is read in a fixed
number of queries whatever the number of folders.  What a proxy does not tell is unknown
(``None``): the page still renders."""
from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Q

from accounts.models import ProjectMembership, ProjectResourcePolicy, User, UserResourcePolicy, UserStatus
from backendai.api import errors
from vfolders.models import (
    USABLE_STATUSES,
    OwnershipType,
    QuotaScope,
    StorageProxy,
    VFolder,
    VFolderStatus,
)
from vfolders.services import proxy
from vfolders.services.access import Access
from vfolders.services.config import usage_timeout, usage_workers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScopeUsage:
    """One quota scope on one host: bytes held, the limit (``None``: unlimited) and when the bytes
    were measured (``None``: just now, by its proxy)."""

    host: str
    quota_scope_id: str
    label: str
    used: int | None
    limit: int | None
    measured_at: datetime | None = None

    @property
    def percent(self) -> float | None:
        if self.used is None or not self.limit:
            return None
        return 100.0 * self.used / self.limit


@dataclass(frozen=True)
class FolderCount:
    """The user's own folders (the trash counts until purged) and ``max_vfolder_count`` (``None``: unlimited)."""

    used: int
    limit: int | None


@dataclass
class UsageOverview:
    sizes: dict[uuid.UUID, int | None] = field(default_factory=dict)
    scopes: list[ScopeUsage] = field(default_factory=list)

    def limit_of(self, folder: VFolder) -> int | None:
        """The limit of the folder's quota scope, when the overview shows that scope."""
        return next((s.limit for s in self.scopes
                     if (s.host, s.quota_scope_id) == (folder.host_id, folder.quota_scope_id)), None)


def _proxies(hosts) -> dict[str, StorageProxy]:
    names = {h.partition(":")[0] for h in hosts}
    return {p.name: p for p in StorageProxy.objects.filter(name__in=names)}


def _ask(proxies: dict, host: str, path: str, body: dict, wait: float | None = None) -> dict | None:
    """One manager-API request about a volume; ``None`` when the proxy does not answer."""
    name, _, volume = host.partition(":")
    target = proxies.get(name)
    if target is None:
        return None
    try:
        return proxy.call(target, "GET", path, {"volume": volume, **body}, wait=wait)
    except proxy.ProxyUnreachable:
        raise
    except errors.BackendAIError as exc:
        log.info("folder overview: %s %s on %s: %s", path, body, host, exc.msg or exc.error_title)
        return None


def _ask_all(proxies: dict, asks: dict) -> dict:
    """``{key: (host, path, body)}`` asked concurrently: ``{key: answer or None}``.  Threads only
    call the proxies (the database was read before); a proxy that is unreachable once is not asked
    again, so a dead or hung proxy costs one timeout, not one per folder."""
    if not asks:
        return {}
    wait, unreachable, lock = usage_timeout(), set(), threading.Lock()

    def one(item):
        host, path, body = item
        name = host.partition(":")[0]
        with lock:
            if name in unreachable:
                return None
        try:
            return _ask(proxies, host, path, body, wait)
        except proxy.ProxyUnreachable as exc:
            with lock:
                first = name not in unreachable
                unreachable.add(name)
            if first:
                log.warning("folder overview: storage proxy %s did not answer within %.1f s (%s): its sizes "
                            "are unknown", name, wait, exc.msg)
            return None

    with ThreadPoolExecutor(max_workers=min(usage_workers(), len(asks)), thread_name_prefix="vf-usage") as pool:
        answers = list(pool.map(one, asks.values()))
    return dict(zip(asks, answers))


def _number(answer: dict | None, key: str) -> int | None:
    if answer is None:
        return None
    try:
        return int(answer.get(key) or 0)
    except (TypeError, ValueError):
        return None


def _limits(user_policy: int | None, user: User, folders: list[VFolder], pairs,
            overrides: dict) -> dict[tuple[str, str], int | None]:
    """The limit of each (host, scope): the one set for the scope (``overrides``), else its
    policy's, else the host's default (as ``quota.scope_limit``), in one query for any number of scopes."""
    project_policy_ids = {f.project.resource_policy_id for f in folders if f.project_id}
    project_limits = dict(ProjectResourcePolicy.objects.filter(pk__in=project_policy_ids).values_list(
        "name", "max_quota_scope_size")) if project_policy_ids else {}
    by_scope = {}
    for f in folders:
        if f.project_id:
            by_scope[(f.host_id, f.quota_scope_id)] = (project_limits.get(f.project.resource_policy_id), f.host)
        else:
            by_scope[(f.host_id, f.quota_scope_id)] = (
                user_policy if f.quota_scope_id == f"user:{user.pk}" else None, f.host)
    result = {}
    for pair in pairs:
        if overrides.get(pair) is not None:
            limit = overrides[pair]
        else:
            policy_limit, host = by_scope[pair]
            limit = policy_limit if policy_limit is not None and policy_limit >= 0 else host.default_quota
        result[pair] = limit if limit is not None and limit >= 0 else None
    return result


def folder_count(user: User) -> FolderCount:
    """The user's own folders against their policy's ``max_vfolder_count`` (two queries)."""
    max_count = UserResourcePolicy.objects.filter(pk=user.resource_policy_id).values_list(
        "max_vfolder_count", flat=True).first()
    count = VFolder.objects.filter(user_id=user.pk, ownership_type=OwnershipType.USER).exclude(
        status=VFolderStatus.DELETE_COMPLETE).count()
    return FolderCount(count, max_count or None)


def usage_overview(user: User, accesses: list[Access]) -> UsageOverview:
    """Sizes of the usable folders ``accesses`` name, and the usage of the scopes they live in that
    ``user`` fills (their own and their projects'): kept figures first, the rest asked of the proxies
    concurrently (see the module's doc)."""
    folders = [a.folder for a in accesses]
    own_scope = f"user:{user.pk}"
    mine = [f for f in folders if f.quota_scope_id == own_scope or f.ownership_type == OwnershipType.GROUP]
    pairs = sorted({(f.host_id, f.quota_scope_id) for f in mine})
    kept = {}
    if pairs:
        kept = {(r.host_id, r.quota_scope_id): r for r in QuotaScope.objects.filter(
            host_id__in={h for h, _ in pairs}, quota_scope_id__in={q for _, q in pairs})}
    proxies = _proxies({f.host_id for f in folders})
    asks = {("folder", f.id): (f.host_id, "/folder/usage", {"vfid": f.vfid})
            for f in folders if f.status in USABLE_STATUSES}
    asks.update({("scope", pair): (pair[0], "/quota-scope", {"qsid": pair[1]}) for pair in pairs
                 if pair not in kept or kept[pair].measured_at is None})
    max_size = UserResourcePolicy.objects.filter(pk=user.resource_policy_id).values_list(
        "max_quota_scope_size", flat=True).first() if pairs else None
    limits = _limits(max_size, user, mine, pairs, {p: r.limit_bytes for p, r in kept.items()}) if pairs else {}
    answers = _ask_all(proxies, asks)  # the database is not read after this
    sizes = {f.id: _number(answers.get(("folder", f.id)), "used_bytes") for f in folders}
    labels = {}
    for f in mine:
        labels[(f.host_id, f.quota_scope_id)] = (
            f"project {f.project.name}" if f.project_id else "your folders") + f" on {f.host_id}"
    scopes = []
    for pair in pairs:
        if ("scope", pair) in asks:
            used, measured = _number(answers[("scope", pair)], "used_bytes"), None
        else:
            used, measured = kept[pair].usage_bytes, kept[pair].measured_at
        scopes.append(ScopeUsage(pair[0], pair[1], labels[pair], used, limits[pair], measured))
    return UsageOverview(sizes, scopes)


def folder_size(folder: VFolder) -> int | None:
    """The bytes one folder holds, or ``None`` when its proxy does not answer."""
    if folder.status not in USABLE_STATUSES:
        return None
    try:
        answer = _ask(_proxies([folder.host_id]), folder.host_id, "/folder/usage", {"vfid": folder.vfid})
    except proxy.ProxyUnreachable:
        return None
    return _number(answer, "used_bytes")


def check_recipients(folder: VFolder, emails: list[str]) -> None:
    """Refuse an invitation or a share that names anyone it cannot reach, naming them: emails
    of no active user of the folder's domain, and (project folders) users outside its project."""
    wanted = {e.strip().lower(): e.strip() for e in emails if e.strip()}
    found = Q()
    for email in wanted:
        found |= Q(email__iexact=email)
    users = {u.email.lower(): u for u in User.objects.filter(
        found, status=UserStatus.ACTIVE, domain_id=folder.domain_id)} if wanted else {}
    unknown = [shown for key, shown in wanted.items() if key not in users]
    if unknown:
        raise errors.InvalidAPIParameters(
            "No user with the email " + ", ".join(unknown) + " in this folder's domain; nothing was sent")
    if folder.ownership_type == OwnershipType.GROUP:
        members = set(ProjectMembership.objects.filter(
            project_id=folder.project_id, user_id__in=[u.pk for u in users.values()]).values_list("user_id", flat=True))
        outside = [wanted[key] for key, u in users.items() if u.pk not in members]
        if outside:
            raise errors.InvalidAPIParameters(
                ", ".join(outside) + f" is not a member of the project {folder.project.name}; nothing was shared")
    elif folder.user_id and any(u.pk == folder.user_id for u in users.values()):
        raise errors.InvalidAPIParameters(f"{folder.user.email} owns this folder already")


def project_member_emails(folder: VFolder) -> list[str]:
    """The emails of the members of a project folder's project (for the share form's suggestions)."""
    if folder.ownership_type != OwnershipType.GROUP:
        return []
    return list(ProjectMembership.objects.filter(project_id=folder.project_id).order_by("user__email")
                .values_list("user__email", flat=True))
