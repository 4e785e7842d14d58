from django.apps import AppConfig


class BackendAIConfig(AppConfig):
    name = "backendai"
    verbose_name = "Manager"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from backendai.api import schema  # noqa: F401  (registers the OpenAPI auth extension)
        from backendai.celery import app  # noqa: F401  (tasks' .delay() use the configured app)
        from backendai import db  # noqa: F401  (a forked child drops its parent's connection pools)
