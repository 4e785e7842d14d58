"""Admin for storage proxies (with their health), storage hosts, folders, permissions,
invitations and quota scope usage.  Folder lifecycle actions go through ``vfolders.services``."""
from django import forms
from django.contrib import admin, messages
from django.db import models
from django.db.models import Count, Q
from django.utils.html import format_html

from accounts.models import Project, User
from backendai.api.errors import BackendAIError
from backendai.slots import humanize_binary_size
from vfolders import services
from vfolders.models import (
    ALIVE_STATUSES,
    TRASH_STATUSES,
    ProxyStatus,
    QuotaScope,
    StorageHost,
    StorageProxy,
    VFolder,
    VFolderGrant,
    VFolderInvitation,
)


def _health(status: str) -> str:
    label = ProxyStatus(status or "").label
    css = {"alive": "ok", "lost": "bad"}.get(status or "", "unknown")
    return format_html('<span class="proxy-health proxy-{}">{}</span>', css, label)


def _formfield(field, **kwargs):
    if isinstance(field, models.URLField):
        kwargs.setdefault("assume_scheme", "http")
    return field.formfield(**kwargs)


class StorageProxyForm(forms.ModelForm):
    """The secret is write-only: never rendered back; left empty on a change, it stays as it was."""

    manager_url = forms.URLField(max_length=512, assume_scheme="http",
                                 help_text="Its manager API, e.g. http://127.0.0.1:6022")
    client_url = forms.URLField(max_length=512, assume_scheme="http",
                                help_text="Its client API as clients and browsers reach it, e.g. http://127.0.0.1:6021")
    secret = forms.CharField(widget=forms.PasswordInput(render_value=False), required=False, max_length=256,
                             help_text="The secret shared with the proxy. Never shown; leave empty to keep it.")

    class Meta:
        model = StorageProxy
        fields = ["name", "manager_url", "client_url", "secret", "ssl_verify"]
        formfield_callback = _formfield

    def clean_secret(self):
        secret = self.cleaned_data.get("secret") or ""
        if not secret:
            if self.instance is None or self.instance._state.adding or not self.instance.secret:
                raise forms.ValidationError("A new storage proxy needs its secret")
            return self.instance.secret
        if len(secret) < 16:
            raise forms.ValidationError("The secret must be at least 16 characters long")
        return secret


@admin.register(StorageProxy)
class StorageProxyAdmin(admin.ModelAdmin):
    form = StorageProxyForm
    formfield_overrides = {models.URLField: {"assume_scheme": "http"}}
    list_display = ["name", "health", "manager_url", "client_url", "version", "last_seen", "volume_names",
                    "last_error"]
    search_fields = ["name", "manager_url", "client_url"]
    readonly_fields = ["health", "last_seen", "last_checked", "last_error", "version", "volumes", "metrics_address"]
    actions = ["check_now"]

    def get_fields(self, request, obj=None):
        fields = ["name", "manager_url", "client_url", "secret", "ssl_verify"]
        return fields + (self.readonly_fields if obj is not None else [])

    def get_readonly_fields(self, request, obj=None):
        return (["name"] if obj is not None else []) + (self.readonly_fields if obj is not None else [])

    @admin.display(description="health", ordering="status")
    def health(self, obj):
        return _health(obj.status)

    @admin.display(description="volumes")
    def volume_names(self, obj):
        return ", ".join(str(v.get("name")) for v in obj.volumes or [] if isinstance(v, dict))

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        checked = services.check_proxy(obj)
        if checked.status != ProxyStatus.ALIVE:
            messages.warning(request, f"The storage proxy {obj.name} does not answer: {checked.last_error}")

    @admin.action(description="Check their health now")
    def check_now(self, request, queryset):
        for proxy in queryset:
            checked = services.check_proxy(proxy)
            level = messages.SUCCESS if checked.status == ProxyStatus.ALIVE else messages.ERROR
            self.message_user(request, f"{proxy.name}: {ProxyStatus(checked.status or '').label}"
                              + (f" ({checked.last_error})" if checked.last_error else ""), level)


