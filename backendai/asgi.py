"""ASGI entry point: one daphne serves HTTP and websockets in the embedded mode."""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backendai.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from backendai.routing import websocket_urlpatterns  # noqa: E402
from vfolders.asgi import flow_controlled  # noqa: E402

application = ProtocolTypeRouter(
    {
        # file downloads wait for the socket instead of piling up in memory
        "http": flow_controlled(django_asgi_app),
        "websocket": URLRouter(websocket_urlpatterns),
    }
)
