"""ASGI application of ``python -m appproxy.coordinator``: the project's settings (the same
database, secrets and configuration as the manager) with the coordinator's own URLconf."""
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backendai.settings")

import django  # noqa: E402
from django.conf import settings  # noqa: E402

URLCONF = "appproxy.coordinator.urls"

django.setup(set_prefix=False)
settings.ROOT_URLCONF = URLCONF  # before the first request builds the resolver

from backendai.asgi_handler import get_asgi_application  # noqa: E402

# the manager's handler: one thread hop per request on reused threads, WEB_REQUEST_THREADS at once
application = get_asgi_application()
