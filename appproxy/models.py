"""App proxy coordinator: workers, their tokens, circuits and circuit tombstones.

The database is the truth.  A worker holds a copy of its circuit table and
keeps it in step with ``revision``: every change to a worker's circuits takes
the next number of that worker's counter and stamps it on the circuit (or on
a tombstone when the circuit is removed), so ``GET .../circuits?since=N``
answers exactly what changed after N.  State changes go through
``appproxy.services`` only.
"""
from __future__ import annotations

import uuid

from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from backendai.daemons import DaemonToken, MovesByMap, StatusMoves

authority_validator = RegexValidator(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", "1-64 letters, digits, '.', '_' or '-'.")
port_validators = [MinValueValidator(1), MaxValueValidator(65535)]


class FrontendMode(models.TextChoices):
    PORT = "port", "Port (one port per circuit)"
    WILDCARD = "wildcard", "Wildcard subdomain"


class Protocol(models.TextChoices):
    HTTP = "http", "HTTP (with websockets)"
    TCP = "tcp", "Raw TCP"


class AppMode(models.TextChoices):
    INTERACTIVE = "interactive", "Interactive (a session's app, opened with a permit)"
    INFERENCE = "inference", "Inference (a model-serving endpoint, opened with an API token)"


class RouteHealthStatus(models.TextChoices):
    UNKNOWN = "unknown", "Not checked yet"
    HEALTHY = "healthy", "Healthy"
    UNHEALTHY = "unhealthy", "Unhealthy"


class WorkerStatus(models.TextChoices):
    ALIVE = "ALIVE", "Alive"
    LOST = "LOST", "Lost"
    TERMINATED = "TERMINATED", "Terminated"


# Which worker status may move to which, as the coordinator moves them: registering
# or a heartbeat revives a LOST or TERMINATED worker, ``mark_lost_workers`` loses
# only ALIVE ones, a clean shutdown ends any worker not ended yet.
WORKER_MOVES = StatusMoves("proxy worker", {
    WorkerStatus.ALIVE: {WorkerStatus.LOST, WorkerStatus.TERMINATED},
    WorkerStatus.LOST: {WorkerStatus.ALIVE, WorkerStatus.TERMINATED},
    WorkerStatus.TERMINATED: {WorkerStatus.ALIVE},
})


class Worker(MovesByMap, models.Model):
    """One proxy worker (``python -m appproxy.worker``), identified by its authority.
    Its status changes only through ``move_to`` or ``WORKER_MOVES.update`` (the map above)."""

    status_moves = WORKER_MOVES

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    authority = models.CharField(max_length=64, unique=True, validators=[authority_validator],
                                 help_text="The worker's stable name (--name).")
    frontend_mode = models.CharField(max_length=16, choices=FrontendMode.choices, default=FrontendMode.PORT)
    protocols = models.JSONField(default=list, blank=True, help_text='Protocols it carries: ["http", "tcp"].')
    scheme = models.CharField(max_length=8, default="http", choices=[("http", "http"), ("https", "https")],
                              help_text="Scheme users reach the apps with.")
    advertised_host = models.CharField(max_length=255, help_text="Host name users reach port-mode apps at.")
    api_endpoint = models.CharField(max_length=512, help_text="Public base URL of the worker's setup endpoint.")
    hint_url = models.CharField(max_length=512, blank=True,
                                help_text="Where the coordinator POSTs 'sync now' hints (empty: no pushes).")
    metrics_address = models.CharField(max_length=262, blank=True,
                                       help_text="host:port of the worker's /metrics (empty: not reported).")
    port_range_start = models.PositiveIntegerField(null=True, blank=True, validators=port_validators)
    port_range_end = models.PositiveIntegerField(null=True, blank=True, validators=port_validators)
    wildcard_domain = models.CharField(max_length=255, blank=True, help_text="e.g. apps.example.com")
    wildcard_port = models.PositiveIntegerField(null=True, blank=True, validators=port_validators,
                                                help_text="The shared traffic port of a wildcard worker.")
    capacity = models.PositiveIntegerField(default=0, help_text="Most circuits it takes (0: the size of its port "
                                                                "range, or unlimited for wildcard workers).")
    occupancy = models.PositiveIntegerField(default=0, editable=False, help_text="Circuits it carries (recomputed).")
    scaling_group = models.ForeignKey("agents.ScalingGroup", null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="proxy_workers", help_text="Serve only this group (empty: all).")
    schedulable = models.BooleanField(default=True, help_text="Takes new circuits.")
    status = models.CharField(max_length=16, choices=WorkerStatus.choices, default=WorkerStatus.ALIVE, db_index=True)
    status_changed = models.DateTimeField(null=True, blank=True)
    first_contact = models.DateTimeField(auto_now_add=True)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    lost_at = models.DateTimeField(null=True, blank=True)
    version = models.CharField(max_length=64, blank=True)
    failed_ports = models.JSONField(default=list, blank=True, editable=False,
                                    help_text="Ports the worker reported it could not listen on.")
    secret = models.CharField(max_length=128, editable=False,
                              help_text="Signs setup tokens and permits; handed to the worker at registration.")
    revision = models.BigIntegerField(default=0, editable=False, help_text="Last circuit-table revision.")
    horizon = models.BigIntegerField(default=0, editable=False,
                                     help_text="Tombstones up to this revision are pruned: older syncs get the full table.")

    class Meta:
        ordering = ["authority"]
        constraints = [
            models.CheckConstraint(name="worker_port_range_order", condition=Q(port_range_start__isnull=True) | Q(
                port_range_end__isnull=True) | Q(port_range_start__lte=models.F("port_range_end"))),
        ]

    def __str__(self):
        return self.authority

    @property
    def range_size(self) -> int:
        if self.port_range_start is None or self.port_range_end is None:
            return 0
        return self.port_range_end - self.port_range_start + 1

    @property
    def effective_capacity(self) -> int | None:
        """How many circuits it can take (None: unlimited)."""
        if self.frontend_mode == FrontendMode.PORT:
            return min(self.capacity, self.range_size) if self.capacity else self.range_size
        return self.capacity or None


class WorkerToken(DaemonToken):
    """A credential for proxy workers, optionally bound to one authority.  Only its hash is kept."""

    authority = models.CharField(max_length=64, blank=True, validators=[authority_validator],
                                 help_text="Bind to one worker name (empty: any worker).")

    @property
    def scope(self) -> str:
        return f"worker {self.authority}" if self.authority else "any worker"


class Circuit(models.Model):
    """One route: a session's app, reached through one worker at a port or a subdomain.

    An *inference* circuit (``app_mode = inference``) belongs to a model-serving endpoint
    (``endpoint_id``) instead of one session: it spreads requests over ``routes`` (one per
    replica: ``{route_id, session_id, kernel_id, host, port, traffic_ratio, active}``) by
    weighted random choice among the routes the worker's health checks (``health_check``)
    find healthy, and admits callers with an API token signed with ``token_secret``."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey("compute_sessions.Session", null=True, blank=True, on_delete=models.CASCADE,
                                related_name="circuits", help_text="Empty for inference circuits.")
    app_mode = models.CharField(max_length=16, choices=AppMode.choices, default=AppMode.INTERACTIVE)
    endpoint_id = models.UUIDField(null=True, blank=True, unique=True,
                                   help_text="The model-serving endpoint of an inference circuit.")
    routes = models.JSONField(default=list, blank=True,
                              help_text="Inference: the replicas' targets and traffic ratios.")
    health_check = models.JSONField(default=dict, blank=True,
                                    help_text="Inference: {path, interval, timeout, threshold, initial_delay}.")
    token_secret = models.CharField(max_length=128, blank=True, help_text="Inference: verifies API tokens.")
    kernel = models.ForeignKey("compute_sessions.Kernel", null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="circuits")
    app = models.CharField(max_length=64)
    protocol = models.CharField(max_length=8, choices=Protocol.choices, default=Protocol.HTTP)
    target_host = models.CharField(max_length=255)
    target_port = models.PositiveIntegerField(validators=port_validators)
    container_port = models.PositiveIntegerField(null=True, blank=True, validators=port_validators,
                                                 help_text="The service port inside the container (empty: a "
                                                           "target set by hand, never re-targeted).")
    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="circuits")
    port = models.PositiveIntegerField(null=True, blank=True, validators=port_validators)
    subdomain = models.CharField(max_length=63, blank=True)
    owner = models.ForeignKey("accounts.User", on_delete=models.CASCADE, related_name="circuits")
    granted_users = models.JSONField(default=list, blank=True,
                                     help_text="Other users (admins) whose permits this circuit accepts.")
    open_to_public = models.BooleanField(default=False, help_text="No permit needed (model serving).")
    allowed_client_ips = models.JSONField(default=list, blank=True,
                                          help_text="IP addresses or CIDR networks allowed in (empty: any).")
    envs = models.JSONField(default=dict, blank=True)
    arguments = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_access = models.DateTimeField(null=True, blank=True)
    revision = models.BigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["session", "app"], name="circuit_session_app_unique"),
            models.UniqueConstraint(fields=["worker", "port"], condition=Q(port__isnull=False),
                                    name="circuit_worker_port_unique"),
            models.UniqueConstraint(fields=["worker", "subdomain"], condition=~Q(subdomain=""),
                                    name="circuit_worker_subdomain_unique"),
        ]
        indexes = [models.Index(fields=["worker", "revision"], name="circuit_worker_revision")]

    def __str__(self):
        where = f":{self.port}" if self.port else self.subdomain
        of = f"endpoint {self.endpoint_id}" if self.endpoint_id else str(self.session_id)
        return f"{self.app} of {of} via {self.worker_id}{where}"


class RouteHealth(models.Model):
    """What the worker carrying an inference circuit last found about one of its routes
    (reported when a route flips and with every heartbeat)."""

    circuit = models.ForeignKey(Circuit, on_delete=models.CASCADE, related_name="route_health")
    route_id = models.UUIDField()
    status = models.CharField(max_length=16, choices=RouteHealthStatus.choices, default=RouteHealthStatus.UNKNOWN)
    changed_at = models.DateTimeField(null=True, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    failures = models.PositiveIntegerField(default=0, help_text="Failed checks in a row.")
    last_error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["circuit", "route_id"]
        constraints = [models.UniqueConstraint(fields=["circuit", "route_id"], name="route_health_unique")]

    def __str__(self):
        return f"route {self.route_id} of {self.circuit_id}: {self.status}"


class InferenceSample(models.Model):
    """The worker's cumulative counters for one inference circuit at one moment (each
    heartbeat): rates and mean latency over a window are differences of two samples."""

    circuit = models.ForeignKey(Circuit, on_delete=models.CASCADE, related_name="samples")
    endpoint_id = models.UUIDField(db_index=True)
    worker = models.ForeignKey(Worker, null=True, on_delete=models.SET_NULL, related_name="+")
    at = models.DateTimeField(db_index=True)
    requests_total = models.BigIntegerField(default=0)
    errors_total = models.BigIntegerField(default=0)
    inflight = models.PositiveIntegerField(default=0)
    latency_sum = models.FloatField(default=0.0, help_text="Seconds, over all requests so far.")
    latency_count = models.BigIntegerField(default=0)
    latency_buckets = models.JSONField(default=dict, blank=True, help_text="Cumulative {upper bound: count}.")
    healthy_routes = models.PositiveIntegerField(default=0)
    routes = models.JSONField(default=dict, blank=True, help_text="{route_id: {requests, errors}} cumulative.")

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["endpoint_id", "at"], name="sample_endpoint_at")]

    def __str__(self):
        return f"{self.endpoint_id} at {self.at:%H:%M:%S}: {self.requests_total} requests"


class CircuitTombstone(models.Model):
    """A removed circuit, kept so incremental syncs learn about the removal."""

    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="tombstones")
    circuit_id = models.UUIDField()
    revision = models.BigIntegerField()
    removed_at = models.DateTimeField(auto_now_add=True)
    reason = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-revision"]
        indexes = [models.Index(fields=["worker", "revision"], name="tombstone_worker_revision")]

    def __str__(self):
        return f"{self.circuit_id} removed at r{self.revision} ({self.reason})"


class SetupToken(models.Model):
    """An issued setup link, remembered by its hash until it expires.

    Workers redeem a link through the coordinator, which marks the row used in
    one guarded ``UPDATE``: whichever worker, whatever restarts, a link works
    once.  Rows are pruned by the sweep after they expire.
    """

    token_hash = models.CharField(max_length=64, primary_key=True, editable=False)
    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="setup_tokens")
    circuit = models.ForeignKey(Circuit, on_delete=models.CASCADE, related_name="setup_tokens")
    user_id = models.CharField(max_length=64)
    issued_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-issued_at"]

    def __str__(self):
        state = "used" if self.used_at else "unused"
        return f"setup link for circuit {self.circuit_id} ({state})"
