"""Model serving: endpoints (a model folder served by ``replicas`` inference
sessions behind one app-proxy circuit), their routings (one per replica
session), the API tokens that open a private endpoint, autoscaling rules and
the endpoint's event log (scaling decisions, errors, route changes).

The database is the truth.  ``serving.services.reconcile`` converges every
endpoint to its ``replicas`` on a timer; statuses change only through the
services (``ROUTE_MOVES`` for routings, ``LIFECYCLE_MOVES`` for endpoints).
"""
from __future__ import annotations

import uuid

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from backendai.daemons import StatusMoves

MAX_REPLICAS = 64
DEFAULT_MODEL_MOUNT = "/models"


class LifecycleStage(models.TextChoices):
    CREATED = "created", "Created"
    DESTROYING = "destroying", "Destroying"
    DESTROYED = "destroyed", "Destroyed"


LIFECYCLE_MOVES = StatusMoves("endpoint", {
    LifecycleStage.CREATED: {LifecycleStage.DESTROYING, LifecycleStage.DESTROYED},
    LifecycleStage.DESTROYING: {LifecycleStage.DESTROYED},
})


class RouteStatus(models.TextChoices):
    PROVISIONING = "provisioning", "Provisioning"
    HEALTHY = "healthy", "Healthy"
    UNHEALTHY = "unhealthy", "Unhealthy"
    TERMINATING = "terminating", "Terminating"
    FAILED_TO_START = "failed_to_start", "Failed to start"


# provisioning -> healthy once the proxy's health check passes; healthy <-> unhealthy as checks
# pass and fail; any live route may be drained (terminating); a route whose session never
# started (or died before it was ever healthy) failed to start.  failed_to_start is final (the
# row stays as the error record until ``errors/clear``); terminating rows are deleted.
ROUTE_MOVES = StatusMoves("route", {
    RouteStatus.PROVISIONING: {RouteStatus.HEALTHY, RouteStatus.UNHEALTHY, RouteStatus.TERMINATING,
                               RouteStatus.FAILED_TO_START},
    RouteStatus.HEALTHY: {RouteStatus.UNHEALTHY, RouteStatus.TERMINATING, RouteStatus.FAILED_TO_START},
    RouteStatus.UNHEALTHY: {RouteStatus.HEALTHY, RouteStatus.TERMINATING, RouteStatus.FAILED_TO_START},
})

#: statuses of routes that count toward ``replicas``
LIVE_ROUTE = frozenset({RouteStatus.PROVISIONING, RouteStatus.HEALTHY, RouteStatus.UNHEALTHY})


