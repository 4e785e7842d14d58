"""Admin for model serving: endpoints (with their routes and recent events), routes,
issued tokens (never their value or digest), autoscaling rules and the event log.

Read-mostly: every change goes through the services (``serving.services.endpoints``
for replicas, routes, tokens and destruction; ``serving.services.autoscale`` for
rules), so events are recorded and the reconciler is hinted as for any other caller.
Endpoints are created through the API or the Serving page (the model definition is
read from the model folder there)."""
from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html, format_html_join

from backendai.admin import ReadOnlyAdmin
from backendai.api.errors import BackendAIError
from serving.models import MAX_REPLICAS, AutoScalingRule, Endpoint, EndpointEvent, EndpointToken, Routing
from serving.services import autoscale, endpoints, events

EVENTS_SHOWN = 50
ADMIN_TOKEN_SECONDS = 86400


def _refused(modeladmin, request, exc: BackendAIError) -> None:
    modeladmin.message_user(request, f"Not done: {exc.msg or exc.error_title}", messages.ERROR)


class RoutingInline(admin.TabularInline):
    model = Routing
    fields = ["id", "session", "status", "traffic_ratio", "status_changed", "drain_until", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


class EndpointForm(forms.ModelForm):
    class Meta:
        model = Endpoint
        fields = ["replicas"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "replicas" in self.fields:
            self.fields["replicas"].help_text = (f"0 to {MAX_REPLICAS}; saved through the scale service (an event "
                                                 "is recorded and the reconciler converges).")


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    form = EndpointForm
    list_display = ["name", "id", "session_owner", "lifecycle_stage", "replicas", "live_routes", "runtime_variant",
                    "open_to_public", "url", "created_at"]
    list_filter = ["lifecycle_stage", "runtime_variant", "open_to_public", "resource_group"]
    search_fields = ["name", "id", "session_owner__email", "image", "url"]
    list_select_related = ["session_owner"]
    readonly_fields = [f.name for f in Endpoint._meta.fields if f.name not in ("replicas", "token_secret")] + [
        "recent_events"]
    exclude = ["token_secret"]
    inlines = [RoutingInline]
    actions = ["add_replica", "remove_replica", "scale_to_zero", "issue_token", "revoke_tokens", "destroy"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # "Destroy" drains the routes first; a deleted row would orphan the sessions and circuit

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and not obj.is_live:
            return [*self.readonly_fields, "replicas"]
        return self.readonly_fields

    @admin.display(description="live routes")
    def live_routes(self, obj):
        from serving.models import LIVE_ROUTE

        return obj.routings.filter(status__in=list(LIVE_ROUTE)).count()

    @admin.display(description="recent events")
    def recent_events(self, obj):
        if obj is None or obj.pk is None:
            return "-"
        rows = events.recent(obj, EVENTS_SHOWN)
        if not rows:
            return "No events."
        return format_html("<ul>{}</ul>", format_html_join(
            "", "<li>{} <b>{}</b> {}</li>", ((f"{e.at:%Y-%m-%d %H:%M:%S}", e.kind, e.message) for e in rows)))

    def save_model(self, request, obj, form, change):
        if not change or "replicas" not in form.changed_data:
            return
        try:
            endpoints.scale(request.user, obj, form.cleaned_data["replicas"])
        except BackendAIError as exc:
            _refused(self, request, exc)

    def _scale_each(self, request, queryset, target):
        done = 0
        for endpoint in queryset:
            try:
                endpoints.scale(request.user, endpoint, target(endpoint))
                done += 1
            except BackendAIError as exc:
                _refused(self, request, exc)
        self.message_user(request, f"Scaled {done} service(s).")

    @admin.action(description="Add one replica")
    def add_replica(self, request, queryset):
        self._scale_each(request, queryset, lambda e: min(MAX_REPLICAS, e.replicas + 1))

    @admin.action(description="Remove one replica")
    def remove_replica(self, request, queryset):
        self._scale_each(request, queryset, lambda e: max(0, e.replicas - 1))

    @admin.action(description="Scale to zero replicas")
    def scale_to_zero(self, request, queryset):
        self._scale_each(request, queryset, lambda e: 0)

    @admin.action(description="Issue an API token valid for one day (shown once)")
    def issue_token(self, request, queryset):
        for endpoint in queryset:
            try:
                row, token = endpoints.issue_token(request.user, endpoint, ADMIN_TOKEN_SECONDS)
            except BackendAIError as exc:
                _refused(self, request, exc)
                continue
            self.message_user(request, f"API token of {endpoint.name} (shown once, valid until "
                                       f"{row.expires_at:%Y-%m-%d %H:%M} UTC): {token}", messages.WARNING)

    @admin.action(description="Revoke every API token of the selected services")
    def revoke_tokens(self, request, queryset):
        for endpoint in queryset:
            try:
                revoked = endpoints.revoke_tokens(request.user, endpoint)
            except BackendAIError as exc:
                _refused(self, request, exc)
                continue
            self.message_user(request, f"Revoked every API token of {endpoint.name} ({revoked} listed).")

    @admin.action(description="Destroy selected services (drain the routes, end the sessions)")
    def destroy(self, request, queryset):
        done = 0
        for endpoint in queryset:
            try:
                endpoints.destroy(request.user, endpoint)
                done += 1
            except BackendAIError as exc:
                _refused(self, request, exc)
        self.message_user(request, f"Asked {done} service(s) to be destroyed.")


class RoutingForm(forms.ModelForm):
    class Meta:
        model = Routing
        fields = ["traffic_ratio"]


@admin.register(Routing)
class RoutingAdmin(admin.ModelAdmin):
    form = RoutingForm
    list_display = ["id", "endpoint", "session", "status", "traffic_ratio", "status_changed", "created_at"]
    list_filter = ["status"]
    search_fields = ["id", "endpoint__name", "session__name"]
    list_select_related = ["endpoint", "session"]
    readonly_fields = [f.name for f in Routing._meta.fields if f.name != "traffic_ratio"]
    actions = ["drain_and_remove"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # "Drain and remove" lets in-flight requests finish

    def save_model(self, request, obj, form, change):
        if not change or "traffic_ratio" not in form.changed_data:
            return
        try:
            endpoints.set_traffic_ratio(request.user, obj.endpoint, str(obj.pk), form.cleaned_data["traffic_ratio"])
        except BackendAIError as exc:
            _refused(self, request, exc)

    @admin.action(description="Drain and remove selected routes (one replica fewer each)")
    def drain_and_remove(self, request, queryset):
        done = 0
        for route in queryset.select_related("endpoint"):
            try:
                endpoints.remove_route(request.user, route.endpoint, str(route.pk))
                done += 1
            except BackendAIError as exc:
                _refused(self, request, exc)
        self.message_user(request, f"Draining {done} route(s).")


@admin.register(EndpointToken)
class EndpointTokenAdmin(admin.ModelAdmin):
    """Issued tokens: who, when, until when, and the last characters; never the digest."""

    list_display = ["id", "endpoint", "created_by", "shown_hint", "created_at", "expires_at"]
    search_fields = ["id", "endpoint__name", "created_by__email", "hint"]
    list_select_related = ["endpoint", "created_by"]
    fields = ["id", "endpoint", "created_by", "shown_hint", "created_at", "expires_at"]
    readonly_fields = fields

    @admin.display(description="token")
    def shown_hint(self, obj):
        return f"…{obj.hint}" if obj.hint else "-"

    def has_add_permission(self, request):
        return False  # issued by "Issue an API token" on the service, or the API

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # a row's removal would revoke nothing (tokens are signed); the record stays


class AutoScalingRuleForm(forms.ModelForm):
    class Meta:
        model = AutoScalingRule
        fields = ["endpoint", "metric_source", "metric_name", "threshold", "comparator", "step_size",
                  "cooldown_seconds", "min_replicas", "max_replicas", "window_seconds", "enabled"]


@admin.register(AutoScalingRule)
class AutoScalingRuleAdmin(admin.ModelAdmin):
    form = AutoScalingRuleForm
    list_display = ["id", "endpoint", "metric_source", "metric_name", "comparator", "threshold", "step_size",
                    "min_replicas", "max_replicas", "cooldown_seconds", "enabled", "last_value", "last_triggered_at"]
    list_filter = ["metric_source", "enabled"]
    search_fields = ["id", "endpoint__name", "metric_name"]
    list_select_related = ["endpoint"]
    readonly_fields = ["id", "last_value", "last_triggered_at", "created_at"]
    autocomplete_fields = ["endpoint"]

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, "endpoint"] if obj is not None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        props = {name: data[name] for name in autoscale.FIELDS if name in data}
        try:
            if change:
                changed = {name: props[name] for name in form.changed_data if name in props}
                if changed:
                    autoscale.modify_rule(request.user, str(obj.pk), changed)
            else:
                rule = autoscale.create_rule(request.user, str(data["endpoint"].pk), props)
                obj.pk = rule.pk
                obj._state.adding = False
        except BackendAIError as exc:
            _refused(self, request, exc)

    def delete_model(self, request, obj):
        autoscale.delete_rule(request.user, str(obj.pk))

    def delete_queryset(self, request, queryset):
        for rule in queryset:
            autoscale.delete_rule(request.user, str(rule.pk))


@admin.register(EndpointEvent)
class EndpointEventAdmin(ReadOnlyAdmin):
    list_display = ["at", "endpoint", "kind", "message"]
    list_filter = ["kind"]
    search_fields = ["endpoint__name", "message"]
    list_select_related = ["endpoint"]
    readonly_fields = ["endpoint", "at", "kind", "message", "data"]
