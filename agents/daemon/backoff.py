"""Exponential back-off with jitter."""
from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays of ``base * factor**n`` seconds, capped, with "equal jitter" (half fixed, half random).

    >>> b = Backoff(base=1, cap=30); [round(b.next()) <= 30 for _ in range(10)]
    [True, True, True, True, True, True, True, True, True, True]
    """

    def __init__(self, base: float = 1.0, cap: float = 30.0, factor: float = 2.0, rng: random.Random | None = None):
        self.base, self.cap, self.factor = base, cap, factor
        self.failures = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        """The delay before the next attempt; counts one more failure."""
        ceiling = min(self.cap, self.base * self.factor ** min(self.failures, 32))
        self.failures += 1
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.failures = 0
