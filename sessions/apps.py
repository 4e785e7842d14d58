from django.apps import AppConfig


class SessionsConfig(AppConfig):
    name = "sessions"
    label = "compute_sessions"  # django.contrib.sessions owns the label "sessions"
    verbose_name = "Compute sessions"
    default_auto_field = "django.db.models.BigAutoField"
