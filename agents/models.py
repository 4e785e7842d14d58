"""Scaling groups, agents, container registries, images and agent tokens."""
from __future__ import annotations

import uuid

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

from accounts.models import Domain, Keypair, Project, slug_validator
from backendai.daemons import DaemonToken, MovesByMap, StatusMoves

agent_id_validator = RegexValidator(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", "1-64 letters, digits, '.', '_' or '-'.")


class SchedulerName(models.TextChoices):
    FIFO = "fifo", "FIFO"
    LIFO = "lifo", "LIFO"
    DRF = "drf", "DRF (dominant resource fairness)"


class AgentSelectionStrategy(models.TextChoices):
    DISPERSED = "dispersed", "Dispersed"
    CONCENTRATED = "concentrated", "Concentrated"
    ROUNDROBIN = "roundrobin", "Round-robin"
    LEGACY = "legacy", "Legacy"


SESSION_TYPES = ("interactive", "batch", "inference")


SCHEDULER_OPT_KEYS = {"allowed_session_types", "pending_timeout", "config", "agent_selection_strategy",
                      "agent_selector_config"}


def validate_scheduler_opts(opts) -> dict:
    """Normalise a scaling group's scheduler options or raise ValueError naming the bad key."""
    if not isinstance(opts, dict):
        raise ValueError("scheduler options must be a JSON object")
    unknown = set(opts) - SCHEDULER_OPT_KEYS
    if unknown:
        raise ValueError(f"unknown scheduler option(s): {', '.join(sorted(unknown))}")
    clean = dict(opts)
    types = clean.setdefault("allowed_session_types", ["interactive", "batch"])
    if not isinstance(types, list) or not types or any(t not in SESSION_TYPES for t in types):
        raise ValueError(f"allowed_session_types must be a non-empty list of {', '.join(SESSION_TYPES)}")
    timeout = clean.setdefault("pending_timeout", 0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
        raise ValueError("pending_timeout must be a number of seconds >= 0 (0 disables it)")
    config = clean.setdefault("config", {})
    if not isinstance(config, dict):
        raise ValueError("config must be a JSON object")
    retries = config.get("num_retries_to_skip", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError("config.num_retries_to_skip must be an integer >= 0")
    strategy = clean.setdefault("agent_selection_strategy", AgentSelectionStrategy.DISPERSED.value)
    if strategy not in AgentSelectionStrategy.values:
        raise ValueError(f"agent_selection_strategy must be one of {', '.join(AgentSelectionStrategy.values)}")
    clean.setdefault("agent_selector_config", {})
    return clean


class ScalingGroup(models.Model):
    """A resource group: a set of agents scheduled together under one policy."""

    name = models.CharField(max_length=64, primary_key=True, validators=[slug_validator])
    description = models.TextField(blank=True)
    is_active = models.BooleanField(default=True)
    is_public = models.BooleanField(default=True, help_text="Visible to non-admin users.")
    created_at = models.DateTimeField(auto_now_add=True)
    scheduler = models.CharField(max_length=16, choices=SchedulerName.choices, default=SchedulerName.FIFO)
    scheduler_opts = models.JSONField(
        default=dict, blank=True,
        help_text='{"allowed_session_types": [...], "pending_timeout": seconds, "config": {"num_retries_to_skip": n}, '
                  '"agent_selection_strategy": "dispersed|concentrated|roundrobin|legacy"}',
    )
    wsproxy_addr = models.CharField(max_length=1024, blank=True, help_text="App proxy coordinator address.")
    wsproxy_api_token = models.CharField(max_length=256, blank=True)
    driver = models.CharField(max_length=64, default="static")
    driver_opts = models.JSONField(default=dict, blank=True)
    use_host_network = models.BooleanField(default=False)
    domains = models.ManyToManyField(Domain, blank=True, related_name="scaling_groups", through="ScalingGroupForDomain")
    projects = models.ManyToManyField(Project, blank=True, related_name="scaling_groups", through="ScalingGroupForProject")
    keypairs = models.ManyToManyField(Keypair, blank=True, related_name="scaling_groups", through="ScalingGroupForKeypair")

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def clean(self):
        try:
            self.scheduler_opts = validate_scheduler_opts(self.scheduler_opts)
        except ValueError as exc:
            raise ValidationError({"scheduler_opts": str(exc)}) from None

    @property
    def opts(self) -> dict:
        try:
            return validate_scheduler_opts(self.scheduler_opts or {})
        except ValueError:
            return validate_scheduler_opts({})


class ScalingGroupForDomain(models.Model):
    scaling_group = models.ForeignKey(ScalingGroup, on_delete=models.CASCADE)
    domain = models.ForeignKey(Domain, on_delete=models.CASCADE)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["scaling_group", "domain"], name="sgroup_domain_unique")]
        verbose_name = "allowed domain"

    def __str__(self):
        return f"{self.scaling_group_id} \u2194 domain {self.domain_id}"


class ScalingGroupForProject(models.Model):
    scaling_group = models.ForeignKey(ScalingGroup, on_delete=models.CASCADE)
    project = models.ForeignKey(Project, on_delete=models.CASCADE)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["scaling_group", "project"], name="sgroup_project_unique")]
        verbose_name = "allowed project"

    def __str__(self):
        return f"{self.scaling_group_id} \u2194 project {self.project}"


