"""Agent selectors: which ALIVE agent of the scaling group gets a request.

All strategies consider only agents of the request's architecture whose free
capacity (available minus the live kernels' requests) covers the request on
every requested slot (reference §3.1).  They rank the fitting agents by a key
built from the requested slots in resource-priority order (cuda, rocm, tpu,
cpu, mem), preceded by ``num_extras``: how many accelerator slots the agent
offers that the request leaves at zero, so CPU-only sessions avoid GPU nodes.

* ``dispersed`` (default): the fitting agent with the largest
  ``(-num_extras, free[k1], free[k2], ...)``: spread the load.
* ``concentrated``: the fitting agent with the smallest
  ``(num_extras, free[k1], ...)``: bin-packing.
* ``legacy``: the largest ``(-num_extras, available[k1], ...)``: the biggest node.
* ``roundrobin``: agents of the architecture sorted by id, starting at the
  group's remembered index; the first that fits, and the index moves past it.

Ties go to the smallest agent id.

Performance: a pass may place 10 000 sessions on 1 000 agents, so instead of
scanning every agent for every request the pool keeps, per architecture and
per *shape* (the tuple of requested slots), a sorted list of the agents' keys
and walks it from the best end, skipping a whole ``num_extras`` band as soon
as the first-priority slot no longer fits.  Because free capacity only shrinks
during a pass, a request that found no agent stays impossible for the rest of
the pass, and so does any request at least as large: the pool remembers those
failures and answers them at once.
"""
from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass, field

from sessions.scheduler.slotspace import DEFAULT_RESOURCE_PRIORITY, SlotSpace, dominates

STRATEGIES = ("dispersed", "concentrated", "roundrobin", "legacy")
_MAX_REMEMBERED_FAILURES = 64


@dataclass(eq=False)
class AgentSlot:
    """One agent as the pass sees it: capacity and what is still free."""

    id: str
    addr: str
    architecture: str
    available: tuple
    free: list
    schedulable: bool = True
    rank: int = 0  # position in id order (ties, round-robin)
    kernels_added: int = 0

    def fits(self, request: tuple, dims: tuple[int, ...]) -> bool:
        free = self.free
        return all(request[d] <= free[d] for d in dims)


@dataclass
class Shape:
    """A request vector with what ranking needs precomputed."""

    vector: tuple
    dims: tuple[int, ...]  # requested (non-zero) dims, in priority order
    zero_accelerators: frozenset[int]

    def extras(self, agent: AgentSlot) -> int:
        available = agent.available
        return sum(1 for d in self.zero_accelerators if available[d] > 0)


@dataclass
class _Index:
    """Sorted keys of the schedulable agents of one architecture for one shape."""

    entries: list = field(default_factory=list)
    key_of: dict = field(default_factory=dict)  # agent rank -> its current entry