@admin.register(StorageHost)
class StorageHostAdmin(admin.ModelAdmin):
    list_display = ["name", "proxy_health", "backend", "is_active", "volume_path", "agent_path", "quota",
                    "folder_count"]
    list_filter = ["backend", "is_active"]
    search_fields = ["name", "description"]
    fields = ["name", "backend", "is_active", "path", "mount_path", "capabilities", "default_quota", "description"]
    readonly_fields = ["path"]

    def get_queryset(self, request):
        self._proxies = dict(StorageProxy.objects.values_list("name", "status"))
        return super().get_queryset(request).annotate(
            _folders=Count("vfolders", filter=Q(vfolders__status__in=list(ALIVE_STATUSES))))

    @admin.display(description="proxy")
    def proxy_health(self, obj):
        proxies = getattr(self, "_proxies", None) or {}
        if obj.proxy_name not in proxies:
            return format_html('{} <span class="proxy-health proxy-bad">(no such proxy)</span>', obj.proxy_name)
        return format_html("{} {}", obj.proxy_name, _health(proxies[obj.proxy_name]))

    @admin.display(description="volume path (proxy)")
    def volume_path(self, obj):
        return obj.path or "—"

    @admin.display(description="agent path")
    def agent_path(self, obj):
        return obj.mount_path or obj.path or "—"

    @admin.display(description="default quota")
    def quota(self, obj):
        return "unlimited" if obj.default_quota < 0 else humanize_binary_size(obj.default_quota)

    @admin.display(description="folders", ordering="_folders")
    def folder_count(self, obj):
        return obj._folders

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        proxy = StorageProxy.objects.filter(name=obj.proxy_name).first()
        if proxy is None:
            messages.warning(request, f"No storage proxy is named {obj.proxy_name!r}: add it, or its folders "
                                      "answer 503")
        elif services.check_proxy(proxy).status == ProxyStatus.ALIVE and not StorageHost.objects.get(pk=obj.pk).path:
            messages.warning(request, f"The storage proxy {proxy.name} does not serve a volume {obj.volume_name!r}")


class GrantInline(admin.TabularInline):
    model = VFolderGrant
    extra = 0
    autocomplete_fields = ["user"]


