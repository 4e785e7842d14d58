"""The project package: settings, URLs, ASGI/WSGI entry points and the
cross-cutting API plumbing (signing, errors, versioning, rate limiting,
resource-slot arithmetic)."""

__version__ = "0.1.0"
