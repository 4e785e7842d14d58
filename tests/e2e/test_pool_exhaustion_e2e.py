"""A live daphne with a database pool of two connections, hit by bursts of concurrent signed
requests: every answer is a 200 or a 503 service-unavailable problem with Retry-After, never a 500,
and the server serves normally right after (backendai/api/unavailable.py, docs/production.md)."""
from __future__ import annotations

import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from django.db import connection

from backendai import signing
from helpers import require

pytestmark = pytest.mark.e2e

BURST = 40
ENDPOINTS = ["/auth/test", "/keypairs", "/config/resource-slots", "/manager/announcement"]


@pytest.fixture
def live_stack_env():
    return {"DB_POOL_MIN_SIZE": "0", "DB_POOL_MAX_SIZE": "2", "DB_POOL_TIMEOUT": "1"}


def signed_get(stack, keypair, target: str) -> tuple[int, dict, bytes]:
    headers = signing.signed_headers(keypair.access_key, keypair.secret_key, "GET", target, stack.host,
                                     content_type="text/plain")
    conn = http.client.HTTPConnection(stack.host, timeout=120)
    try:
        conn.request("GET", target, headers={**headers, "Host": stack.host})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def burst(stack, keypair, done: list):
    """BURST requests at once over the endpoints: (executor, futures); ``done`` collects each answer as it comes."""
    start = threading.Barrier(BURST, timeout=60)

    def one(index):
        start.wait()
        answer = signed_get(stack, keypair, ENDPOINTS[index % len(ENDPOINTS)])
        done.append(answer)
        return answer

    pool = ThreadPoolExecutor(BURST)
    return pool, [pool.submit(one, index) for index in range(BURST)]


def assert_200_or_503(answers) -> None:
    for status, headers, body in answers:
        assert status in (200, 503), (status, body[:500])
        if status == 503:
            assert headers["content-type"].startswith("application/problem+json")
            assert json.loads(body)["type"] == "https://api.backend.ai/probs/service-unavailable"
            assert int(headers["retry-after"]) >= 1


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_burst_beyond_the_pool_gets_200s_and_503s_only_and_the_server_recovers(live_stack, owner):
    require(connection.vendor == "postgresql", "PostgreSQL (the connection pool is PostgreSQL's)")
    keypair = owner.main_keypair
    assert signed_get(live_stack, keypair, "/auth/test")[0] == 200

    # 1. a plain burst: 40 requests for 2 connections, each waiting at most 1 s for one
    done: list = []
    pool, futures = burst(live_stack, keypair, done)
    answers = [future.result(timeout=180) for future in futures]
    pool.shutdown()
    assert_200_or_503(answers)

    # 2. the same burst while the keypair table is locked: the two requests that got the pool's
    # connections wait on the lock, so every other one must be refused with 503, never a 500
    from accounts.models import Keypair

    settings_dict = connection.settings_dict
    with psycopg.connect(host=settings_dict["HOST"] or "127.0.0.1", port=settings_dict["PORT"] or 5432,
                         user=settings_dict["USER"] or "postgres", password=settings_dict["PASSWORD"] or None,
                         dbname=settings_dict["NAME"], autocommit=True) as locker:
        done = []
        with locker.transaction():
            locker.execute("SET LOCAL lock_timeout = '60s'")
            locker.execute(f'LOCK TABLE "{Keypair._meta.db_table}" IN ACCESS EXCLUSIVE MODE')
            pool, futures = burst(live_stack, keypair, done)
            wait_until(lambda: len(done) >= BURST - 2, timeout=120, what="the requests beyond the pool to be refused")
        answers = [future.result(timeout=180) for future in futures]  # the two waiting ones finish once unlocked
        pool.shutdown()
    assert_200_or_503(answers)
    assert any(status == 503 for status, _, _ in answers)

    # 3. right after: served normally
    for target in ENDPOINTS:
        status, _, body = signed_get(live_stack, keypair, target)
        assert status == 200, body[:500]
