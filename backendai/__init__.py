"""The project package: settings, URLs, ASGI/WSGI entry points and the
cross-cutting API plumbing (signing, errors, versioning, rate limiting,
resource-slot arithmetic)."""

__version__ = "0.1.0"

from backendai.celery import app as celery_app  # noqa: E402

__all__ = ["celery_app", "__version__"]
