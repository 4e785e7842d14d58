"""A websocket to a path no app serves is closed with 4404 and a reason, never a router error."""
from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from backendai.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("path", ["/stream/session/mine/nothing-here", "/nowhere", "/stream/" + "é" * 300,
                                  "/agent-api/v1/linkx"])
def test_an_unknown_websocket_path_is_closed_with_4404_and_a_reason(path):
    async def main():
        ws = WebsocketCommunicator(application, path, headers=[(b"host", b"testserver")])
        connected, _ = await ws.connect(timeout=5)
        assert connected
        closed = await ws.receive_output(timeout=5)
        assert closed["type"] == "websocket.close" and closed["code"] == 4404
        assert closed["reason"].startswith("No such websocket endpoint: ")
        assert len(closed["reason"].encode()) <= 123
        await ws.wait()

    async_to_sync(main)()
