"""Admin for sessions and kernels (read-mostly; changes go through services)."""
from django.contrib import admin

from sessions import services
from sessions.models import Kernel, Session


class KernelInline(admin.TabularInline):
    model = Kernel
    fields = ["id", "cluster_role", "cluster_idx", "agent", "status", "status_info", "container_id", "exit_code"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    list_display = ["name", "id", "user", "status", "status_info", "session_type", "scaling_group", "image", "created_at"]
    list_filter = ["status", "session_type", "scaling_group", "result"]
    search_fields = ["name", "id", "user__email", "image"]
    list_select_related = ["user", "scaling_group"]
    readonly_fields = [f.name for f in Session._meta.fields]
    inlines = [KernelInline]
    actions = ["terminate", "force_terminate"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Terminate selected sessions")
    def terminate(self, request, queryset):
        for session in queryset:
            services.request_termination(session, "user-requested")
        self.message_user(request, f"Asked {queryset.count()} session(s) to terminate.")

    @admin.action(description="Force-terminate selected sessions")
    def force_terminate(self, request, queryset):
        for session in queryset:
            services.request_termination(session, "force-terminated", forced=True)
        self.message_user(request, f"Asked {queryset.count()} session(s) to terminate (forced).")


@admin.register(Kernel)
class KernelAdmin(admin.ModelAdmin):
    list_display = ["id", "session", "agent", "status", "status_info", "image", "exit_code", "created_at"]
    list_filter = ["status", "agent"]
    search_fields = ["id", "session__name", "container_id"]
    list_select_related = ["session", "agent"]
    readonly_fields = [f.name for f in Kernel._meta.fields]

    def has_add_permission(self, request):
        return False