class Endpoint(models.Model):
    """A served model: ``replicas`` inference sessions of ``image`` with ``model`` mounted."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=64)
    created_user = models.ForeignKey("accounts.User", on_delete=models.CASCADE, related_name="created_endpoints")
    session_owner = models.ForeignKey("accounts.User", on_delete=models.CASCADE, related_name="owned_endpoints")
    owner_keypair = models.ForeignKey("accounts.Keypair", null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="endpoints", help_text="The access key replica sessions run as.")
    domain = models.ForeignKey("accounts.Domain", on_delete=models.CASCADE, related_name="endpoints")
    project = models.ForeignKey("accounts.Project", on_delete=models.CASCADE, related_name="endpoints")
    resource_group = models.ForeignKey("agents.ScalingGroup", null=True, blank=True, on_delete=models.SET_NULL,
                                       related_name="endpoints")
    image = models.CharField(max_length=512, help_text="Canonical image reference.")
    architecture = models.CharField(max_length=32, default="x86_64")
    runtime_variant = models.CharField(max_length=32, default="custom")
    model = models.ForeignKey("vfolders.VFolder", null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="endpoints", help_text="The model folder (usage mode 'model').")
    model_mount_destination = models.CharField(max_length=255, default=DEFAULT_MODEL_MOUNT)
    model_definition_path = models.CharField(max_length=255, blank=True,
                                             help_text="In the model folder (empty: model-definition.yaml/.yml).")
    model_definition = models.JSONField(default=dict, blank=True, editable=False,
                                        help_text="The validated definition the replicas run with.")
    resource_slots = models.JSONField(default=dict, blank=True)
    resource_opts = models.JSONField(default=dict, blank=True)
    cluster_mode = models.CharField(max_length=16, default="single-node")
    cluster_size = models.PositiveIntegerField(default=1)
    environ = models.JSONField(default=dict, blank=True)
    extra_mounts = models.JSONField(default=list, blank=True,
                                    help_text='[{"vfolder_id": ..., "mount_destination": ...}]')
    startup_command = models.TextField(blank=True)
    bootstrap_script = models.TextField(blank=True)
    callback_url = models.CharField(max_length=2048, blank=True)
    tag = models.CharField(max_length=64, blank=True)
    replicas = models.PositiveIntegerField(default=1, validators=[MaxValueValidator(MAX_REPLICAS)])
    open_to_public = models.BooleanField(default=False)
    lifecycle_stage = models.CharField(max_length=16, choices=LifecycleStage.choices, default=LifecycleStage.CREATED,
                                       db_index=True)
    url = models.CharField(max_length=512, blank=True)
    circuit_id = models.UUIDField(null=True, blank=True, editable=False, help_text="Its app-proxy circuit.")
    token_secret = models.CharField(max_length=128, editable=False,
                                    help_text="Signs the endpoint's API tokens (rotated to revoke them all).")
    retries = models.PositiveIntegerField(default=0, help_text="Replica starts that failed in a row.")
    next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="Backoff: no new replica before this.")
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    destroyed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["session_owner", "name"], condition=~Q(lifecycle_stage="destroyed"),
                                    name="endpoint_owner_name_live_unique"),
        ]

    def __str__(self):
        return self.name

    @property
    def is_live(self) -> bool:
        return self.lifecycle_stage == LifecycleStage.CREATED


class Routing(models.Model):
    """One replica of an endpoint: its inference session and the share of traffic it takes."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="routings")
    session = models.ForeignKey("compute_sessions.Session", null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="routings")
    session_owner = models.ForeignKey("accounts.User", on_delete=models.CASCADE, related_name="routings")
    domain = models.ForeignKey("accounts.Domain", on_delete=models.CASCADE, related_name="routings")
    project = models.ForeignKey("accounts.Project", on_delete=models.CASCADE, related_name="routings")
    status = models.CharField(max_length=16, choices=RouteStatus.choices, default=RouteStatus.PROVISIONING,
                              db_index=True)
    status_changed = models.DateTimeField(null=True, blank=True)
    traffic_ratio = models.FloatField(default=1.0, validators=[MinValueValidator(0.0), MaxValueValidator(100.0)])
    error_data = models.JSONField(default=dict, blank=True)
    drain_until = models.DateTimeField(null=True, blank=True,
                                       help_text="Terminating: its session is destroyed after this.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self):
        return f"route {self.pk} of {self.endpoint_id} ({self.status})"


class EndpointToken(models.Model):
    """An issued API token; only its digest is kept (the token is shown once)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="tokens")
    created_by = models.ForeignKey("accounts.User", on_delete=models.CASCADE, related_name="endpoint_tokens")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    hint = models.CharField(max_length=16, blank=True, editable=False, help_text="Last characters, to tell apart.")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"token …{self.hint} of {self.endpoint_id}"


class MetricSource(models.TextChoices):
    PROXY = "proxy", "App proxy (requests)"
    KERNEL = "kernel", "Kernel statistics"


class Comparator(models.TextChoices):
    LESS_THAN = "lt", "<"
    LESS_THAN_OR_EQUAL = "le", "<="
    GREATER_THAN = "gt", ">"
    GREATER_THAN_OR_EQUAL = "ge", ">="


class AutoScalingRule(models.Model):
    """When ``metric`` compared with ``threshold`` holds, change replicas by ``step_size``
    (within [min_replicas, max_replicas]), at most once per ``cooldown_seconds``."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="autoscaling_rules")
    metric_source = models.CharField(max_length=16, choices=MetricSource.choices)
    metric_name = models.CharField(max_length=64)
    threshold = models.FloatField()
    comparator = models.CharField(max_length=2, choices=Comparator.choices)
    step_size = models.IntegerField(help_text="Replicas to add (positive) or remove (negative).")
    cooldown_seconds = models.PositiveIntegerField(default=300)
    min_replicas = models.PositiveIntegerField(null=True, blank=True)
    max_replicas = models.PositiveIntegerField(null=True, blank=True)
    window_seconds = models.PositiveIntegerField(default=30, help_text="The metric is measured over this window.")
    enabled = models.BooleanField(default=True)
    last_triggered_at = models.DateTimeField(null=True, blank=True)
    last_value = models.FloatField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self):
        return f"{self.metric_name} {self.get_comparator_display()} {self.threshold}: {self.step_size:+d}"


class EventKind(models.TextChoices):
    SCALE = "scale", "Scaled (by hand)"
    AUTOSCALE = "autoscale", "Scaled (by rule)"
    ROUTE = "route", "Route change"
    ERROR = "error", "Error"
    INFO = "info", "Info"


class EndpointEvent(models.Model):
    """What happened to an endpoint, for its owner to read: scaling decisions (with the
    metric and rule behind them), replicas started, replaced or drained, and errors."""

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    kind = models.CharField(max_length=16, choices=EventKind.choices)
    message = models.TextField()
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.kind}: {self.message[:60]}"
