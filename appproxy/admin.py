"""Admin for proxy workers, worker tokens and circuits.  Every change goes
through ``appproxy.services`` so revisions, tombstones and hints stay right."""
from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html

from appproxy import services
from appproxy.models import AppMode, Circuit, CircuitTombstone, Worker, WorkerToken
from backendai.api.errors import BackendAIError


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    list_display = ["authority", "status", "frontend_mode", "frontend", "occupancy_text", "schedulable",
                    "last_heartbeat", "scaling_group"]
    list_filter = ["status", "frontend_mode", "schedulable", "scaling_group"]
    search_fields = ["authority", "advertised_host", "wildcard_domain"]
    readonly_fields = ["id", "status", "status_changed", "first_contact", "last_heartbeat", "lost_at", "version",
                       "occupancy", "revision", "horizon", "failed_ports", "frontend_mode", "protocols",
                       "advertised_host", "api_endpoint", "hint_url", "port_range_start", "port_range_end",
                       "wildcard_domain", "wildcard_port", "scheme", "metrics_address"]
    fields = ["id", "authority", "status", "schedulable", "scaling_group", "capacity", "frontend_mode", "protocols",
              "scheme", "advertised_host", "api_endpoint", "metrics_address", "hint_url", "port_range_start",
              "port_range_end", "wildcard_domain", "wildcard_port", "occupancy", "failed_ports", "revision", "horizon", "version",
              "first_contact", "last_heartbeat", "status_changed", "lost_at"]
    actions = ["drain", "undrain", "rotate_secret"]

    def has_add_permission(self, request):
        return False  # workers register themselves with a token

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, "authority"]

    @admin.display(description="frontend")
    def frontend(self, obj):
        if obj.frontend_mode == "wildcard":
            return f"*.{obj.wildcard_domain}:{obj.wildcard_port}"
        return f"{obj.advertised_host}:{obj.port_range_start}-{obj.port_range_end}"

    @admin.display(description="circuits")
    def occupancy_text(self, obj):
        capacity = obj.effective_capacity
        return f"{obj.occupancy} / {'∞' if capacity is None else capacity}"

    @admin.action(description="Drain: take no new circuits")
    def drain(self, request, queryset):
        self.message_user(request, f"{services.set_schedulable(list(queryset), False)} worker(s) drained.")

    @admin.action(description="Undrain: take new circuits again")
    def undrain(self, request, queryset):
        self.message_user(request, f"{services.set_schedulable(list(queryset), True)} worker(s) take circuits.")

    @admin.action(description="Rotate secret (invalidates all permits; restart the worker)")
    def rotate_secret(self, request, queryset):
        for worker in queryset:
            services.rotate_secret(worker)
        self.message_user(request, "Secrets rotated: restart the workers so they re-register.", messages.WARNING)


class WorkerTokenForm(forms.ModelForm):
    class Meta:
        model = WorkerToken
        fields = ["name", "authority"]


@admin.register(WorkerToken)
class WorkerTokenAdmin(admin.ModelAdmin):
    form = WorkerTokenForm
    list_display = ["name", "token_prefix", "authority", "created_at", "last_used", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "authority", "token_prefix"]
    readonly_fields = ["token_prefix", "created_at", "last_used", "revoked_at"]
    actions = ["revoke"]

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields + (["name", "authority"] if obj else [])

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        token, raw = services.issue_token(form.cleaned_data["name"], authority=form.cleaned_data["authority"])
        obj.pk = token.pk
        obj._state.adding = False
        self.message_user(request, f"Proxy worker token (shown once): {raw}", messages.WARNING)

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request, queryset):
        self.message_user(request, f"Revoked {services.revoke_tokens(list(queryset))} token(s).")


