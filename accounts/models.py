"""Users, domains, projects (groups), keypairs and resource policies.

Mirrors the Backend.AI manager's data model (users, keypairs,
keypair/user/project resource policies, domains, groups and their
association).  State changes go through ``accounts.services``.
"""
from __future__ import annotations

import uuid

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models


def validate_image_patterns(value) -> None:
    """``Domain.allowed_images``: a list of image names, each with at most one ``*``, at its end."""
    if not isinstance(value, list) or len(value) > 500:
        raise ValidationError("Give a list of at most 500 image names.")
    for item in value:
        if not isinstance(item, str) or not 0 < len(item.strip()) <= 512 or "*" in item.rstrip("*") \
                or item.count("*") > 1 or any(ch.isspace() for ch in item.strip()):
            raise ValidationError(f"{str(item)[:80]!r} is not an image name (a trailing * is the only wildcard).")

class DefaultForUnspecified(models.TextChoices):
    LIMITED = "LIMITED", "Limited (0 for unlisted slots)"
    UNLIMITED = "UNLIMITED", "Unlimited (∞ for unlisted slots)"


class UserRole(models.TextChoices):
    SUPERADMIN = "superadmin", "Superadmin"
    ADMIN = "admin", "Domain admin"
    USER = "user", "User"
    MONITOR = "monitor", "Monitor"


class UserStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    INACTIVE = "inactive", "Inactive"
    DELETED = "deleted", "Deleted"
    BEFORE_VERIFICATION = "before-verification", "Before verification"


class ProjectType(models.TextChoices):
    GENERAL = "general", "General"
    MODEL_STORE = "model-store", "Model store"


