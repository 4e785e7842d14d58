"""Per-access-key rolling-window rate limiting (900 s window) on the `limits` library.

The moving-window strategy keeps one timestamp per counted call and lets a call
through while fewer than the key's limit fall inside the last 900 s.  The storage
is Redis when ``REDIS_URL`` is set (a list per key, changed by limits' Lua
scripts, with the project's socket timeouts) and an in-process store otherwise
(embedded mode).  A Redis error is not swallowed: it leaves the authentication
as the error it is, like every other Redis failure of a request.

A refused call is not counted (limits' moving window records only calls it lets
through), so a client over its limit gets through again once its oldest counted
call is 900 s old, however often it knocked in between.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

from django.conf import settings
from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import MovingWindowRateLimiter

from backendai import telemetry

WINDOW_SECONDS = 900
ANONYMOUS_LIMIT = 1000
KEY_PREFIX = "ratelimit"


@dataclass(frozen=True)
class RateLimitState:
    limit: int
    remaining: int
    exceeded: bool = False
    window: int = WINDOW_SECONDS

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Window": str(self.window),
        }


ANONYMOUS_STATE = RateLimitState(limit=ANONYMOUS_LIMIT, remaining=ANONYMOUS_LIMIT)


class KeyWindow(RateLimitItemPerSecond):
    """`limit` calls per `window` seconds for one key.  limits' own storage key also names the amount and
    the window; this one names the key alone, so a keypair whose limit changes keeps the calls already
    counted, as one window per key always did."""

    def key_for(self, *identifiers) -> str:
        return "/".join([self.namespace, *(str(part) for part in identifiers)])


class RateLimiter:
    """limits' moving-window strategy over one storage, answering the state the API headers show."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self.layer = "redis" if isinstance(storage, RedisStorage) else "memory"  # backendai_layer_operation_*
        self._strategy = MovingWindowRateLimiter(storage)

    def hit(self, key: str, limit: int, window: int = WINDOW_SECONDS) -> RateLimitState:
        item = KeyWindow(limit, window)
        with telemetry.layer_operation(self.layer, "rate_limit_hit"):
            if not self._strategy.hit(item, key):
                return RateLimitState(limit=limit, remaining=0, exceeded=True, window=window)
            remaining = self._strategy.get_window_stats(item, key).remaining
        return RateLimitState(limit=limit, remaining=max(remaining, 0), window=window)

    def reset(self) -> None:
        """Forget every key's calls (tests start from empty windows)."""
        self.storage.reset()


def make_storage() -> Storage:
    if settings.REDIS_URL:
        return RedisStorage(settings.REDIS_URL, key_prefix=KEY_PREFIX,
                            **getattr(settings, "REDIS_CONNECTION_OPTIONS", {}))
    return MemoryStorage()


_limiter: RateLimiter | None = None
_limiter_lock = threading.Lock()


def get_limiter() -> RateLimiter:
    global _limiter
    with _limiter_lock:
        if _limiter is None:
            _limiter = RateLimiter(make_storage())
        return _limiter


def check(access_key: str, limit: int) -> RateLimitState:
    """Count this request against the key's window and return the new state."""
    return get_limiter().hit(access_key, limit)