class AgentPool:
    """The agents of one pass, their free capacity and the selection strategy."""

    def __init__(self, space: SlotSpace, agents: list[AgentSlot], strategy: str = "dispersed",
                 priority=DEFAULT_RESOURCE_PRIORITY, rr_next: dict[str, int] | None = None):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown agent selection strategy {strategy!r}")
        self.space = space
        self.strategy = strategy
        self.priority = tuple(priority) or DEFAULT_RESOURCE_PRIORITY
        self.agents = sorted(agents, key=lambda a: a.id)
        for rank, agent in enumerate(self.agents):
            agent.rank = rank
        self.by_id = {a.id: a for a in self.agents}
        self.by_arch: dict[str, list[AgentSlot]] = {}
        for agent in self.agents:
            if agent.schedulable:
                self.by_arch.setdefault(agent.architecture, []).append(agent)
        self.rr_next = dict(rr_next or {})
        self.rr_changed: set[str] = set()
        self._indexes: dict[tuple, _Index] = {}
        self._arch_indexes: dict[str, list[_Index]] = {}  # the same indexes, by architecture
        self._failures: dict[str, list[tuple]] = {}
        self._shapes: dict[tuple, Shape] = {}
        self.tentative = 0  # allocations of a multi-node session not yet committed
        self.messages: dict = {}  # the dispatcher's "no agent" texts, per request and architecture

    # -- shapes and keys ----------------------------------------------------
    def shape(self, vector: tuple) -> Shape:
        shape = self._shapes.get(vector)
        if shape is None:
            dims = self.space.priority_order([d for d, v in enumerate(vector) if v], self.priority)
            zero_acc = frozenset(d for d in self.space.accelerator_dims if not vector[d])
            shape = self._shapes[vector] = Shape(vector, dims, zero_acc)
        return shape

    def _key(self, shape: Shape, agent: AgentSlot, extras: int | None = None) -> tuple:
        if extras is None:
            extras = shape.extras(agent)
        if self.strategy == "dispersed":
            return (-extras, *[agent.free[d] for d in shape.dims], -agent.rank)
        if self.strategy == "concentrated":
            return (extras, *[agent.free[d] for d in shape.dims], agent.rank)
        return (-extras, *[agent.available[d] for d in shape.dims], -agent.rank)  # legacy: static

    def _index(self, arch: str, shape: Shape) -> _Index:
        key = (arch, shape.dims, shape.zero_accelerators)
        index = self._indexes.get(key)
        if index is None:
            index = self._indexes[key] = _Index()
            self._arch_indexes.setdefault(arch, []).append(index)
            for agent in self.by_arch.get(arch, ()):
                extras = shape.extras(agent)  # static: ``available`` does not change during a pass
                entry = self._key(shape, agent, extras)
                index.entries.append(entry)
                index.key_of[agent.rank] = (entry, shape, extras)
            index.entries.sort()
        return index

    # -- selection ------------------------------------------------------------
    def count(self, arch: str) -> int:
        return len(self.by_arch.get(arch, ()))

    def select(self, vector: tuple, arch: str) -> AgentSlot | None:
        """The agent the strategy picks for ``vector`` among schedulable agents of ``arch``."""
        agents = self.by_arch.get(arch)
        if not agents:
            return None
        shape = self.shape(vector)
        for failed in self._failures.get(arch, ()):
            if dominates(failed, vector):
                return None
        if self.strategy == "roundrobin":
            chosen = self._roundrobin(agents, shape, arch)
        elif self.strategy == "dispersed":
            chosen = self._scan_down(self._index(arch, shape), shape)
        elif self.strategy == "legacy":
            chosen = self._scan_down(self._index(arch, shape), shape)
        else:
            chosen = self._concentrated(self._index(arch, shape), shape)
        if chosen is None and not self.tentative:
            self._remember_failure(arch, vector)
        return chosen

    def _remember_failure(self, arch: str, vector: tuple) -> None:
        known = self._failures.setdefault(arch, [])
        known[:] = [f for f in known if not dominates(vector, f)]
        known.append(vector)
        if len(known) > _MAX_REMEMBERED_FAILURES:
            del known[0]

    def _scan_down(self, index: _Index, shape: Shape) -> AgentSlot | None:
        """The largest fitting key.  ``entry[1]`` is the first-priority slot's free
        (dispersed) or available (legacy) amount; below the need, no agent of the
        band fits, so the walk jumps to the next band."""
        entries, dims, vec = index.entries, shape.dims, shape.vector
        agents = self.agents
        i = len(entries) - 1
        if not dims:
            return agents[-entries[i][-1]] if i >= 0 else None
        first_need = vec[dims[0]]
        while i >= 0:
            entry = entries[i]
            if entry[1] < first_need:
                # nothing further down this num_extras band has enough of the first slot
                i = bisect_left(entries, (entry[0],), 0, i) - 1
                continue
            agent = agents[-entry[-1]]
            if agent.fits(vec, dims):
                return agent
            i -= 1
        return None

    def _concentrated(self, index: _Index, shape: Shape) -> AgentSlot | None:
        entries, dims, vec = index.entries, shape.dims, shape.vector
        agents = self.agents
        if not dims:
            return agents[entries[0][-1]] if entries else None
        first_need = vec[dims[0]]
        i, n = 0, len(entries)
        while i < n:
            entry = entries[i]
            if entry[1] < first_need:
                i = bisect_left(entries, (entry[0], first_need), i, n)
                continue
            agent = agents[entry[-1]]
            if agent.fits(vec, dims):
                return agent
            i += 1
        return None

    def _roundrobin(self, agents: list[AgentSlot], shape: Shape, arch: str) -> AgentSlot | None:
        n = len(agents)
        start = self.rr_next.get(arch, 0) % n
        for step in range(n):
            agent = agents[(start + step) % n]
            if agent.fits(shape.vector, shape.dims):
                self.rr_next[arch] = (start + step + 1) % n
                self.rr_changed.add(arch)
                return agent
        return None

    # -- bookkeeping ------------------------------------------------------------
    def allocate(self, agent: AgentSlot, vector: tuple) -> None:
        self._change(agent, vector, +1)

    def release(self, agent: AgentSlot, vector: tuple) -> None:
        self._change(agent, vector, -1)

    def _change(self, agent: AgentSlot, vector: tuple, sign: int) -> None:
        free = agent.free
        for d, v in enumerate(vector):
            if v:
                free[d] -= sign * v
        agent.kernels_added += sign
        if not agent.schedulable or self.strategy in ("legacy", "roundrobin"):
            return
        for index in self._arch_indexes.get(agent.architecture, ()):
            old, shape, extras = index.key_of[agent.rank]
            new = self._key(shape, agent, extras)
            if new == old:
                continue
            entries = index.entries
            del entries[bisect_left(entries, old)]
            insort(entries, new)
            index.key_of[agent.rank] = (new, shape, extras)
