"""Storage proxies, storage hosts, virtual folders, per-user permissions, invitations and
quota scope usage (reference §1.9 and §9).  State changes go through ``vfolders.services``;
every file operation goes to the storage proxy of the folder's host
(``vfolders.services.proxy``): the manager never touches folder files itself."""
from __future__ import annotations

import uuid
from pathlib import Path

from django.db import models
from django.db.models import Q


class StorageBackend(models.TextChoices):
    VFS = "vfs", "vfs (a directory tree on the storage proxy's host)"
    LOOPQUOTA = "loopquota", "loopquota (vfs with per-scope limits enforced by the proxy)"


class ProxyStatus(models.TextChoices):
    UNKNOWN = "", "Not checked yet"
    ALIVE = "alive", "Alive"
    LOST = "lost", "Lost"


class StorageProxy(models.Model):
    """A storage proxy daemon (``python -m storageproxy``): the manager reaches its manager API
    with the shared ``secret``; clients upload to and download from its client API directly.
    ``vfolders.tasks.check_storage_proxies`` records its health."""

    name = models.CharField(max_length=64, primary_key=True,
                            help_text="The <proxy> part of its storage hosts' names (<proxy>:<volume>)")
    manager_url = models.URLField(max_length=512, help_text="Its manager API, e.g. http://127.0.0.1:6022")
    client_url = models.URLField(
        max_length=512, help_text="Its client API as clients and browsers reach it, e.g. http://127.0.0.1:6021")
    secret = models.CharField(max_length=256, help_text="The secret shared with the proxy (never shown back)")
    ssl_verify = models.BooleanField(default=True, help_text="Verify the manager API's TLS certificate")
    status = models.CharField(max_length=8, choices=ProxyStatus.choices, default=ProxyStatus.UNKNOWN, blank=True)
    last_seen = models.DateTimeField(null=True, blank=True, help_text="When it last answered")
    last_checked = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    version = models.CharField(max_length=64, blank=True)
    volumes = models.JSONField(default=list, blank=True, help_text="What it reported at GET /volumes")
    metrics_address = models.CharField(
        max_length=300, blank=True, default="",
        help_text="host:port of its /metrics (--metrics-listen) as it reported at GET /status; "
                  "the manager's service discovery lists it")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "storage proxy"
        verbose_name_plural = "storage proxies"

    def __str__(self):
        return self.name


class UsageMode(models.TextChoices):
    GENERAL = "general", "General"
    MODEL = "model", "Model"
    DATA = "data", "Data"


class VFolderPermission(models.TextChoices):
    READ_ONLY = "ro", "Read only"
    READ_WRITE = "rw", "Read-write"
    RW_DELETE = "wd", "Read-write-delete"


class OwnershipType(models.TextChoices):
    USER = "user", "User"
    GROUP = "group", "Project (group)"


class VFolderStatus(models.TextChoices):
    READY = "ready", "Ready"
    PERFORMING = "performing", "Performing"
    CLONING = "cloning", "Cloning"
    MOUNTED = "mounted", "Mounted"
    ERROR = "error", "Error"
    DELETE_PENDING = "delete-pending", "In the trash"
    DELETE_ONGOING = "delete-ongoing", "Being deleted"
    DELETE_COMPLETE = "delete-complete", "Deleted"
    DELETE_ERROR = "delete-error", "Deletion failed"


class InvitationState(models.TextChoices):
    PENDING = "pending", "Pending"
    ACCEPTED = "accepted", "Accepted"
    REJECTED = "rejected", "Rejected"
    CANCELED = "canceled", "Canceled"


class HostPermission(models.TextChoices):
    CREATE = "create-vfolder", "Create folders"
    MODIFY = "modify-vfolder", "Rename and change folders"
    DELETE = "delete-vfolder", "Delete folders"
    MOUNT = "mount-in-session", "Mount in sessions"
    UPLOAD = "upload-file", "Upload files"
    DOWNLOAD = "download-file", "Download files"
    INVITE = "invite-others", "Invite others"
    SET_USER_PERMISSION = "set-user-specific-permission", "Set user-specific permissions"


ALL_HOST_PERMISSIONS = [p.value for p in HostPermission]

#: Folders in these statuses are alive: they hold their name and can be used.
ALIVE_STATUSES = (VFolderStatus.READY, VFolderStatus.PERFORMING, VFolderStatus.CLONING, VFolderStatus.MOUNTED,
                  VFolderStatus.ERROR)
#: In the trash: restorable (delete-error may also be purged again).
TRASH_STATUSES = (VFolderStatus.DELETE_PENDING, VFolderStatus.DELETE_ERROR)
#: Files may be read, written and mounted only in these.
USABLE_STATUSES = (VFolderStatus.READY, VFolderStatus.MOUNTED)
DELETED_STATUSES = (VFolderStatus.DELETE_PENDING, VFolderStatus.DELETE_ONGOING, VFolderStatus.DELETE_COMPLETE,
                    VFolderStatus.DELETE_ERROR)
