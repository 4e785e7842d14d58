"""Resource slots as plain integer vectors, for the scheduler's hot loop.

``backendai.slots.ResourceSlot`` is exact and convenient but allocates a new
mapping of Decimals on every operation; a pass compares thousands of requests
against thousands of agents, so it works on tuples of ints instead:

* every slot name of the pass gets a position (``SlotSpace.index``);
* a ``count`` amount is stored in thousandths (counts are quantized to three
  decimal places, so this is exact), a ``bytes`` amount as bytes;
* an unlimited amount is ``math.inf`` (ints compare and add with it).

Parsing goes through ``backendai.slots`` so the rules stay in one place; the
results are memoised per raw value because a queue repeats the same few
amounts over and over.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from decimal import Decimal

from backendai.slots import humanize_binary_size, parse_binary_size, parse_count, slot_type_of

INF = math.inf
# The order in which requested slots rank agents (reference §3.1; "cuda" also
# covers "cuda.device", "cuda.shares", ...).  A scaling group may override it
# with ``agent_selector_config.resource_priority``.
DEFAULT_RESOURCE_PRIORITY = ("cuda", "rocm", "tpu", "cpu", "mem")
INTRINSIC = frozenset({"cpu", "mem"})


class SlotSpace:
    """The slot names of one pass and their conversion to/from int vectors."""

    def __init__(self, names: Iterable[str], slot_types: Mapping[str, str]):
        self.types = dict(slot_types)
        self.names: tuple[str, ...] = tuple(sorted(set(names) | set(slot_types)))
        self.index: dict[str, int] = {n: i for i, n in enumerate(self.names)}
        self.kinds: tuple[str, ...] = tuple(slot_type_of(n, self.types) for n in self.names)
        self.zero: tuple = (0,) * len(self.names)
        self.accelerator_dims = frozenset(i for i, n in enumerate(self.names) if n not in INTRINSIC)
        self._memo: dict[tuple[int, object], float | int] = {}

    def __len__(self) -> int:
        return len(self.names)

    # -- conversion ---------------------------------------------------------
    def amount(self, dim: int, raw) -> int | float:
        key = (dim, raw if not isinstance(raw, float) else repr(raw))
        try:
            return self._memo[key]
        except (KeyError, TypeError):
            pass
        if self.kinds[dim] == "bytes":
            value = parse_binary_size(str(raw) if isinstance(raw, (Decimal, float)) else raw, self.names[dim])
            result = INF if value.is_infinite() else int(value)
        else:
            value = parse_count(str(raw) if isinstance(raw, float) else raw, self.names[dim])
            result = INF if value.is_infinite() else int(value * 1000)
        try:
            self._memo[key] = result
        except TypeError:
            pass
        return result

    def vector(self, mapping: Mapping | None) -> tuple:
        """A slot map (JSON of decimal strings) as a vector; unknown names raise KeyError."""
        if not mapping:
            return self.zero
        out = list(self.zero)
        for name, raw in mapping.items():
            dim = self.index[name]
            out[dim] = self.amount(dim, raw)
        return tuple(out)

    def limit(self, mapping: Mapping | None, unlimited_for_unspecified: bool) -> tuple:
        """A policy limit: listed slots as given, the others 0 (LIMITED) or ∞ (UNLIMITED)."""
        fill = INF if unlimited_for_unspecified else 0
        out = [fill] * len(self.names)
        for name, raw in (mapping or {}).items():
            if name in self.index:
                out[self.index[name]] = self.amount(self.index[name], raw)
        return tuple(out)

    # -- presentation ---------------------------------------------------------
    def format_amount(self, dim: int, value) -> str:
        if value == INF:
            return "unlimited"
        if self.kinds[dim] == "bytes":
            return humanize_binary_size(int(value))
        text = format((Decimal(int(value)) / 1000).normalize(), "f")
        return text

    def describe(self, vec: Iterable, *, skip_zero: bool = True) -> str:
        """``cpu 4, mem 8 GiB`` in the order of the slot names."""
        parts = [f"{self.names[d]} {self.format_amount(d, v)}" for d, v in enumerate(vec) if v or not skip_zero]
        return ", ".join(parts) if parts else "nothing"

    def to_json(self, vec: Iterable) -> dict[str, str]:
        out = {}
        for d, v in enumerate(vec):
            if v == INF:
                out[self.names[d]] = "Infinity"
            elif self.kinds[d] == "bytes":
                out[self.names[d]] = str(int(v))
            else:
                out[self.names[d]] = format((Decimal(int(v)) / 1000).normalize(), "f")
        return out

    # -- ranking ---------------------------------------------------------------
    def priority_order(self, dims: Iterable[int], priority: Iterable[str] = DEFAULT_RESOURCE_PRIORITY) -> tuple[int, ...]:
        """Requested dims ordered by the resource priority list; device sub-slots
        follow their device; unlisted names come last, alphabetically."""
        priority = tuple(priority)

        def rank(dim: int):
            name = self.names[dim]
            for pos, prefix in enumerate(priority):
                if name == prefix or name.startswith(prefix + ".") or name.startswith(prefix + ":"):
                    return (pos, name)
            return (len(priority), name)

        return tuple(sorted(dims, key=rank))


def add(a, b) -> tuple:
    return tuple(x + y for x, y in zip(a, b))


def sub(a, b) -> tuple:
    return tuple(x - y for x, y in zip(a, b))


def fits(request, free) -> bool:
    return all(r <= f for r, f in zip(request, free))


def dominates(small, big) -> bool:
    """Whether ``small <= big`` on every dim."""
    return all(s <= b for s, b in zip(small, big))
