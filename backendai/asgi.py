"""ASGI entry point: one daphne serves HTTP and websockets in the embedded mode.

Wrappers in front of Django and Channels:

* ``TrustedProxyHeaders`` (http and websocket): when, and only when, the
  direct peer is in ``settings.TRUSTED_PROXIES``, ``scope["client"]`` becomes
  the client named by ``X-Forwarded-For`` (the right-most hop that is not a
  trusted proxy) or ``X-Real-IP``, and ``scope["scheme"]`` follows
  ``X-Forwarded-Proto``.  From any other peer the headers change nothing.
  Daphne runs WITHOUT ``--proxy-headers`` (which believes any peer).
* ``BodyLimit`` (http, API paths except streamed transfers: the
  session file transfers, ``backendai.api.middleware.is_transfer_path``): a body larger
  than ``settings.API_MAX_BODY`` is answered 413 problem+json before Django
  reads it, whether it declared its ``Content-Length`` or grew chunk by chunk.
* ``requestlog.WebsocketContext`` (websocket): the consumers run with a request
  context, and the connection gets one access-log line when it ends.
* ``unavailable.ASGIGuard`` (websocket): a consumer that gets no database
  connection closes with 1013 "try again later" (``backendai.api.unavailable``).

``tune_daphne`` keeps daphne and Twisted from holding large request bodies
several times over in memory (see its docstring).
"""
import json
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backendai.settings")

from backendai.asgi_handler import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from backendai.api import clientip, unavailable  # noqa: E402
from backendai.api.middleware import is_api_path, is_transfer_path  # noqa: E402
from backendai.requestlog import WebsocketContext  # noqa: E402
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
        if scope.get("type") != "http" or not is_api_path(path) or is_transfer_path(path):
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


#: How many bytes of a request body daphne hands the app per ``http.request`` message (its default, 8 KiB,
#: queues a 50 MiB upload as 6,400 messages at once: about 4x the body in memory).
DAPHNE_BODY_CHUNK = 256 * 1024


def tune_daphne() -> None:
    """Two settings daphne does not expose, for large request bodies (a session's file upload).

    * Twisted parses a POSTed ``multipart/form-data`` body itself, whole and in memory with the
      ``email`` package (several copies: ~9x the body), to fill ``request.args``, before daphne
      hands the raw body to the application, which never reads those ``args``: turned off per
      request (Twisted's own ``parsePOSTFormSubmission`` switch).
    * daphne queues the whole body for the application at once in ``request_buffer_size`` pieces:
      raised to ``DAPHNE_BODY_CHUNK``, so the queue holds about the body itself, not 4x.
    Under other servers nothing changes (no daphne, no patch)."""
    try:
        from daphne.http_protocol import WebRequest
    except ImportError:  # pragma: no cover - daphne is a dependency
        return
    original = WebRequest.__init__
    if getattr(original, "_backendai_tuned", False):
        return

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self._parsePOSTFormSubmission = False
        server = getattr(self, "server", None)
        if server is not None and (server.request_buffer_size or 0) < DAPHNE_BODY_CHUNK:
            server.request_buffer_size = DAPHNE_BODY_CHUNK

    __init__._backendai_tuned = True
    WebRequest.__init__ = __init__
    _tune_daphne_close_codes()


#: Close codes of RFC 6455's registry a server sends: going away, unsupported data, invalid payload, policy
#: violation, message too big, internal error, service restart, try again later.
REGISTERED_CLOSE_CODES = frozenset({1001, 1003, 1007, 1008, 1009, 1011, 1012, 1013})


def _tune_daphne_close_codes() -> None:
    """Let a consumer close a websocket with a registered code (1009, 1011, 1013, ...) under daphne.

    Daphne closes through autobahn's ``sendClose``, which accepts only 1000 and
    3000-4999 and raises on any other code, so ``close(code=1011)`` never reached
    the client: the websocket stayed open (a terminal whose node was lost froze
    instead of saying so).  Registered codes go through ``sendCloseFrame``, the
    call ``sendClose`` makes after its check, with the reason truncated as it does."""
    try:
        from autobahn.util import encode_truncate
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:  # pragma: no cover - daphne is a dependency
        return
    original = WebSocketProtocol.serverClose
    if getattr(original, "_backendai_tuned", False):
        return

    def serverClose(self, code=None, reason=None):  # noqa: N802 - daphne's name
        if code in REGISTERED_CLOSE_CODES:
            self.sendCloseFrame(code=code, reasonUtf8=encode_truncate(reason, 123) if reason else None)
            return
        original(self, code=code)

    serverClose._backendai_tuned = True
    WebSocketProtocol.serverClose = serverClose


tune_daphne()

# the web process enqueues the scheduler's hint when a session is created: Celery's task registry
# and the broker connection are set up at start, not in the first request (backendai.celery.warm_producer)
from backendai.celery import warm_producer  # noqa: E402

warm_producer()

application = TrustedProxyHeaders(ProtocolTypeRouter(
    {
        # file downloads wait for the socket instead of piling up in memory
        "http": BodyLimit(flow_controlled(django_asgi_app)),
        # a consumer that gets no database connection closes with 1013 "try again later", not 1011
        # consumers run with a request context (request id, client, user once authenticated)
        "websocket": WebsocketContext(unavailable.ASGIGuard(URLRouter(websocket_urlpatterns)),
                                      routes=websocket_urlpatterns),
    }
))
