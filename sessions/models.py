"""Compute sessions and their kernels (one container each).

Status fields are changed only through ``sessions.services`` using the maps in
``sessions.lifecycle``."""
from __future__ import annotations

import logging
import uuid

from django.db import models
from django.utils import timezone

from sessions.lifecycle import (
    TERMINAL_KERNEL,
    KernelStatus,
    SessionStatus,
    history_entry,
    kernel_can_move,
    session_path,
)

log = logging.getLogger(__name__)

# what the partial status indexes hold: every status but the final ones (sorted: a stable migration)
LIVE_STATUSES = sorted(s.value for s in SessionStatus if s not in (SessionStatus.TERMINATED, SessionStatus.CANCELLED))
LIVE_KERNEL_STATUSES = sorted(s.value for s in KernelStatus if s not in TERMINAL_KERNEL)


class SessionType(models.TextChoices):
    INTERACTIVE = "interactive", "Interactive"
    BATCH = "batch", "Batch"
    INFERENCE = "inference", "Inference"
    SYSTEM = "system", "System"


class ClusterMode(models.TextChoices):
    SINGLE_NODE = "single-node", "Single node"
    MULTI_NODE = "multi-node", "Multi node"


class SessionResult(models.TextChoices):
    UNDEFINED = "undefined", "Undefined"
    SUCCESS = "success", "Success"
    FAILURE = "failure", "Failure"


class Session(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    creation_id = models.CharField(max_length=32, blank=True)
    name = models.CharField(max_length=64)  # indexed with access_key (Meta.indexes)
    session_type = models.CharField(max_length=16, choices=SessionType.choices, default=SessionType.INTERACTIVE)
    priority = models.PositiveSmallIntegerField(default=10)
    cluster_mode = models.CharField(max_length=16, choices=ClusterMode.choices, default=ClusterMode.SINGLE_NODE)
    cluster_size = models.PositiveSmallIntegerField(default=1)
    agent_ids = models.JSONField(default=list, blank=True)
    scaling_group = models.ForeignKey("agents.ScalingGroup", null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="sessions", db_index=False)  # see Meta.indexes
    domain = models.ForeignKey("accounts.Domain", on_delete=models.CASCADE, related_name="sessions", db_index=False)
    project = models.ForeignKey("accounts.Project", on_delete=models.CASCADE, related_name="sessions")
    user = models.ForeignKey("accounts.User", on_delete=models.CASCADE, related_name="sessions")
    access_key = models.ForeignKey("accounts.Keypair", null=True, on_delete=models.SET_NULL, related_name="sessions",
                                   db_column="access_key", db_index=False)
    image = models.CharField(max_length=512)
    architecture = models.CharField(max_length=32, default="x86_64")
    tag = models.CharField(max_length=64, blank=True)
    requested_slots = models.JSONField(default=dict, blank=True)
    occupying_slots = models.JSONField(default=dict, blank=True)
    vfolder_mounts = models.JSONField(default=list, blank=True)
    environ = models.JSONField(default=dict, blank=True)
    resource_opts = models.JSONField(default=dict, blank=True)
    bootstrap_script = models.TextField(blank=True)
    startup_command = models.TextField(blank=True)
    batch_timeout = models.PositiveIntegerField(null=True, blank=True, help_text="Seconds")
    callback_url = models.URLField(max_length=1024, blank=True)
    starts_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    terminated_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=20, choices=[(s.value, s.value) for s in SessionStatus],
                              default=SessionStatus.PENDING)
    status_changed = models.DateTimeField(null=True, blank=True)
    status_info = models.CharField(max_length=64, blank=True)
    status_data = models.JSONField(default=dict, blank=True)
    status_history = models.JSONField(default=list, blank=True)
    result = models.CharField(max_length=16, choices=SessionResult.choices, default=SessionResult.UNDEFINED)
    num_queries = models.BigIntegerField(default=0)
    last_stat = models.JSONField(null=True, blank=True)
    callbacks_delivered = models.PositiveIntegerField(default=0, help_text="History entries already sent to callback_url.")
    callback_attempts = models.PositiveIntegerField(default=0, help_text="Failed deliveries in a row.")
    callback_next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="No delivery before this time (backoff).")
    callback_last_error = models.CharField(max_length=512, blank=True)
    callback_gave_up_at = models.DateTimeField(null=True, blank=True, help_text="Deliveries stopped after too many failures.")
    last_access = models.DateTimeField(null=True, blank=True, help_text="Last user activity (apps, terminals).")

    class Meta:
        ordering = ["-created_at"]
        # Every index is rewritten when the scheduler (or an agent's report) changes ``status``: a
        # status change is never a HOT update.  So no ``varchar_pattern_ops`` twins (no query runs a
        # prefix LIKE that one could serve: ``icontains`` is UPPER(..) LIKE, and ``match_sessions``'
        # prefix is read among one keypair's sessions), and the status index only covers the live
        # statuses (a finished session leaves it; lists of finished ones go by user/keypair/created_at).
        indexes = [
            # the scheduler's queue (status = PENDING AND scaling_group_id = g), the live-status counts;
            # scaling_group has no index of its own (deleting a group, rare, scans the table)
            models.Index(fields=["status", "scaling_group"], name="session_live_status",
                         condition=models.Q(status__in=LIVE_STATUSES)),
            # a keypair's sessions; a session by name (get_session, rename, enqueue's name clash)
            models.Index(fields=["access_key", "name"], name="session_keypair_name"),
            models.Index(fields=["domain"], name="session_domain"),
        ]

    def __str__(self):
        return f"{self.name} ({self.status})"

    def move_to(self, new_status: str, *, now=None) -> bool:
        """The session's one status door: move to ``new_status`` if the lifecycle
        allows it (directly, or through the progress states an agent's report may
        skip: ``lifecycle.session_path``), appending one history entry per step.
        In memory only (the caller saves under its lock); False when refused or
        already there."""
        if new_status == self.status:
            return False
        path = session_path(self.status, new_status)
        if path is None:
            log.warning("refused session move %s -> %s (session %s)", self.status, new_status, self.pk)
            return False
        now = now or timezone.now()
        self.status = SessionStatus(new_status)
        self.status_changed = now
        self.status_history = [*(self.status_history or []), *(history_entry(s, now) for s in path)]
        return True


