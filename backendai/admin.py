from django.contrib import admin

from backendai import services
from backendai.models import Announcement, AuditEntry, ResourceSlotType


class ReadOnlyAdmin(admin.ModelAdmin):
    """A record nobody edits in the admin, superadmins included: it can be viewed, not added,
    changed or deleted (an event log, the audit log)."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Announcement)
class AnnouncementAdmin(admin.ModelAdmin):
    list_display = ["__str__", "enabled", "modified_at"]

    def has_add_permission(self, request):
        return super().has_add_permission(request) and not Announcement.objects.exists()

    def save_model(self, request, obj, form, change):
        saved = services.set_announcement(obj.enabled, obj.message)
        obj.pk = saved.pk


@admin.register(ResourceSlotType)
class ResourceSlotTypeAdmin(admin.ModelAdmin):
    list_display = ["name", "slot_type", "display_name", "display_unit"]
    list_filter = ["slot_type"]
    search_fields = ["name"]


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """The audit log, read-only for everyone (superadmins included): no add, change or
    delete, no bulk actions; ``AUDIT_RETENTION_DAYS`` is the only way rows go."""

    list_display = ["created_at", "actor", "via", "action", "target", "outcome", "remote_addr", "request_id"]
    list_filter = ["outcome", "via", "entity", "action", ("created_at", admin.DateFieldListFilter), "actor_domain"]
    search_fields = ["target", "actor", "access_key", "request_id"]
    date_hierarchy = "created_at"
    actions = None
    show_full_result_count = False  # no COUNT(*) of a large table on every page

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]
