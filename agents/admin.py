"""Admin for agents, scaling groups, registries, images and agent tokens."""
from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Q
from django.urls import reverse
from django.utils.html import format_html

from agents import services
from agents.models import (
    Agent,
    AgentToken,
    ContainerRegistry,
    Image,
    ImageAlias,
    ScalingGroup,
    ScalingGroupForDomain,
    ScalingGroupForKeypair,
    ScalingGroupForProject,
)
from backendai.api.errors import BackendAIError
from backendai.slots import humanize_binary_size


def _slots_text(slots: dict, slot_types: dict | None = None) -> str:
    parts = []
    for name, value in sorted((slots or {}).items()):
        kind = (slot_types or {}).get(name) or ("bytes" if name == "mem" or name.endswith(".mem") else "count")
        parts.append(f"{name}={humanize_binary_size(value) if kind == 'bytes' else value}")
    return ", ".join(parts) or "—"


class DomainInline(admin.TabularInline):
    model = ScalingGroupForDomain
    extra = 0


class ProjectInline(admin.TabularInline):
    model = ScalingGroupForProject
    extra = 0
    autocomplete_fields = ["project"]


class KeypairInline(admin.TabularInline):
    model = ScalingGroupForKeypair
    extra = 0
    autocomplete_fields = ["keypair"]


class ScalingGroupForm(forms.ModelForm):
    """The app-proxy API token is write-only here: never rendered back into the page."""

    wsproxy_api_token = forms.CharField(widget=forms.PasswordInput(render_value=False), required=False,
                                        max_length=256, help_text="Leave empty to keep the stored token.")

    class Meta:
        model = ScalingGroup
        fields = "__all__"

    def clean_wsproxy_api_token(self):
        value = self.cleaned_data.get("wsproxy_api_token")
        if not value and self.instance.pk:
            return self.instance.wsproxy_api_token
        return value or ""


@admin.register(ScalingGroup)
class ScalingGroupAdmin(admin.ModelAdmin):
    form = ScalingGroupForm
    list_display = ["name", "is_active", "is_public", "scheduler", "agent_count", "description"]
    list_filter = ["is_active", "is_public", "scheduler"]
    search_fields = ["name", "description"]
    inlines = [DomainInline, ProjectInline, KeypairInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_agents=Count("agents", filter=Q(agents__status="ALIVE")))

    @admin.display(description="alive agents", ordering="_agents")
    def agent_count(self, obj):
        return obj._agents


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["id", "status", "scaling_group", "schedulable", "backend", "capacity", "occupancy", "utilisation",
                    "architecture", "last_heartbeat"]
    list_filter = ["status", "scaling_group", "schedulable", "backend", "architecture"]
    search_fields = ["id", "addr", "region"]
    readonly_fields = ["id", "status", "status_changed", "available_slots", "occupied_slots", "slot_types", "addr",
                       "public_host", "metrics_address", "version", "architecture", "backend", "compute_plugins",
                       "devices", "live_stat", "first_contact", "last_heartbeat", "lost_at"]
    fields = ["id", "status", "status_changed", "scaling_group", "schedulable", "region", "available_slots",
              "occupied_slots", "slot_types", "addr", "public_host", "metrics_address", "version", "architecture",
              "backend", "compute_plugins", "devices", "live_stat", "first_contact", "last_heartbeat", "lost_at",
              "auto_terminate_abusing_kernel"]
    actions = ["mark_schedulable", "mark_unschedulable"]

    def has_add_permission(self, request):
        return False  # agents register themselves

    @admin.display(description="capacity")
    def capacity(self, obj):
        return _slots_text(obj.available_slots, obj.slot_types)

    @admin.display(description="occupied")
    def occupancy(self, obj):
        return _slots_text(obj.occupied_slots, obj.slot_types)

    @admin.display(description="CPU / mem used")
    def utilisation(self, obj):
        stat = obj.live_stat or {}
        cpu = stat.get("cpu_util")
        mem = stat.get("mem_used")
        if cpu is None and mem is None:
            return "—"
        mem_text = humanize_binary_size(mem) if mem is not None else "?"
        return format_html("{}% / {}", cpu if cpu is not None else "?", mem_text)

    @admin.action(description="Mark schedulable")
    def mark_schedulable(self, request, queryset):
        self.message_user(request, f"{services.set_schedulable(list(queryset), True)} agent(s) schedulable.")

    @admin.action(description="Mark unschedulable (no new sessions)")
    def mark_unschedulable(self, request, queryset):
        self.message_user(request, f"{services.set_schedulable(list(queryset), False)} agent(s) unschedulable.")