#: What folder listings show: the alive folders and the trash.
LISTED_STATUSES = ALIVE_STATUSES + TRASH_STATUSES

_F = VFolderStatus
#: The legal moves of a folder's status, the only ones ``vfolders.services.status.move_status``
#: applies.  Every alive folder may go to the trash; the trash is restored (READY) or purged
#: (DELETE_ONGOING, then DELETE_COMPLETE, or DELETE_ERROR when files stay, which is in the
#: trash again); DELETE_COMPLETE is final.  CLONING is the passing state of a clone's source
#: and target (``vfolders.services.cloning``; a target is created CLONING and ends READY or
#: ERROR); PERFORMING and MOUNTED are passing states of a ready folder (Backend.AI's names;
#: nothing here sets them yet).
FOLDER_TRANSITIONS: dict[VFolderStatus, frozenset[VFolderStatus]] = {
    _F.READY: frozenset({_F.PERFORMING, _F.CLONING, _F.MOUNTED, _F.ERROR, _F.DELETE_PENDING}),
    _F.PERFORMING: frozenset({_F.READY, _F.ERROR, _F.DELETE_PENDING}),
    _F.CLONING: frozenset({_F.READY, _F.ERROR, _F.DELETE_PENDING}),
    _F.MOUNTED: frozenset({_F.READY, _F.ERROR, _F.DELETE_PENDING}),
    _F.ERROR: frozenset({_F.READY, _F.DELETE_PENDING}),
    _F.DELETE_PENDING: frozenset({_F.READY, _F.DELETE_ONGOING}),
    _F.DELETE_ONGOING: frozenset({_F.DELETE_COMPLETE, _F.DELETE_ERROR}),
    _F.DELETE_ERROR: frozenset({_F.READY, _F.DELETE_ONGOING}),
    _F.DELETE_COMPLETE: frozenset(),
}


def folder_can_move(current: str, new: str) -> bool:
    """Whether ``FOLDER_TRANSITIONS`` lets a folder move from ``current`` to ``new``."""
    return VFolderStatus(new) in FOLDER_TRANSITIONS[VFolderStatus(current)]


