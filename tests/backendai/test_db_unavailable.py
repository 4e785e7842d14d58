"""No database connection now -> 503 with Retry-After, never 500 (backendai/api/unavailable.py).

Real pools on the test database: the default alias is reconfigured for a test (a pool of one
connection with a short wait, or a port where nothing listens) and restored afterwards.  The one
connection is borrowed by another thread through Django, as a concurrent request would.
"""
from __future__ import annotations

import copy
import os
import threading
import time
from contextlib import contextmanager

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.db import connection, connections

from helpers import problem, require

SERVICE_UNAVAILABLE = "https://api.backend.ai/probs/service-unavailable"


@pytest.fixture
def reconfigure(transactional_db):
    """``reconfigure(pool=..., port=...)``: the default alias gets new connection settings (every
    thread shares them); the original ones and a fresh pool come back after the test."""
    require(connection.vendor == "postgresql", "PostgreSQL (the connection pool is PostgreSQL's)")
    settings_dict = connection.settings_dict  # the same dict for every thread's wrapper
    saved = {key: copy.deepcopy(settings_dict.get(key)) for key in ("OPTIONS", "PORT", "CONN_MAX_AGE")}

    def apply(pool=None, port=None):
        connections.close_all()  # give this thread's connection back before the pool goes
        connection.close_pool()
        options = dict(saved["OPTIONS"] or {})
        options.pop("pool", None)
        if pool is not None:
            options["pool"] = pool
        settings_dict["OPTIONS"] = options
        settings_dict["CONN_MAX_AGE"] = 0
        if port is not None:
            settings_dict["PORT"] = port

    yield apply
    connections.close_all()
    connection.close_pool()
    settings_dict.update(saved)


@contextmanager
def connection_held_elsewhere():
    """Another thread borrows a connection (the pool's only one) and keeps it until the block ends."""
    ready, done, failure = threading.Event(), threading.Event(), []

    def hold():
        try:
            connections["default"].ensure_connection()
            ready.set()
            done.wait(120)
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            failure.append(exc)
            ready.set()
        finally:
            connections["default"].close()

    thread = threading.Thread(target=hold, name="holds-the-connection", daemon=True)
    thread.start()
    assert ready.wait(60) and not failure, failure
    try:
        yield
    finally:
        done.set()
        thread.join(60)


def assert_service_unavailable(response, retry_after: str) -> dict:
    assert response.status_code == 503, response.content
    body = problem(response)
    assert body["type"] == SERVICE_UNAVAILABLE
    assert response["Retry-After"] == retry_after
    return body


def test_a_signed_request_that_gets_no_pooled_connection_is_answered_503_service_unavailable(
        reconfigure, owner, signed):
    client = signed(owner)
    reconfigure(pool={"min_size": 0, "max_size": 1, "timeout": 0.5})
    with connection_held_elsewhere():
        refused = client.get("/auth/test")
    assert_service_unavailable(refused, retry_after="1")
    assert client.get("/auth/test").status_code == 200  # the connection came back: served again


def test_a_refused_request_changes_nothing(reconfigure, owner, signed, settings, tmp_path):
    from accounts.models import Keypair
    from vfolders import services as vfolders
    from vfolders.models import VFolder

    settings.VFOLDER_ROOT = tmp_path / "vfroot"
    vfolders.ensure_default_storage_host()
    client = signed(owner)
    used = Keypair.objects.values_list("num_queries", flat=True).get(pk=owner.main_keypair.pk)
    reconfigure(pool={"min_size": 0, "max_size": 1, "timeout": 0.5})
    with connection_held_elsewhere():
        refused = client.post("/folders", {"name": "mydata", "host": "local:volume1", "usage_mode": "general",
                                           "permission": "rw", "quota": "0", "cloneable": False})
    assert_service_unavailable(refused, retry_after="1")
    assert not VFolder.objects.filter(name="mydata").exists()
    assert Keypair.objects.values_list("num_queries", flat=True).get(pk=owner.main_keypair.pk) == used


def test_a_web_page_that_gets_no_pooled_connection_is_a_plain_503_page(reconfigure, owner, client):
    client.force_login(owner)
    assert client.get("/ui/").status_code == 200
    reconfigure(pool={"min_size": 0, "max_size": 1, "timeout": 0.5})
    with connection_held_elsewhere():
        refused = client.get("/ui/")
    assert refused.status_code == 503
    assert refused["Content-Type"].startswith("text/html")
    assert refused["Retry-After"] == "1"
    assert b"Service temporarily unavailable" in refused.content
    assert client.get("/ui/").status_code == 200


def test_the_500_page_renders_while_the_database_is_unreachable(reconfigure, free_port):
    from django.template.loader import render_to_string

    reconfigure(pool=None, port=free_port())  # nothing listens there: any query would fail
    html = render_to_string("500.html")
    assert "Something went wrong" in html


@pytest.mark.parametrize("pooled", [True, False], ids=["pooled", "unpooled"])
def test_an_unreachable_database_is_answered_503_not_500(reconfigure, owner, signed, free_port, pooled):
    client = signed(owner)
    reconfigure(pool={"min_size": 0, "max_size": 2, "timeout": 1} if pooled else None, port=free_port())
    refused = client.get("/auth/test")
    # through a pool the request waits for a connection that never comes; without one, the connect fails
    assert_service_unavailable(refused, retry_after="1" if pooled else "5")


def test_an_agent_link_that_gets_no_pooled_connection_closes_with_1013(reconfigure, settings):
    from backendai.asgi import application

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    reconfigure(pool={"min_size": 0, "max_size": 1, "timeout": 0.5})

    async def body():
        link = WebsocketCommunicator(application, "/agent-api/v1/link?agent_id=node-1",
                                     headers=[(b"authorization", b"Bearer bat_not-checked-before-the-pool")])
        connected, _ = await link.connect(timeout=60)
        assert connected  # accepted only to say why it closes: a close before accept is a bare 403
        closing = await link.receive_output(timeout=60)
        assert closing == {"type": "websocket.close", "code": 1013,
                           "reason": "database unavailable, try again later"}
        await link.wait(timeout=10)

    with connection_held_elsewhere():
        async_to_sync(body)()


def test_a_forked_child_opens_its_own_pool_and_leaves_the_parents_connection_alone(reconfigure):
    """Celery's prefork children: a pool inherited over fork() is dropped, never used or closed."""
    reconfigure(pool={"min_size": 0, "max_size": 1, "timeout": 10})
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        parent_pid = cursor.fetchone()[0]
    connection.close()  # back into the (one-connection) pool, idle, as between two requests

    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through its exit status
        status = 1
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                status = 0 if cursor.fetchone()[0] != parent_pid else 3
            connection.close()
            connection.close_pool()  # closes the child's own pool only
        finally:
            os._exit(status)
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(child, os.WNOHANG)
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if not done:
        os.kill(child, 9)
        os.waitpid(child, 0)
        pytest.fail("the forked child did not finish")
    assert os.waitstatus_to_exitcode(status) == 0  # 3: the child talked over the parent's connection
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] == parent_pid  # the parent's pooled connection is still the same, alive
