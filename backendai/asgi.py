"""ASGI entry point: one daphne serves HTTP and websockets in the embedded mode.

Wrappers in front of Django and Channels:

* ``TrustedProxyHeaders`` (http and websocket): when, and only when, the
  direct peer is in ``settings.TRUSTED_PROXIES``, ``scope["client"]`` becomes
  the client named by ``X-Forwarded-For`` (the right-most hop that is not a
  trusted proxy) or ``X-Real-IP``, and ``scope["scheme"]`` follows
  ``X-Forwarded-Proto``.  From any other peer the headers change nothing.
  Daphne runs WITHOUT ``--proxy-headers`` (which believes any peer).
* ``BodyLimit`` (http, API paths except streamed transfers): a body larger
  than ``settings.API_MAX_BODY`` is answered 413 problem+json before Django
  reads it, whether it declared its ``Content-Length`` or grew chunk by chunk.
* ``unavailable.ASGIGuard`` (websocket): a consumer that gets no database
  connection closes with 1013 "try again later" (``backendai.api.unavailable``).
"""
import json
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backendai.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from backendai.api import clientip, unavailable  # noqa: E402
from backendai.api.middleware import TRANSFER_PREFIXES, is_api_path  # noqa: E402
from backendai.routing import websocket_urlpatterns  # noqa: E402
from vfolders.asgi import flow_controlled  # noqa: E402


def _header(scope, name: bytes) -> str | None:
    values = [value.decode("latin-1") for key, value in scope.get("headers") or [] if key.lower() == name]
    return ",".join(values) if values else None


class TrustedProxyHeaders:
    """Resolve the client address and scheme of a connection, believing forwarded
    headers only from a trusted proxy (see ``backendai.api.clientip``)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope.get("type") in ("http", "websocket") and not scope.get(clientip.RESOLVED_KEY):
            scope = dict(scope)
            peer = scope.get("client")
            if peer and clientip.is_trusted_proxy(str(peer[0])):
                address = clientip.resolve_client(str(peer[0]), _header(scope, b"x-forwarded-for"),
                                                  _header(scope, b"x-real-ip"))
                if address != str(peer[0]):
                    scope["client"] = (address, 0)
                default = scope.get("scheme") or ("ws" if scope["type"] == "websocket" else "http")
                scope["scheme"] = clientip.resolve_scheme(str(peer[0]), _header(scope, b"x-forwarded-proto"), default)
            scope[clientip.RESOLVED_KEY] = True
        return await self.app(scope, receive, send)


def _too_large_body(limit: int) -> bytes:
    return json.dumps({"type": "https://api.backend.ai/probs/payload-too-large", "title": "Request payload too large.",
                       "msg": f"The request body is larger than {limit} bytes"}).encode()


class BodyLimit:
    """413 for API bodies over ``settings.API_MAX_BODY``, before the app reads them."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope.get("type") != "http" or not is_api_path(path) or path.startswith(TRANSFER_PREFIXES):
            return await self.app(scope, receive, send)
        limit = settings.API_MAX_BODY
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            return await self._refuse(send, limit)
        # buffer the (small) body, counting as it comes; over the limit -> 413 without calling the app
        messages, total = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            total += len(message.get("body", b""))
            if total > limit:
                return await self._refuse(send, limit)
            if not message.get("more_body", False):
                break

        async def replay():
            if messages:
                return messages.pop(0)
            return await receive()

        return await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(send, limit):
        body = _too_large_body(limit)
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode()),
            (b"server", b"BackendAI"), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


application = TrustedProxyHeaders(ProtocolTypeRouter(
    {
        # file downloads wait for the socket instead of piling up in memory
        "http": BodyLimit(flow_controlled(django_asgi_app)),
        # a consumer that gets no database connection closes with 1013 "try again later", not 1011
        "websocket": unavailable.ASGIGuard(URLRouter(websocket_urlpatterns)),
    }
))
