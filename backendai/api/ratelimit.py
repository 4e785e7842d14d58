"""Per-access-key rolling-window rate limiting (900 s window).

On Redis, a sorted set per key holds one member per request scored by its
time; a Lua script drops entries older than the window, adds the current
request, refreshes the key's expiry and returns the count, atomically.  With no
Redis (embedded mode) an in-process deque per key does the same.
"""
from __future__ import annotations

import secrets
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass

from django.conf import settings

WINDOW_SECONDS = 900
ANONYMOUS_LIMIT = 1000

_LUA_HIT = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
redis.call('ZADD', key, now, ARGV[3])
redis.call('EXPIRE', key, window)
return redis.call('ZCARD', key)
"""


@dataclass(frozen=True)
class RateLimitState:
    limit: int
    count: int
    window: int = WINDOW_SECONDS

    @property
    def remaining(self) -> int:
        return max(self.limit - self.count, 0)

    @property
    def exceeded(self) -> bool:
        return self.count > self.limit

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Window": str(self.window),
        }


ANONYMOUS_STATE = RateLimitState(limit=ANONYMOUS_LIMIT, count=0)


class MemoryRateLimiter:
    def __init__(self):
        self._hits: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def hit(self, key: str, window: int = WINDOW_SECONDS) -> int:
        now = time.monotonic()
        with self._lock:
            hits = self._hits[key]
            while hits and hits[0] <= now - window:
                hits.popleft()
            hits.append(now)
            return len(hits)

    def reset(self, key: str | None = None) -> None:
        with self._lock:
            if key is None:
                self._hits.clear()
            else:
                self._hits.pop(key, None)


class RedisRateLimiter:
    def __init__(self, url: str):
        import redis

        self._client = redis.Redis.from_url(url, **getattr(settings, "REDIS_CONNECTION_OPTIONS", {}))
        self._script = self._client.register_script(_LUA_HIT)

    def hit(self, key: str, window: int = WINDOW_SECONDS) -> int:
        member = f"{time.time():.6f}:{secrets.token_hex(4)}"
        return int(self._script(keys=[f"ratelimit:{key}"], args=[time.time(), window, member]))

    def reset(self, key: str | None = None) -> None:
        if key is None:
            for name in self._client.scan_iter("ratelimit:*"):
                self._client.delete(name)
        else:
            self._client.delete(f"ratelimit:{key}")


_limiter = None
_limiter_lock = threading.Lock()


def get_limiter():
    global _limiter
    with _limiter_lock:
        if _limiter is None:
            _limiter = RedisRateLimiter(settings.REDIS_URL) if settings.REDIS_URL else MemoryRateLimiter()
        return _limiter


def check(access_key: str, limit: int) -> RateLimitState:
    """Count this request against the key's window and return the new state."""
    return RateLimitState(limit=limit, count=get_limiter().hit(access_key))
