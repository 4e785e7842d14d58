"""The Celery application: workers run reconcilers and passes; beat (exactly
one) triggers them on the schedules kept in the database (django-celery-beat)."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backendai.settings")

app = Celery("backendai")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
