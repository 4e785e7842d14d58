from django.contrib import admin

from backendai import services
from backendai.models import Announcement, ResourceSlotType


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