class InvitationInline(admin.TabularInline):
    model = VFolderInvitation
    extra = 0
    fields = ["invitee", "inviter", "permission", "state", "created_at"]
    readonly_fields = ["invitee", "inviter", "created_at"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(VFolder)
class VFolderAdmin(admin.ModelAdmin):
    list_display = ["name", "id", "host", "owner", "ownership_type", "usage_mode", "permission", "status",
                    "created_at", "last_used"]
    list_filter = ["status", "host", "ownership_type", "usage_mode", "permission", "domain"]
    search_fields = ["name", "id", "user__email", "project__name", "creator"]
    list_select_related = ["user", "project", "host"]
    readonly_fields = ["id", "host", "domain", "quota_scope_id", "name", "ownership_type", "user", "project",
                       "creator", "status", "status_changed", "status_history", "created_at", "last_used",
                       "volume_path", "agent_path"]
    fields = ["id", "name", "host", "domain", "ownership_type", "user", "project", "quota_scope_id", "creator",
              "usage_mode", "permission", "cloneable", "status", "status_changed", "status_history", "created_at",
              "last_used", "volume_path", "agent_path"]
    inlines = [GrantInline, InvitationInline]
    actions = ["trash_folders", "restore_folders", "purge_folders"]

    def has_add_permission(self, request):
        return False  # folders are created from the web UI or the API, which check names and quota

    def has_delete_permission(self, request, obj=None):
        return False  # use the trash and purge actions: they remove the files too

    @admin.display(description="owner")
    def owner(self, obj):
        return obj.owner_label

    @admin.display(description="path on the proxy")
    def volume_path(self, obj):
        return f"{obj.host_id} {obj.relative_path}"

    @admin.display(description="agent path")
    def agent_path(self, obj):
        try:
            return str(services.agent_path(obj))
        except BackendAIError as exc:
            return f"({exc.msg or exc.error_title})"

    def _each(self, request, queryset, action, verb):
        done = 0
        for folder in queryset:
            try:
                action(folder)
            except BackendAIError as exc:
                self.message_user(request, f"{folder.name}: {exc.msg or exc.error_title}", messages.ERROR)
            else:
                done += 1
        if done:
            self.message_user(request, f"{verb} {done} folder(s).", messages.SUCCESS)

    @admin.action(description="Move to the trash")
    def trash_folders(self, request, queryset):
        self._each(request, queryset.filter(status__in=list(ALIVE_STATUSES)),
                   lambda f: services.move_to_trash(request.user, f.id.hex), "Moved to the trash")

    @admin.action(description="Restore from the trash")
    def restore_folders(self, request, queryset):
        self._each(request, queryset.filter(status__in=list(TRASH_STATUSES)),
                   lambda f: services.restore_from_trash(request.user, f.id), "Restored")

    @admin.action(description="Delete for good (folders in the trash)")
    def purge_folders(self, request, queryset):
        self._each(request, queryset.filter(status__in=list(TRASH_STATUSES)),
                   lambda f: services.purge(request.user, f.id), "Purged")


@admin.register(VFolderGrant)
class VFolderGrantAdmin(admin.ModelAdmin):
    list_display = ["vfolder", "user", "permission", "created_at"]
    list_filter = ["permission"]
    search_fields = ["vfolder__name", "user__email"]
    list_select_related = ["vfolder", "user"]
    autocomplete_fields = ["user"]
    raw_id_fields = ["vfolder"]


@admin.register(VFolderInvitation)
class VFolderInvitationAdmin(admin.ModelAdmin):
    list_display = ["vfolder", "inviter", "invitee", "permission", "state", "created_at", "modified_at"]
    list_filter = ["state", "permission"]
    search_fields = ["vfolder__name", "inviter__email", "invitee__email"]
    list_select_related = ["vfolder", "inviter", "invitee"]
    readonly_fields = ["id", "vfolder", "inviter", "invitee", "created_at", "modified_at"]
    fields = ["id", "vfolder", "inviter", "invitee", "permission", "state", "created_at", "modified_at"]

    def has_add_permission(self, request):
        return False


@admin.register(QuotaScope)
class QuotaScopeAdmin(admin.ModelAdmin):
    """Usage per quota scope, as last measured by the storage proxy; the limit is live: the one set
    for the scope (GraphQL ``set_quota_scope``), else the resource policy's, else the host's."""

    list_display = ["quota_scope_id", "owner", "host", "usage", "usage_files", "limit", "percent", "measured_at"]
    list_filter = ["host"]
    search_fields = ["quota_scope_id"]
    readonly_fields = ["host", "quota_scope_id", "usage_bytes", "usage_files", "limit_bytes", "measured_at"]
    actions = ["measure"]

    def has_add_permission(self, request):
        return False

    def changelist_view(self, request, extra_context=None):
        self._owners = None
        return super().changelist_view(request, extra_context)

    def _owner_table(self):
        if getattr(self, "_owners", None) is None:
            ids = {"user": set(), "project": set()}
            for qsid in QuotaScope.objects.values_list("quota_scope_id", flat=True):
                kind, _, ident = qsid.partition(":")
                if kind in ids:
                    ids[kind].add(ident)
            table = {}
            for user in User.objects.filter(pk__in=ids["user"]).select_related("resource_policy"):
                table[f"user:{user.pk}"] = (user.email, user.resource_policy.max_quota_scope_size)
            for project in Project.objects.filter(pk__in=ids["project"]).select_related("resource_policy"):
                table[f"project:{project.pk}"] = (f"project {project.name}",
                                                  project.resource_policy.max_quota_scope_size)
            self._owners = table
        return self._owners

    def _limit(self, obj) -> int:
        if obj.limit_bytes is not None:
            return obj.limit_bytes
        _label, limit = self._owner_table().get(obj.quota_scope_id, ("", -1))
        return limit if limit >= 0 else obj.host.default_quota

    @admin.display(description="owner")
    def owner(self, obj):
        return self._owner_table().get(obj.quota_scope_id, ("(gone)", -1))[0]

    @admin.display(description="usage", ordering="usage_bytes")
    def usage(self, obj):
        return humanize_binary_size(obj.usage_bytes)

    @admin.display(description="limit")
    def limit(self, obj):
        limit = self._limit(obj)
        shown = "unlimited" if limit < 0 else humanize_binary_size(limit)
        return f"{shown} (set for this scope)" if obj.limit_bytes is not None else shown

    @admin.display(description="used")
    def percent(self, obj):
        limit = self._limit(obj)
        if limit <= 0:
            return "—"
        return f"{100.0 * obj.usage_bytes / limit:.1f}%"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("host")

    @admin.action(description="Measure usage again (the storage proxy walks the disk)")
    def measure(self, request, queryset):
        for scope in queryset:
            try:
                services.measure_scope(scope.host, scope.quota_scope_id)
            except BackendAIError as exc:
                self.message_user(request, f"{scope}: {exc.msg or exc.error_title}", messages.ERROR)
                return
        self.message_user(request, f"Measured {queryset.count()} quota scope(s).", messages.SUCCESS)
