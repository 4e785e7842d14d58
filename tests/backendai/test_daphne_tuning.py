"""``backendai.asgi.tune_daphne``: Twisted does not parse multipart bodies for daphne, and daphne hands
bodies to the application in large pieces (a 50 MiB upload cost 650 MiB of peak memory before)."""
from __future__ import annotations

from types import SimpleNamespace

from daphne.http_protocol import WebRequest

import backendai.asgi as asgi


def a_request():
    server = SimpleNamespace(request_buffer_size=8192, protocol_connected=lambda request: None)
    transport = SimpleNamespace(getPeer=lambda: None, getHost=lambda: None)
    channel = SimpleNamespace(factory=SimpleNamespace(server=server), site=None, transport=transport,
                              getPeer=lambda: None, getHost=lambda: None)
    return WebRequest(channel), server


def test_a_daphne_request_leaves_multipart_bodies_to_the_application_in_large_pieces():
    request, server = a_request()
    assert request._parsePOSTFormSubmission is False
    assert server.request_buffer_size == asgi.DAPHNE_BODY_CHUNK


def test_tuning_twice_wraps_daphne_once():
    wrapped = WebRequest.__init__
    asgi.tune_daphne()
    assert WebRequest.__init__ is wrapped
