from django.apps import AppConfig


class BackendAIConfig(AppConfig):
    name = "backendai"
    verbose_name = "Manager"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from backendai import db, telemetry  # noqa: F401  (db: a forked child drops its parent's connection pools)
        from backendai.api import schema  # noqa: F401  (registers the OpenAPI auth extension)
        from backendai.celery import app  # noqa: F401  (tasks' .delay() use the configured app)

        telemetry.install_db_metrics()  # backendai_layer_operation_*{layer="db"}
        from backendai import auditlog
        auditlog.install()  # logins and the Django admin's changes into the audit log
