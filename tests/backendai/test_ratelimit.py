"""Per-keypair rolling-window rate limiting (Redis when configured, in-memory otherwise)."""
import time

import pytest
import redis
from limits.storage import MemoryStorage, RedisStorage

from accounts.models import Keypair
from backendai.api.ratelimit import RateLimiter

pytestmark = pytest.mark.django_db


def test_remaining_counts_down_with_each_call(signed, owner):
    Keypair.objects.filter(pk=owner.main_keypair_id).update(rate_limit=5)
    api = signed(owner)
    seen = []
    for _ in range(3):
        response = api.get("/auth/test")
        assert response.status_code == 200
        assert response["X-RateLimit-Limit"] == "5"
        assert response["X-RateLimit-Window"] == "900"
        seen.append(int(response["X-RateLimit-Remaining"]))
    assert seen == [4, 3, 2]


def test_the_call_past_the_limit_gets_429_and_does_nothing(signed, owner):
    Keypair.objects.filter(pk=owner.main_keypair_id).update(rate_limit=2)
    api = signed(owner)
    assert api.get("/auth/test").status_code == 200
    assert api.get("/auth/test").status_code == 200
    before = Keypair.objects.filter(user=owner).count()
    response = api.post("/keypairs")  # would create a keypair
    assert response.status_code == 429
    assert response["Content-Type"].startswith("application/problem+json")
    assert response.json()["type"].endswith("/rate-limit-exceeded")
    assert response["X-RateLimit-Remaining"] == "0"
    assert Keypair.objects.filter(user=owner).count() == before


def test_limits_are_counted_per_keypair(signed, owner, member):
    Keypair.objects.filter(pk=owner.main_keypair_id).update(rate_limit=1)
    assert signed(owner).get("/auth/test").status_code == 200
    assert signed(owner).get("/auth/test").status_code == 429
    assert signed(member).get("/auth/test").status_code == 200


def test_anonymous_calls_carry_the_fixed_anonymous_headers(client, defaults):
    response = client.get("/")
    assert response.status_code == 200
    assert (response["X-RateLimit-Limit"], response["X-RateLimit-Remaining"], response["X-RateLimit-Window"]) == (
        "1000", "1000", "900")


def test_even_a_refused_signature_carries_rate_limit_headers(client, defaults):
    response = client.get("/auth/test", HTTP_AUTHORIZATION="BackendAI garbage")
    assert response.status_code == 400
    assert response["X-RateLimit-Window"] == "900"


def test_the_memory_limiter_forgets_hits_older_than_the_window():
    limiter = RateLimiter(MemoryStorage())
    assert limiter.hit("k", limit=2, window=1).remaining == 1
    assert limiter.hit("k", limit=2, window=1).remaining == 0
    assert limiter.hit("k", limit=2, window=1).exceeded
    time.sleep(1.1)  # limits counts whole seconds: every earlier hit has left the one-second window
    assert limiter.hit("k", limit=2, window=1).remaining == 1


def test_a_changed_limit_applies_to_the_calls_already_counted(signed, owner):
    Keypair.objects.filter(pk=owner.main_keypair_id).update(rate_limit=5)
    api = signed(owner)
    for _ in range(3):
        assert api.get("/auth/test").status_code == 200
    Keypair.objects.filter(pk=owner.main_keypair_id).update(rate_limit=3)
    response = api.get("/auth/test")
    assert response.status_code == 429 and response["X-RateLimit-Limit"] == "3"


def test_a_redis_it_cannot_reach_is_an_error_not_a_free_pass():
    limiter = RateLimiter(RedisStorage("redis://127.0.0.1:9/0", socket_connect_timeout=1, socket_timeout=1))
    with pytest.raises(redis.ConnectionError):
        limiter.hit("k", limit=10)