class ScalingGroupForKeypair(models.Model):
    scaling_group = models.ForeignKey(ScalingGroup, on_delete=models.CASCADE)
    keypair = models.ForeignKey(Keypair, on_delete=models.CASCADE)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["scaling_group", "keypair"], name="sgroup_keypair_unique")]
        verbose_name = "allowed keypair"

    def __str__(self):
        return f"{self.scaling_group_id} \u2194 keypair {self.keypair_id}"


class AgentStatus(models.TextChoices):
    ALIVE = "ALIVE", "Alive"
    LOST = "LOST", "Lost"
    RESTARTING = "RESTARTING", "Restarting"
    TERMINATED = "TERMINATED", "Terminated"


# Which agent status may move to which, as the code moves them: a sync revives any
# other status (``agents.services.record_heartbeat``), ``mark_lost_agents`` loses
# only ALIVE agents, a clean shutdown ends any agent not ended yet.  Nothing moves an
# agent to RESTARTING today (the status exists for the reference's data model).
AGENT_MOVES = StatusMoves("agent", {
    AgentStatus.ALIVE: {AgentStatus.LOST, AgentStatus.TERMINATED},
    AgentStatus.LOST: {AgentStatus.ALIVE, AgentStatus.TERMINATED},
    AgentStatus.RESTARTING: {AgentStatus.ALIVE, AgentStatus.TERMINATED},
    AgentStatus.TERMINATED: {AgentStatus.ALIVE},
})


class Agent(MovesByMap, models.Model):
    """One agent daemon (a compute node).  Its status changes only through
    ``move_to`` or ``AGENT_MOVES.update`` (the map above)."""

    status_moves = AGENT_MOVES

    id = models.CharField(max_length=64, primary_key=True, validators=[agent_id_validator])
    status = models.CharField(max_length=16, choices=AgentStatus.choices, default=AgentStatus.ALIVE, db_index=True)
    status_changed = models.DateTimeField(null=True, blank=True)
    region = models.CharField(max_length=64, blank=True)
    scaling_group = models.ForeignKey(ScalingGroup, on_delete=models.PROTECT, related_name="agents")
    schedulable = models.BooleanField(default=True)
    available_slots = models.JSONField(default=dict, blank=True)
    occupied_slots = models.JSONField(default=dict, blank=True)
    slot_types = models.JSONField(default=dict, blank=True)
    addr = models.CharField(max_length=128, blank=True, help_text="Address where the agent's published ports are reached.")
    public_host = models.CharField(max_length=256, blank=True)
    metrics_address = models.CharField(max_length=262, blank=True,
                                       help_text="host:port of the agent's /metrics (empty: it serves none).")
    version = models.CharField(max_length=64, blank=True)
    architecture = models.CharField(max_length=32, default="x86_64")
    backend = models.CharField(max_length=16, default="docker")
    compute_plugins = models.JSONField(default=dict, blank=True)
    devices = models.JSONField(default=list, blank=True)
    live_stat = models.JSONField(default=dict, blank=True)
    first_contact = models.DateTimeField(auto_now_add=True)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    lost_at = models.DateTimeField(null=True, blank=True)
    auto_terminate_abusing_kernel = models.BooleanField(default=False)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return self.id