class Kernel(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="kernels")
    cluster_role = models.CharField(max_length=16, default="main")
    cluster_idx = models.PositiveSmallIntegerField(default=1)
    local_rank = models.PositiveSmallIntegerField(default=0)
    cluster_hostname = models.CharField(max_length=64, default="main1")
    agent = models.ForeignKey("agents.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="kernels",
                              db_index=False)  # kernel_agent_status leads with it
    agent_addr = models.CharField(max_length=128, blank=True)
    image = models.CharField(max_length=512)
    architecture = models.CharField(max_length=32, default="x86_64")
    registry = models.CharField(max_length=256, blank=True)
    container_id = models.CharField(max_length=128, blank=True)
    requested_slots = models.JSONField(default=dict, blank=True)
    occupied_slots = models.JSONField(default=dict, blank=True)
    resource_opts = models.JSONField(default=dict, blank=True)
    environ = models.JSONField(default=dict, blank=True)
    mounts = models.JSONField(default=list, blank=True)
    kernel_host = models.CharField(max_length=256, blank=True)
    service_ports = models.JSONField(default=list, blank=True)
    preopen_ports = models.JSONField(default=list, blank=True)
    startup_command = models.TextField(blank=True)
    bootstrap_script = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    terminated_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=20, choices=[(s.value, s.value) for s in KernelStatus],
                              default=KernelStatus.PENDING)
    status_changed = models.DateTimeField(null=True, blank=True)
    status_info = models.CharField(max_length=64, blank=True)
    status_data = models.JSONField(default=dict, blank=True)
    status_history = models.JSONField(default=list, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    container_log = models.TextField(blank=True)
    last_stat = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["session_id", "cluster_idx"]
        indexes = [models.Index(fields=["agent", "status"], name="kernel_agent_status"),
                   # the live kernels by status (occupancy, overviews); a finished kernel leaves it
                   models.Index(fields=["status"], name="kernel_live_status",
                                condition=models.Q(status__in=LIVE_KERNEL_STATUSES)),
                   # the usage statistics' "held resources in [start, end)" (sessions/usage_buckets.py)
                   models.Index(fields=["terminated_at", "created_at"], name="kernel_lifetime")]

    def __str__(self):
        return f"{self.id} ({self.status})"

    def move_to(self, new_status: str, *, reason: str | None = None, now=None) -> bool:
        """The kernel's one status door: move to ``new_status`` if the lifecycle
        allows it, appending the history entry (and ``reason`` as its status info;
        an end stamps ``terminated_at``).  In memory only (the caller saves under
        its lock); False when refused or already there."""
        if new_status == self.status:
            return False
        if not kernel_can_move(self.status, new_status):
            log.warning("refused kernel move %s -> %s (kernel %s, session %s)",
                        self.status, new_status, self.pk, self.session_id)
            return False
        now = now or timezone.now()
        self.status = KernelStatus(new_status)
        self.status_changed = now
        self.status_history = [*(self.status_history or []), history_entry(new_status, now)]
        if reason:
            self.status_info = reason[:64]
        if new_status in TERMINAL_KERNEL and self.terminated_at is None:
            self.terminated_at = now
        return True


class SessionDependency(models.Model):
    """``session`` waits until ``depends_on`` is TERMINATED with result SUCCESS."""

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="dependency_links")
    depends_on = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="dependent_links")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["session", "depends_on"], name="session_dependency_unique")]

    def __str__(self):
        return f"{self.session_id} after {self.depends_on_id}"


class ResourcePreset(models.Model):
    """A named resource shape users pick when creating sessions."""

    name = models.CharField(max_length=256, unique=True)
    resource_slots = models.JSONField(default=dict, help_text='{"cpu": "2", "mem": "4294967296"}')
    shared_memory = models.BigIntegerField(null=True, blank=True, help_text="Bytes")
    scaling_group = models.ForeignKey("agents.ScalingGroup", null=True, blank=True, on_delete=models.CASCADE,
                                      related_name="presets", help_text="Only for this group (empty: everywhere).")

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name
