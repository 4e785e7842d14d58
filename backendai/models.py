"""Manager-wide settings kept in the database: the announcement banner and
the known resource slot types, the heartbeats of singleton processes and background
tasks (``backendai.bgtasks``)."""
import uuid

from django.db import models
from django.utils import timezone


class Announcement(models.Model):
    """A single banner that superadmins set and every client shows."""

    enabled = models.BooleanField(default=False)
    message = models.TextField(blank=True)
    modified_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "announcement"

    def __str__(self):
        return ("[on] " if self.enabled else "[off] ") + (self.message[:60] or "(empty)")


class SlotType(models.TextChoices):
    COUNT = "count", "count"
    BYTES = "bytes", "bytes"
    UNIQUE = "unique", "unique"


class ResourceSlotType(models.Model):
    """A slot name the cluster knows (``cpu``, ``mem``, ``cuda.device`` ...).
    Agents add theirs as they report devices."""

    name = models.CharField(max_length=64, primary_key=True)
    slot_type = models.CharField(max_length=16, choices=SlotType.choices)
    display_name = models.CharField(max_length=64, blank=True)
    display_unit = models.CharField(max_length=16, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return f"{self.name} ({self.slot_type})"


class Heartbeat(models.Model):
    """The last sign of life of a singleton process kind (``beat``), one row per kind.

    The process updates its row as it works (beat: at most every few seconds while it
    ticks); ``backendai.health`` reads the age against ``BEAT_MAX_AGE``."""

    name = models.CharField(max_length=32, primary_key=True)
    last_seen = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True, help_text="when the recording process started")
    pid = models.IntegerField(null=True, blank=True)
    host = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return f"{self.name} (pid {self.pid} on {self.host or '?'}, last seen {self.last_seen:%Y-%m-%d %H:%M:%S})"


class BackgroundTaskStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class BackgroundTask(models.Model):
    """One long job run by a Celery worker and followed over ``GET /events/background-task``
    (``backendai.bgtasks`` owns every write: ``start``, the progress reports, the outcome)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=64, help_text="What the task does, e.g. rescan_images.")
    func_path = models.CharField(max_length=200, help_text="The dotted path of the function the worker runs.")
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    owner_id = models.CharField(max_length=64, blank=True, help_text="Who started it (a user id); they and "
                                                                     "superadmins may follow it.")
    status = models.CharField(max_length=16, choices=BackgroundTaskStatus.choices,
                              default=BackgroundTaskStatus.PENDING, db_index=True)
    current_progress = models.FloatField(default=0)
    total_progress = models.FloatField(default=0)
    message = models.TextField(blank=True)
    errors = models.JSONField(default=list, blank=True, help_text="Problems a finished task reports beside its "
                                                                 "outcome (a rescan's unreadable images).")
    revision = models.PositiveIntegerField(default=0, help_text="Bumped by each report; the stream sends what changed.")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.name} {self.pk} ({self.status})"


class AuditOutcome(models.TextChoices):
    SUCCESS = "success", "success"
    REFUSED = "refused", "refused"
    FAILED = "failed", "failed"


class AuditVia(models.TextChoices):
    API = "api", "REST API"
    GRAPHQL = "graphql", "GraphQL"
    WEBUI = "webui", "web UI"
    ADMIN = "admin", "Django admin"
    DAEMON = "daemon", "daemon"
    TASK = "task", "background task"
    CLI = "cli", "management command"


class AuditEntry(models.Model):
    """Who did what to which object, from where, with which outcome: one row per
    state-changing action (``backendai.actions`` writes every row; nothing changes one).
    Rows older than ``AUDIT_RETENTION_DAYS`` are pruned by ``backendai.tasks.prune_audit_log``."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.CharField(max_length=255, help_text="email, access key, agent:<id> or system")
    actor_id = models.CharField(max_length=64, blank=True, help_text="the user's id when known")
    access_key = models.CharField(max_length=64, blank=True)
    actor_domain = models.CharField(max_length=64, blank=True, db_index=True)
    via = models.CharField(max_length=16, choices=AuditVia.choices)
    entity = models.CharField(max_length=48)
    action = models.CharField(max_length=100, db_index=True, help_text="entity.operation, e.g. session.create")
    target_type = models.CharField(max_length=48, blank=True)
    target = models.CharField(max_length=255, blank=True)
    target_domain = models.CharField(max_length=64, blank=True, db_index=True)
    outcome = models.CharField(max_length=16, choices=AuditOutcome.choices)
    detail = models.CharField(max_length=500, blank=True, help_text="the error type and message when not a success")
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    remote_addr = models.CharField(max_length=64, blank=True)
    user_agent = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "audit log entry"
        verbose_name_plural = "audit log"

    def __str__(self):
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.target} [{self.outcome}]"
