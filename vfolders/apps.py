from django.apps import AppConfig


class VFoldersConfig(AppConfig):
    name = "vfolders"
    verbose_name = "Virtual folders"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # imported here: an AppConfig module is imported before the models are ready
        from accounts import hooks as account_hooks
        from vfolders.services import purging

        # purging a user or a project takes their folders (files first) or hands shared ones over
        account_hooks.register_purge_handler(purging.purge_handler)
