from django.apps import AppConfig


class VFoldersConfig(AppConfig):
    name = "vfolders"
    verbose_name = "Virtual folders"
    default_auto_field = "django.db.models.BigAutoField"