class CircuitForm(forms.ModelForm):
    allowed_client_ips = forms.CharField(required=False, help_text="Comma-separated IPs or CIDR networks "
                                                                   "(empty: any client).")

    class Meta:
        model = Circuit
        fields = ["session", "app", "protocol", "target_host", "target_port", "worker", "open_to_public",
                  "allowed_client_ips", "granted_users"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance and self.instance.pk:
            self.initial["allowed_client_ips"] = ", ".join(self.instance.allowed_client_ips or [])

    def clean_session(self):
        session = self.cleaned_data.get("session")
        if session is None and self.instance._state.adding:
            raise forms.ValidationError("A circuit made by hand belongs to a session (endpoints make their own).")
        return session

    def clean_allowed_client_ips(self):
        try:
            return services.normalize_ips(self.cleaned_data.get("allowed_client_ips") or "")
        except BackendAIError as exc:
            raise forms.ValidationError(exc.msg) from None


@admin.register(Circuit)
class CircuitAdmin(admin.ModelAdmin):
    form = CircuitForm
    list_display = ["id", "app", "protocol", "session_link", "owner", "worker", "slot", "target", "open_to_public",
                    "created_at", "last_access"]
    list_filter = ["app_mode", "protocol", "open_to_public", "worker"]
    search_fields = ["app", "session__name", "owner__email", "subdomain", "target_host"]
    autocomplete_fields = ["session"]
    readonly_fields = ["id", "kernel", "container_port", "port", "subdomain", "owner", "envs", "arguments",
                       "created_at", "updated_at", "last_access", "revision", "setup_note"]
    # an endpoint's circuit follows its endpoint: only its worker is an operator's choice
    inference_readonly = ["app_mode", "endpoint_id", "routes", "health_check", "session", "app", "protocol",
                          "target_host", "target_port", "open_to_public", "allowed_client_ips", "granted_users"]
    actions = ["remove"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ["setup_note"]
        if obj.app_mode == AppMode.INFERENCE:
            return [*self.readonly_fields, *self.inference_readonly]
        return [*self.readonly_fields, "session", "app", "protocol"]

    @admin.display(description="session / endpoint")
    def session_link(self, obj):
        if obj.session_id is None:
            return f"endpoint {obj.endpoint_id}" if obj.endpoint_id else "-"
        return format_html('<a href="/admin/compute_sessions/session/{}/change/">{}</a>', obj.session_id,
                           obj.session.name)

    @admin.display(description="port / subdomain")
    def slot(self, obj):
        return obj.port or obj.subdomain

    @admin.display(description="target")
    def target(self, obj):
        if obj.app_mode == AppMode.INFERENCE:
            return f"{sum(1 for r in obj.routes or [] if r.get('port'))} route(s)"
        return f"{obj.target_host}:{obj.target_port}"

    @admin.display(description="how to reach it")
    def setup_note(self, obj):
        if obj is None or obj.pk is None:
            return "Saved circuits get a port or subdomain on their worker; users open them from the session page."
        return services.frontend_url(obj)

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        try:
            if change:
                changes = {name: data[name] for name in form.changed_data if name in services.EDITABLE}
                if changes:
                    services.update_circuit(obj, **changes)
            else:
                created = services.create_circuit(
                    session=data["session"], app=data["app"], protocol=data["protocol"],
                    target_host=data["target_host"], target_port=data["target_port"], worker=data["worker"],
                    open_to_public=data["open_to_public"], allowed_client_ips=data["allowed_client_ips"])
                if data.get("granted_users"):
                    services.update_circuit(created, granted_users=data["granted_users"])
                obj.pk = created.pk
                obj._state.adding = False
        except BackendAIError as exc:
            self.message_user(request, f"Not saved: {exc.msg or exc.error_title}", messages.ERROR)

    def delete_model(self, request, obj):
        services.remove_circuits([obj.pk], reason="removed-by-admin")

    def delete_queryset(self, request, queryset):
        services.remove_circuits(queryset, reason="removed-by-admin")

    @admin.action(description="Remove selected circuits")
    def remove(self, request, queryset):
        self.message_user(request, f"Removed {services.remove_circuits(queryset, reason='removed-by-admin')} circuit(s).")


@admin.register(CircuitTombstone)
class CircuitTombstoneAdmin(admin.ModelAdmin):
    list_display = ["circuit_id", "worker", "revision", "reason", "removed_at"]
    list_filter = ["worker", "reason"]
    search_fields = ["circuit_id"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