class RegistryType(models.TextChoices):
    DOCKER = "docker", "Docker registry (v2)"
    HARBOR2 = "harbor2", "Harbor 2"
    LOCAL = "local", "Local (agents' own images)"


class ContainerRegistry(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    registry_name = models.CharField(max_length=256, unique=True, help_text="Host[:port] as it appears in image names.")
    url = models.URLField(max_length=512, help_text="e.g. https://registry.example.com")
    type = models.CharField(max_length=16, choices=RegistryType.choices, default=RegistryType.DOCKER)
    project = models.CharField(max_length=256, blank=True, help_text="Only rescan repositories under this prefix.")
    username = models.CharField(max_length=256, blank=True)
    password = models.CharField(max_length=512, blank=True)
    ssl_verify = models.BooleanField(default=True)
    is_global = models.BooleanField(default=True)
    last_scanned_at = models.DateTimeField(null=True, blank=True)
    last_scan_result = models.TextField(blank=True)

    class Meta:
        ordering = ["registry_name"]
        verbose_name_plural = "container registries"

    def __str__(self):
        return self.registry_name


class ImageType(models.TextChoices):
    COMPUTE = "compute", "Compute"
    SYSTEM = "system", "System"
    SERVICE = "service", "Service"


class Image(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=512, help_text="Canonical reference: [registry/]repository:tag")
    registry = models.ForeignKey(ContainerRegistry, null=True, blank=True, on_delete=models.SET_NULL, related_name="images")
    registry_name = models.CharField(max_length=256, blank=True, help_text="Empty for agent-local images.")
    repository = models.CharField(max_length=512)
    tag = models.CharField(max_length=128)
    architecture = models.CharField(max_length=32, default="x86_64")
    config_digest = models.CharField(max_length=100, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    is_local = models.BooleanField(default=False)
    type = models.CharField(max_length=16, choices=ImageType.choices, default=ImageType.COMPUTE)
    labels = models.JSONField(default=dict, blank=True)
    resources = models.JSONField(default=dict, blank=True, help_text='{slot: {"min": "1", "max": null}} from labels')
    service_ports = models.JSONField(default=list, blank=True)
    accelerators = models.CharField(max_length=128, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)
    agents = models.ManyToManyField(Agent, blank=True, related_name="images", help_text="Agents that hold it locally.")

    class Meta:
        ordering = ["name", "architecture"]
        constraints = [models.UniqueConstraint(fields=["name", "architecture"], name="image_name_arch_unique")]

    def __str__(self):
        return f"{self.name} ({self.architecture})"


class ImageAlias(models.Model):
    alias = models.CharField(max_length=256, unique=True)
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="aliases")

    class Meta:
        ordering = ["alias"]
        verbose_name_plural = "image aliases"

    def __str__(self):
        return f"{self.alias} → {self.image.name}"


class AgentToken(DaemonToken):
    """A credential for agent daemons, bound to one agent id or one scaling group."""

    agent_id = models.CharField(max_length=64, blank=True, validators=[agent_id_validator],
                                help_text="Bind to one agent id (leave empty for a scaling-group token).")
    scaling_group = models.ForeignKey(ScalingGroup, null=True, blank=True, on_delete=models.CASCADE, related_name="tokens")

    @property
    def scope(self) -> str:
        return f"agent {self.agent_id}" if self.agent_id else f"group {self.scaling_group_id}"
