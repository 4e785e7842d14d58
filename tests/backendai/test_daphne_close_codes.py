"""Under daphne a consumer's ``close(code=1011)`` reaches the client (``backendai.asgi`` tunes daphne):
autobahn's ``sendClose`` raises on registered codes other than 1000, which left such websockets open."""
from __future__ import annotations

import struct

import pytest
from daphne.ws_protocol import WebSocketProtocol

import backendai.asgi  # noqa: F401 - applies the tuning


def open_protocol():
    protocol = WebSocketProtocol.__new__(WebSocketProtocol)
    protocol.state = WebSocketProtocol.STATE_OPEN
    protocol.closeHandshakeTimeout = 0
    protocol.frames = []
    protocol.sendFrame = lambda opcode, payload=b"", **kw: protocol.frames.append((opcode, payload))
    return protocol


@pytest.mark.parametrize("code", [1011, 1009, 1013])
def test_it_sends_a_close_frame_with_a_registered_code_a_consumer_asks_for(code):
    protocol = open_protocol()
    protocol.handle_reply({"type": "websocket.close", "code": code})
    assert protocol.frames == [(8, struct.pack("!H", code))]
    assert protocol.state == WebSocketProtocol.STATE_CLOSING


@pytest.mark.parametrize("code, sent", [(None, 1000), (1000, 1000), (4404, 4404)])
def test_it_still_closes_with_the_codes_daphne_always_sent(code, sent):
    protocol = open_protocol()
    protocol.handle_reply({"type": "websocket.close", "code": code})
    assert protocol.frames == [(8, struct.pack("!H", sent))]


def test_it_refuses_codes_no_server_may_send_as_before():
    protocol = open_protocol()
    with pytest.raises(Exception, match="invalid close code"):
        protocol.handle_reply({"type": "websocket.close", "code": 1005})
    assert protocol.frames == []
