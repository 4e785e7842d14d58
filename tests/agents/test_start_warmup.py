"""What a process prepares at start so that the first session after a start does not wait for it
(issue 18 item 5, ``bench/hints/run.py``'s "cold" column): the worker's hint relay
(``backendai.hints.warm_relay``, from Celery's ``worker_ready``/``worker_process_init``) and the web
process's Celery producer (``backendai.celery.warm_producer``, from ``backendai.asgi``)."""
from __future__ import annotations

import os
import threading
import time

import pytest
from channels.layers import InMemoryChannelLayer

from backendai import celery as celery_module
from backendai import hints


@pytest.fixture
def fresh_relay(monkeypatch):
    """A relay of its own and a process that does not serve agents (whatever other tests did)."""
    relay = hints._Relay()
    started = []
    monkeypatch.setattr(relay, "_run", lambda: started.append(threading.current_thread().name))
    monkeypatch.setattr(hints, "_relay", relay)
    monkeypatch.setattr(hints, "_serving", threading.Event())
    monkeypatch.setattr("channels.layers.get_channel_layer", lambda *a, **k: InMemoryChannelLayer())
    return relay, started


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()


def test_it_starts_the_hint_relay_before_the_first_hint_in_a_process_that_relays(settings, fresh_relay):
    relay, started = fresh_relay
    settings.INTERNAL_WEB_URL = "http://127.0.0.1:8091"
    hints.warm_relay()
    assert relay._pid == os.getpid()
    assert wait_until(lambda: started == ["hint-relay"])
    hints.warm_relay()  # once per process
    relay.submit("http://127.0.0.1:8091", ["node-1"])
    time.sleep(0.05)
    assert started == ["hint-relay"]


def test_it_starts_no_relay_where_hints_cannot_be_relayed(settings, fresh_relay):
    relay, started = fresh_relay
    settings.INTERNAL_WEB_URL = None
    hints.warm_relay()
    hints.serves_agents()  # the web process: it delivers its hints itself
    settings.INTERNAL_WEB_URL = "http://127.0.0.1:8091"
    hints.warm_relay()
    assert relay._pid is None and started == []


def test_it_warms_the_celery_producer_in_the_background_and_never_raises(monkeypatch):
    acquired = threading.Event()

    class Broken:
        def acquire(self, **kwargs):
            acquired.set()
            raise ConnectionError("no broker")

    monkeypatch.setattr(type(celery_module.app), "producer_pool", property(lambda self: Broken()))
    celery_module.warm_producer()  # returns at once; the failure stays in the thread, logged at DEBUG
    assert acquired.wait(5)
