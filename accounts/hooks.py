"""Hooks that apps above ``accounts`` register, so accounts never imports them.

``register_concurrency_counter(fn)``: ``fn(access_keys)`` returns ``{access_key: n}``, the
number of sessions of each keypair that hold one of its concurrency slots (what GraphQL's
``KeyPair.concurrency_used`` answers).  The sessions app, which owns the session statuses,
registers it in its ``AppConfig.ready()``; with none registered the count is unknown (null)."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

ConcurrencyCounter = Callable[[Iterable[str]], Mapping[str, int]]

_concurrency_counters: list[ConcurrencyCounter] = []


def register_concurrency_counter(counter: ConcurrencyCounter) -> ConcurrencyCounter:
    """Set the counter of keypairs' concurrent sessions (registering one twice keeps one)."""
    if counter not in _concurrency_counters:
        _concurrency_counters.append(counter)
    return counter


def unregister_concurrency_counter(counter: ConcurrencyCounter) -> None:
    if counter in _concurrency_counters:
        _concurrency_counters.remove(counter)


def concurrency_used(access_keys: Iterable[str]) -> dict[str, int] | None:
    """``{access_key: n}`` summed over the registered counters, or None when none is registered."""
    if not _concurrency_counters:
        return None
    keys = list(access_keys)
    total = dict.fromkeys(keys, 0)
    for counter in list(_concurrency_counters):
        for key, count in counter(keys).items():
            if key in total:
                total[key] += int(count)
    return total
