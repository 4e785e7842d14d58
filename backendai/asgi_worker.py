"""The gunicorn worker class of the production web tier (docs/production.md, *The web server*).

``uvicorn_worker.UvicornWorker`` (uvloop, the httptools parser) with uvicorn's own handling of
``X-Forwarded-For``/``X-Forwarded-Proto`` turned off: by default uvicorn believes those headers from
gunicorn's ``--forwarded-allow-ips`` (127.0.0.1), whereas this application believes them only from
``TRUSTED_PROXIES``, in ``backendai.asgi.TrustedProxyHeaders``, the same under every server.

    gunicorn backendai.asgi:application -k backendai.asgi_worker.UvicornWorker -w 2 -b 0.0.0.0:8091
"""
from __future__ import annotations

from uvicorn_worker import UvicornWorker as _UvicornWorker


class UvicornWorker(_UvicornWorker):
    CONFIG_KWARGS = {"loop": "auto", "http": "auto", "proxy_headers": False}
