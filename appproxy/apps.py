from django.apps import AppConfig


class AppProxyConfig(AppConfig):
    name = "appproxy"
    verbose_name = "App proxy"
    default_auto_field = "django.db.models.BigAutoField"
