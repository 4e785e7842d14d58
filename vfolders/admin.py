"""Admin for storage hosts, folders, permissions, invitations and quota scope usage.
Folder lifecycle actions go through ``vfolders.services``."""
from django.contrib import admin, messages
from django.db.models import Count, Q
from django.template.defaultfilters import filesizeformat

from accounts.models import Project, User
from backendai.api.errors import BackendAIError
from vfolders import services
from vfolders.models import (
    ALIVE_STATUSES,
    TRASH_STATUSES,
    QuotaScope,
    StorageHost,
    VFolder,
    VFolderGrant,
    VFolderInvitation,
)


@admin.register(StorageHost)
class StorageHostAdmin(admin.ModelAdmin):
    list_display = ["name", "backend", "is_active", "manager_path", "agent_path", "quota", "folder_count"]
    list_filter = ["backend", "is_active"]
    search_fields = ["name", "description"]
    fields = ["name", "backend", "is_active", "path", "mount_path", "capabilities", "default_quota", "description"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            _folders=Count("vfolders", filter=Q(vfolders__status__in=list(ALIVE_STATUSES))))

    @admin.display(description="manager path")
    def manager_path(self, obj):
        return str(obj.root)

    @admin.display(description="agent path")
    def agent_path(self, obj):
        return str(obj.agent_root)

    @admin.display(description="default quota")
    def quota(self, obj):
        return "unlimited" if obj.default_quota < 0 else filesizeformat(obj.default_quota)

    @admin.display(description="folders", ordering="_folders")
    def folder_count(self, obj):
        return obj._folders

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        try:
            obj.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            messages.warning(request, f"The manager cannot create {obj.root}: {exc.strerror}")


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
                       "manager_path", "agent_path"]
    fields = ["id", "name", "host", "domain", "ownership_type", "user", "project", "quota_scope_id", "creator",
              "usage_mode", "permission", "cloneable", "status", "status_changed", "status_history", "created_at",
              "last_used", "manager_path", "agent_path"]
    inlines = [GrantInline, InvitationInline]
    actions = ["trash_folders", "restore_folders", "purge_folders"]

    def has_add_permission(self, request):
        return False  # folders are created from the web UI or the API, which check names and quota

    def has_delete_permission(self, request, obj=None):
        return False  # use the trash and purge actions: they remove the files too

    @admin.display(description="owner")
    def owner(self, obj):
        return obj.owner_label

    @admin.display(description="manager path")
    def manager_path(self, obj):
        return str(obj.path)

    @admin.display(description="agent path")
    def agent_path(self, obj):
        return str(obj.agent_path)

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
    """Usage per quota scope, as last measured from the disk; the limit is live: the one set
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
        return filesizeformat(obj.usage_bytes)

    @admin.display(description="limit")
    def limit(self, obj):
        limit = self._limit(obj)
        shown = "unlimited" if limit < 0 else filesizeformat(limit)
        return f"{shown} (set for this scope)" if obj.limit_bytes is not None else shown

    @admin.display(description="used")
    def percent(self, obj):
        limit = self._limit(obj)
        if limit <= 0:
            return "—"
        return f"{100.0 * obj.usage_bytes / limit:.1f}%"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("host")

    @admin.action(description="Measure usage again (walks the disk)")
    def measure(self, request, queryset):
        for scope in queryset:
            services.measure_scope(scope.host, scope.quota_scope_id)
        self.message_user(request, f"Measured {queryset.count()} quota scope(s).", messages.SUCCESS)