class StorageHost(models.Model):
    """A volume of a storage proxy: ``<proxy>:<volume>`` in Backend.AI's naming
    (``local:volume1``); the proxy is the ``StorageProxy`` named by the prefix."""

    name = models.CharField(max_length=128, primary_key=True,
                            help_text="<proxy>:<volume>, e.g. local:volume1")
    backend = models.CharField(max_length=16, choices=StorageBackend.choices, default=StorageBackend.VFS)
    path = models.CharField(
        max_length=1024, blank=True,
        help_text="The volume's directory on the proxy's host, as the proxy reports it (kept from its "
                  "GET /volumes answer; the manager never opens it).")
    mount_path = models.CharField(
        max_length=1024, blank=True,
        help_text="Where agents see the same directory tree. Empty: the proxy's path (agents on the proxy's host).")
    capabilities = models.JSONField(default=list, blank=True, help_text='e.g. ["vfolder", "quota"]')
    default_quota = models.BigIntegerField(
        default=-1, help_text="Bytes per quota scope when the resource policy sets none; negative is unlimited.")
    is_active = models.BooleanField(default=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @property
    def proxy_name(self) -> str:
        return self.name.partition(":")[0]

    @property
    def volume_name(self) -> str:
        return self.name.split(":", 1)[-1]

    @property
    def root(self) -> Path:
        """The volume's directory on the proxy's host as the proxy reported it (for mounts on
        agents that share it and for display; never opened by the manager)."""
        return Path(self.path)


class VFolder(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    host = models.ForeignKey(StorageHost, on_delete=models.PROTECT, related_name="vfolders")
    domain = models.ForeignKey("accounts.Domain", on_delete=models.CASCADE, related_name="vfolders")
    quota_scope_id = models.CharField(max_length=64, db_index=True, help_text="user:<uuid> or project:<uuid>")
    name = models.CharField(max_length=64)
    usage_mode = models.CharField(max_length=16, choices=UsageMode.choices, default=UsageMode.GENERAL)
    permission = models.CharField(max_length=2, choices=VFolderPermission.choices, default=VFolderPermission.READ_WRITE)
    ownership_type = models.CharField(max_length=8, choices=OwnershipType.choices, default=OwnershipType.USER)
    user = models.ForeignKey("accounts.User", null=True, blank=True, on_delete=models.CASCADE, related_name="vfolders")
    project = models.ForeignKey("accounts.Project", null=True, blank=True, on_delete=models.CASCADE,
                                related_name="vfolders")
    creator = models.EmailField(max_length=64, blank=True, help_text="Email of the user who created it")
    cloneable = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=VFolderStatus.choices, default=VFolderStatus.READY, db_index=True)
    status_history = models.JSONField(default=list, blank=True)
    status_changed = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name", "created_at"]
        verbose_name = "virtual folder"
        constraints = [
            models.CheckConstraint(
                name="vfolder_owner_matches_ownership",
                condition=(Q(ownership_type="user", user__isnull=False, project__isnull=True)
                           | Q(ownership_type="group", user__isnull=True, project__isnull=False)),
            ),
            models.UniqueConstraint(
                fields=["user", "name"], name="vfolder_name_unique_per_user",
                condition=Q(ownership_type="user") & ~Q(status__in=list(DELETED_STATUSES)),
            ),
            models.UniqueConstraint(
                fields=["project", "name"], name="vfolder_name_unique_per_project",
                condition=Q(ownership_type="group") & ~Q(status__in=list(DELETED_STATUSES)),
            ),
        ]
        indexes = [models.Index(fields=["domain", "status"], name="vfolder_domain_status")]

    def __str__(self):
        return f"{self.name} ({self.id.hex[:8]})"

    @property
    def is_project_folder(self) -> bool:
        return self.ownership_type == OwnershipType.GROUP

    @property
    def vfid(self) -> str:
        """The folder's id on its storage proxy: ``<quota scope id>/<folder uuid hex>``."""
        return f"{self.quota_scope_id}/{self.id.hex}"

    @property
    def relative_path(self) -> str:
        """The folder's directory under its host: ``<scope>/<hex[0:2]>/<hex[2:4]>/<hex[4:]>``."""
        kind, _, ident = self.quota_scope_id.partition(":")
        hexid = self.id.hex
        return f"{kind}-{uuid.UUID(ident).hex}/{hexid[0:2]}/{hexid[2:4]}/{hexid[4:]}"

    @property
    def path(self) -> Path:
        """The folder's directory on its proxy's host (the volume path the proxy reported); the
        manager never opens it (agents see it at ``vfolders.services.mounts.agent_path``)."""
        return self.host.root / self.relative_path

    @property
    def owner_label(self) -> str:
        if self.is_project_folder:
            return f"project {self.project.name}" if self.project_id else "project"
        return self.user.email if self.user_id else ""


class VFolderGrant(models.Model):
    """A per-user permission on a folder (Backend.AI's ``vfolder_permissions``): from an
    accepted invitation (user folders) or from sharing (project folders, overriding
    the folder's permission for that member)."""

    vfolder = models.ForeignKey(VFolder, on_delete=models.CASCADE, related_name="grants")
    user = models.ForeignKey("accounts.User", on_delete=models.CASCADE, related_name="vfolder_grants")
    permission = models.CharField(max_length=2, choices=VFolderPermission.choices, default=VFolderPermission.READ_WRITE)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "folder permission"
        constraints = [models.UniqueConstraint(fields=["vfolder", "user"], name="vfolder_grant_unique")]

    def __str__(self):
        return f"{self.user} {self.permission} on {self.vfolder}"


class VFolderInvitation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    vfolder = models.ForeignKey(VFolder, on_delete=models.CASCADE, related_name="invitations")
    inviter = models.ForeignKey("accounts.User", on_delete=models.CASCADE, related_name="sent_vfolder_invitations")
    invitee = models.ForeignKey("accounts.User", on_delete=models.CASCADE, related_name="vfolder_invitations")
    permission = models.CharField(max_length=2, choices=VFolderPermission.choices, default=VFolderPermission.READ_WRITE)
    state = models.CharField(max_length=10, choices=InvitationState.choices, default=InvitationState.PENDING,
                             db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "invitation"
        constraints = [
            models.UniqueConstraint(fields=["vfolder", "invitee"], condition=Q(state="pending"),
                                    name="vfolder_one_pending_invitation"),
        ]

    def __str__(self):
        return f"{self.inviter} → {self.invitee}: {self.vfolder} ({self.state})"


class QuotaScope(models.Model):
    """The last measured usage of one quota scope on one host, and the hard limit an
    admin set for it (GraphQL ``set_quota_scope``).  Without one, the limit is read
    live from the user's or project's resource policy (then the host's default quota);
    usage is re-measured from the disk (never adjusted by increments)."""

    host = models.ForeignKey(StorageHost, on_delete=models.CASCADE, related_name="quota_scopes")
    quota_scope_id = models.CharField(max_length=64)
    limit_bytes = models.BigIntegerField(
        null=True, blank=True,
        help_text="Hard limit set for this scope (bytes). Empty: the resource policy's max_quota_scope_size, "
                  "else the host's default quota.")
    usage_bytes = models.BigIntegerField(default=0)
    usage_files = models.BigIntegerField(default=0)
    measured_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["host", "quota_scope_id"]
        verbose_name = "quota scope usage"
        verbose_name_plural = "quota scope usage"
        constraints = [models.UniqueConstraint(fields=["host", "quota_scope_id"], name="quota_scope_unique")]

    def __str__(self):
        return f"{self.quota_scope_id} on {self.host_id}"