slug_validator = RegexValidator(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$", "Use letters, digits, '.', '_' and '-'.")


class KeypairResourcePolicy(models.Model):
    name = models.CharField(max_length=256, primary_key=True, validators=[slug_validator])
    created_at = models.DateTimeField(auto_now_add=True)
    default_for_unspecified = models.CharField(
        max_length=16, choices=DefaultForUnspecified.choices, default=DefaultForUnspecified.UNLIMITED
    )
    total_resource_slots = models.JSONField(default=dict, blank=True, help_text='Slot map, e.g. {"cpu": "8", "mem": "32g"}')
    max_session_lifetime = models.PositiveIntegerField(default=0, help_text="Seconds; 0 means unlimited.")
    max_concurrent_sessions = models.PositiveIntegerField(default=30)
    max_pending_session_count = models.PositiveIntegerField(null=True, blank=True)
    max_pending_session_resource_slots = models.JSONField(null=True, blank=True)
    max_concurrent_sftp_sessions = models.PositiveIntegerField(default=1)
    max_containers_per_session = models.PositiveIntegerField(default=1)
    idle_timeout = models.BigIntegerField(default=-1, help_text="Seconds; negative uses the global default, 0 is infinite.")
    allowed_vfolder_hosts = models.JSONField(default=dict, blank=True, help_text="{host: [permission, ...]}")

    class Meta:
        verbose_name = "keypair resource policy"
        verbose_name_plural = "keypair resource policies"
        ordering = ["name"]

    def __str__(self):
        return self.name


class UserResourcePolicy(models.Model):
    name = models.CharField(max_length=256, primary_key=True, validators=[slug_validator])
    created_at = models.DateTimeField(auto_now_add=True)
    max_vfolder_count = models.PositiveIntegerField(default=0, help_text="0 means unlimited.")
    max_quota_scope_size = models.BigIntegerField(default=-1, help_text="Bytes; negative means unlimited.")
    max_session_count_per_model_session = models.PositiveIntegerField(default=10)
    max_customized_image_count = models.PositiveIntegerField(default=3)

    class Meta:
        verbose_name = "user resource policy"
        verbose_name_plural = "user resource policies"
        ordering = ["name"]

    def __str__(self):
        return self.name


class ProjectResourcePolicy(models.Model):
    name = models.CharField(max_length=256, primary_key=True, validators=[slug_validator])
    created_at = models.DateTimeField(auto_now_add=True)
    max_vfolder_count = models.PositiveIntegerField(default=0, help_text="0 means unlimited.")
    max_quota_scope_size = models.BigIntegerField(default=-1, help_text="Bytes; negative means unlimited.")

    class Meta:
        verbose_name = "project resource policy"
        verbose_name_plural = "project resource policies"
        ordering = ["name"]

    def __str__(self):
        return self.name


class Domain(models.Model):
    name = models.CharField(max_length=64, primary_key=True, validators=[slug_validator])
    description = models.TextField(blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)
    total_resource_slots = models.JSONField(default=dict, blank=True)
    allowed_vfolder_hosts = models.JSONField(default=dict, blank=True)
    allowed_docker_registries = models.JSONField(
        default=list, blank=True,
        help_text='Registries (host[:port], or "local" for agent-local images) whose images this domain\'s '
                  "sessions may use. Empty: every registry.")
    allowed_images = models.JSONField(
        default=list, blank=True, validators=[validate_image_patterns],
        help_text='Within the allowed registries, the only images this domain\'s sessions may use: canonical '
                  'names ("[registry/]repository:tag"); an entry ending in * takes every name it starts with '
                  '("cr.example.com/stable/*"). Empty: every image of the allowed registries.')
    integration_id = models.CharField(max_length=512, blank=True)
    dotfiles = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Project(models.Model):
    """A group in Backend.AI's terms: users of one domain sharing quota and folders."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=64, validators=[slug_validator])
    description = models.TextField(blank=True)
    is_active = models.BooleanField(default=True)
    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="projects")
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)
    total_resource_slots = models.JSONField(default=dict, blank=True)
    allowed_vfolder_hosts = models.JSONField(default=dict, blank=True)
    dotfiles = models.JSONField(default=list, blank=True)
    resource_policy = models.ForeignKey(ProjectResourcePolicy, on_delete=models.PROTECT, related_name="projects")
    type = models.CharField(max_length=16, choices=ProjectType.choices, default=ProjectType.GENERAL)
    container_registry = models.JSONField(null=True, blank=True)
    integration_id = models.CharField(max_length=512, blank=True)
    members = models.ManyToManyField("User", through="ProjectMembership", related_name="projects", blank=True)

    class Meta:
        ordering = ["domain_id", "name"]
        constraints = [models.UniqueConstraint(fields=["domain", "name"], name="project_name_unique_per_domain")]

    def __str__(self):
        return f"{self.domain_id}/{self.name}"


class UserManager(BaseUserManager):
    use_in_migrations = True
    #: The business rule that creates a user (``accounts.services.create_user``: a main
    #: keypair, the default project), registered by ``AccountsConfig.ready`` so that
    #: models never import services.
    creator = None

    def get_by_natural_key(self, email):
        return self.get(email__iexact=email)

    def create_user(self, email, password=None, **fields):
        return type(self).creator(email=email, password=password, **fields)

    def create_superuser(self, email, password=None, **fields):
        fields["role"] = UserRole.SUPERADMIN
        return self.create_user(email, password, **fields)


class User(AbstractBaseUser):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    username = models.CharField(max_length=64, unique=True)
    email = models.EmailField(max_length=64, unique=True)
    full_name = models.CharField(max_length=64, blank=True)
    description = models.TextField(blank=True)
    need_password_change = models.BooleanField(default=False)
    password_changed_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=32, choices=UserStatus.choices, default=UserStatus.ACTIVE)
    status_info = models.CharField(max_length=64, blank=True)
    role = models.CharField(max_length=16, choices=UserRole.choices, default=UserRole.USER)
    domain = models.ForeignKey(Domain, on_delete=models.PROTECT, related_name="users")
    resource_policy = models.ForeignKey(UserResourcePolicy, on_delete=models.PROTECT, related_name="users")
    allowed_client_ip = models.JSONField(
        default=list, blank=True, help_text="CIDR networks the user may call the API from; empty means anywhere."
    )
    main_keypair = models.ForeignKey(
        "Keypair", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_column="main_access_key"
    )
    sudo_session_enabled = models.BooleanField(default=False)
    integration_id = models.CharField(max_length=512, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS = ["username"]

    class Meta:
        ordering = ["email"]

    def __str__(self):
        return self.email

    # Django's auth and admin read these; the role and status decide them.
    @property
    def is_active(self) -> bool:
        return self.status == UserStatus.ACTIVE

    @property
    def is_superadmin(self) -> bool:
        return self.role == UserRole.SUPERADMIN

    @property
    def is_domain_admin(self) -> bool:
        return self.role == UserRole.ADMIN

    @property
    def is_staff(self) -> bool:
        return self.is_active and self.is_superadmin

    @property
    def is_superuser(self) -> bool:
        return self.is_staff

    def has_perm(self, perm, obj=None) -> bool:
        return self.is_staff

    def has_perms(self, perm_list, obj=None) -> bool:
        return self.is_staff

    def has_module_perms(self, app_label) -> bool:
        return self.is_staff

    def get_full_name(self):
        return self.full_name or self.username

    def get_short_name(self):
        return self.username


class ProjectMembership(models.Model):
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "project"], name="membership_unique")]

    def __str__(self):
        return f"{self.user} in {self.project}"


class Keypair(models.Model):
    access_key = models.CharField(max_length=20, primary_key=True)
    secret_key = models.CharField(max_length=40)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="keypairs")
    is_active = models.BooleanField(default=True)
    is_admin = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)
    last_used = models.DateTimeField(null=True, blank=True)
    rate_limit = models.PositiveIntegerField(default=10000, help_text="Requests per 15-minute window.")
    num_queries = models.BigIntegerField(default=0)
    ssh_public_key = models.TextField(blank=True)
    ssh_private_key = models.TextField(blank=True)
    resource_policy = models.ForeignKey(KeypairResourcePolicy, on_delete=models.PROTECT, related_name="keypairs")
    bootstrap_script = models.TextField(blank=True)
    dotfiles = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return self.access_key

    @property
    def is_main(self) -> bool:
        return self.user.main_keypair_id == self.access_key


class UserPreferences(models.Model):
    """What a user chose for the web UI (``accounts.services.preferences``): the preset and
    resource group the launcher starts with, the language and the time zone pages use.
    Blank means "no choice": the launcher's own default, the server's language and zone."""

    user = models.OneToOneField(User, on_delete=models.CASCADE, primary_key=True, related_name="preferences")
    default_preset = models.CharField(max_length=256, blank=True)
    default_resource_group = models.CharField(max_length=64, blank=True)
    language = models.CharField(max_length=16, blank=True)
    time_zone = models.CharField(max_length=64, blank=True)
    modified_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "user preferences"
        verbose_name_plural = "user preferences"

    def __str__(self):
        return f"preferences of {self.user_id}"