class RegistryForm(forms.ModelForm):
    password = forms.CharField(widget=forms.PasswordInput(render_value=False), required=False,
                               help_text="Leave empty to keep the stored password.")

    class Meta:
        model = ContainerRegistry
        fields = "__all__"

    def clean_password(self):
        value = self.cleaned_data.get("password")
        if not value and self.instance.pk:
            return self.instance.password
        return value or ""


@admin.register(ContainerRegistry)
class ContainerRegistryAdmin(admin.ModelAdmin):
    form = RegistryForm
    list_display = ["registry_name", "url", "type", "project", "username", "ssl_verify", "last_scanned_at", "last_scan_result"]
    list_filter = ["type", "ssl_verify"]
    search_fields = ["registry_name", "url"]
    readonly_fields = ["last_scanned_at", "last_scan_result"]
    actions = ["rescan"]

    @admin.action(description="Rescan images from the registry")
    def rescan(self, request, queryset):
        """One background task per registry; the message links to its progress page."""
        for registry in queryset:
            try:
                task_id = services.start_rescan(request.user, registry.registry_name)
            except BackendAIError as exc:
                self.message_user(request, str(exc.msg), messages.ERROR)
            else:
                self.message_user(request, format_html(
                    '{}: the rescan is queued; <a href="{}">follow its progress</a>.', registry,
                    reverse("ui:task", kwargs={"task_id": task_id})), messages.SUCCESS)


class AliasInline(admin.TabularInline):
    model = ImageAlias
    extra = 0


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ["name", "architecture", "registry_name", "type", "is_local", "size", "min_resources", "ports"]
    list_filter = ["architecture", "is_local", "type", "registry_name"]
    search_fields = ["name", "repository", "tag"]
    readonly_fields = ["labels", "resources", "service_ports", "config_digest", "size_bytes", "created_at", "modified_at"]
    filter_horizontal = ["agents"]
    inlines = [AliasInline]

    @admin.display(description="size", ordering="size_bytes")
    def size(self, obj):
        return humanize_binary_size(obj.size_bytes)

    @admin.display(description="min resources")
    def min_resources(self, obj):
        return _slots_text({k: v.get("min") for k, v in (obj.resources or {}).items() if v.get("min") is not None})

    @admin.display(description="service ports")
    def ports(self, obj):
        return ", ".join(f"{p['name']}:{p['protocol']}" for p in obj.service_ports or []) or "—"


@admin.register(ImageAlias)
class ImageAliasAdmin(admin.ModelAdmin):
    list_display = ["alias", "image"]
    search_fields = ["alias", "image__name"]
    autocomplete_fields = ["image"]


class AgentTokenForm(forms.ModelForm):
    class Meta:
        model = AgentToken
        fields = ["name", "agent_id", "scaling_group"]

    def clean(self):
        data = super().clean()
        if bool(data.get("agent_id")) == bool(data.get("scaling_group")):
            raise forms.ValidationError("Bind the token to exactly one agent id or one scaling group.")
        return data


@admin.register(AgentToken)
class AgentTokenAdmin(admin.ModelAdmin):
    form = AgentTokenForm
    list_display = ["name", "token_prefix", "agent_id", "scaling_group", "created_at", "last_used", "revoked_at"]
    list_filter = ["scaling_group", "revoked_at"]
    search_fields = ["name", "agent_id", "token_prefix"]
    readonly_fields = ["token_prefix", "created_at", "last_used", "revoked_at"]
    actions = ["revoke"]

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields + (["name", "agent_id", "scaling_group"] if obj else [])

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        token, raw = services.issue_token(form.cleaned_data["name"], agent_id=form.cleaned_data["agent_id"],
                                          scaling_group=form.cleaned_data["scaling_group"])
        obj.pk = token.pk
        obj._state.adding = False
        self.message_user(request, f"Agent token (shown once): {raw}", messages.WARNING)

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request, queryset):
        self.message_user(request, f"Revoked {services.revoke_tokens(list(queryset))} token(s).")


