"""The indexed agent selection (``selectors.AgentPool``: sorted keys per shape, bisect,
remembered failures) picks exactly the agent a straightforward scan of every agent
picks, on seeded random inputs: multi-slot requests, agents filled to exact
capacity, several architectures, unschedulable agents, multi-node sessions that
release what they held when one kernel cannot be placed.

The scan below is written from the rules in docs/scheduler.md, not from the pool:
the fitting agents of the architecture (every requested slot covered), ranked by
``num_extras`` then the requested slots' free (or, for ``legacy``, available)
amounts in resource-priority order, ties to the smallest agent id; round-robin
takes the first fitting agent from the remembered index in id order."""
from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from sessions.scheduler import dispatcher, snapshot
from sessions.scheduler.selectors import STRATEGIES, AgentPool, AgentSlot
from sessions.scheduler.slotspace import SlotSpace

SLOT_TYPES = {"cpu": "count", "mem": "bytes", "cuda.device": "count", "rocm.device": "count"}
ARCHS = ("x86_64", "aarch64")
GIB = 1024**3


class Scan:
    """The straightforward selector: every agent looked at for every request."""

    def __init__(self, space: SlotSpace, agents: list[tuple], strategy: str, rr_next=None):
        # agents: (id, arch, available vector, free vector, schedulable)
        self.space = space
        self.strategy = strategy
        self.agents = sorted(agents, key=lambda a: a[0])
        self.free = {a[0]: list(a[3]) for a in self.agents}
        self.rr_next = dict(rr_next or {})

    def select(self, vec, arch):
        dims = [d for d, v in enumerate(vec) if v]
        order = self.space.priority_order(dims)
        zero_acc = [d for d in self.space.accelerator_dims if not vec[d]]
        candidates = [a for a in self.agents if a[4] and a[1] == arch]
        fitting = [a for a in candidates if all(vec[d] <= self.free[a[0]][d] for d in dims)]
        if self.strategy == "roundrobin":
            if not candidates:
                return None
            start = self.rr_next.get(arch, 0) % len(candidates)
            for step in range(len(candidates)):
                agent = candidates[(start + step) % len(candidates)]
                if agent in fitting:
                    self.rr_next[arch] = (start + step + 1) % len(candidates)
                    return agent[0]
            return None
        best, best_key = None, None
        for agent in fitting:  # in id order: a later agent wins only when strictly better
            extras = sum(1 for d in zero_acc if agent[2][d] > 0)
            if self.strategy == "concentrated":
                key = (extras, *(self.free[agent[0]][d] for d in order))
                better = best_key is None or key < best_key
            else:
                amounts = agent[2] if self.strategy == "legacy" else self.free[agent[0]]
                key = (-extras, *(amounts[d] for d in order))
                better = best_key is None or key > best_key
            if better:
                best, best_key = agent[0], key
        return best

    def allocate(self, agent_id, vec, sign=1):
        free = self.free[agent_id]
        for d, v in enumerate(vec):
            free[d] -= sign * v


def random_agents(rng: random.Random, space: SlotSpace, n: int) -> list[tuple]:
    agents = []
    for i in range(n):
        available = {"cpu": str(rng.choice((1, 2, 3, 4, 8))), "mem": str(rng.choice((1, 2, 4, 8)) * GIB)}
        if rng.random() < 0.3:
            available["cuda.device"] = str(rng.choice((1, 2, 4)))
        if rng.random() < 0.1:
            available["rocm.device"] = str(rng.choice((1, 2)))
        avail = space.vector(available)
        used = [rng.choice((0, 0, v // 2, v)) if isinstance(v, int) else 0 for v in avail]  # some start full
        free = tuple(a - u for a, u in zip(avail, used))
        agents.append((f"ag-{rng.randrange(10**6):06d}-{i}", rng.choice(ARCHS), avail, free, rng.random() > 0.1))
    return agents


def random_request(rng: random.Random, space: SlotSpace, agents: list[tuple], free: dict) -> tuple:
    if agents and rng.random() < 0.25:
        # exactly what one agent has left on two or three slots
        agent = rng.choice(agents)
        left = free[agent[0]]
        names = rng.sample(["cpu", "mem", "cuda.device"], rng.choice((2, 3)))
        vec = [0] * len(space)
        for name in names:
            d = space.index[name]
            vec[d] = max(left[d], 0)
        return tuple(vec)
    raw = {"cpu": str(rng.choice((0.5, 1, 2, 3))), "mem": str(rng.choice((1, 2, 3)) * GIB // 2)}
    if rng.random() < 0.25:
        raw["cuda.device"] = str(rng.choice((1, 2)))
    if rng.random() < 0.05:
        raw["rocm.device"] = "1"
    if rng.random() < 0.05:
        raw = {"cpu": raw["cpu"]}
    return space.vector(raw)


def agent_slots(agents):
    return [AgentSlot(a[0], "", a[1], a[2], list(a[3]), schedulable=a[4]) for a in agents]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("seed", range(12))
def test_the_pool_picks_what_a_scan_of_every_agent_picks(strategy, seed):
    rng = random.Random(f"{strategy}-{seed}")
    space = SlotSpace([], SLOT_TYPES)
    agents = random_agents(rng, space, rng.choice((1, 5, 40)))
    rr = {arch: rng.randrange(50) for arch in ARCHS}
    pool = AgentPool(space, agent_slots(agents), strategy, rr_next=rr)
    scan = Scan(space, agents, strategy, rr_next=rr)
    for step in range(250):
        arch = rng.choice(ARCHS)
        if rng.random() < 0.2:
            # a multi-node session: kernels placed one by one, all released if one does not fit
            held = []
            for _ in range(rng.choice((2, 3))):
                vec = random_request(rng, space, agents, scan.free)
                pool.tentative = len(held)
                chosen = pool.select(vec, arch)
                expected = scan.select(vec, arch)
                assert (chosen.id if chosen else None) == expected, (step, vec, arch)
                if chosen is None:
                    for agent, held_vec in held:
                        pool.release(agent, held_vec)
                        scan.allocate(agent.id, held_vec, -1)
                    held = []
                    break
                pool.allocate(chosen, vec)
                scan.allocate(chosen.id, vec)
                held.append((chosen, vec))
            pool.tentative = 0
            continue
        vec = random_request(rng, space, agents, scan.free)
        chosen = pool.select(vec, arch)
        expected = scan.select(vec, arch)
        assert (chosen.id if chosen else None) == expected, (step, vec, arch)
        if chosen is not None:
            pool.allocate(chosen, vec)
            scan.allocate(chosen.id, vec)
    assert {a.id: a.free for a in pool.agents} == scan.free
    if strategy == "roundrobin":
        assert {k: v for k, v in pool.rr_next.items()} == {k: v for k, v in scan.rr_next.items()}


def _raw_snapshot(rng: random.Random, n_agents: int, n_sessions: int):
    """A pass's snapshot in memory: agents (with live occupancy) of two architectures, and
    single- and multi-node sessions of one to three kernels, no limits, FIFO order."""
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    agents, occupancy = [], {}
    for i in range(n_agents):
        available = {"cpu": str(rng.choice((1, 2, 4, 8))), "mem": str(rng.choice((1, 2, 4, 8)) * GIB)}
        if rng.random() < 0.3:
            available["cuda.device"] = str(rng.choice((1, 2, 4)))
        agent_id = f"i-{rng.randrange(10**6):06d}-{i}"
        if rng.random() < 0.3:
            occupancy[agent_id] = {"cpu": "1", "mem": str(GIB)}
        agents.append((agent_id, f"10.0.0.{i}", rng.choice(ARCHS), available, rng.random() > 0.1))
    pending, user = [], uuid.uuid4()
    for i in range(n_sessions):
        arch = rng.choice(ARCHS)
        multi = rng.random() < 0.2
        per_kernel = {"cpu": str(rng.choice((1, 2))), "mem": str(rng.choice((1, 2)) * GIB // 2)}
        if rng.random() < 0.25:
            per_kernel["cuda.device"] = "1"
        n_kernels = rng.choice((1, 1, 2, 3))
        session = snapshot.PendingSession(
            id=uuid.UUID(int=rng.getrandbits(128)), name=f"s{i}", created_at=start + timedelta(seconds=i),
            priority=10, session_type="interactive", cluster_mode="multi-node" if multi else "single-node",
            designated=[], access_key=None, user_id=user, project_id=user, domain_id="default", architecture=arch,
            starts_at=None, status_data={}, requested_raw={})
        for k in range(n_kernels):
            session.kernels.append(snapshot.PendingKernel(
                uuid.UUID(int=rng.getrandbits(128)), "main" if k == 0 else "sub", 1 if k == 0 else k,
                "main1" if k == 0 else f"sub{k}", arch, "PENDING", dict(per_kernel)))
        pending.append(session)
    return snapshot.RawSnapshot(
        pending=pending, keypair_policies={}, user_limits={}, project_limits={}, domain_limits={}, dependencies={},
        agents=agents, occupancy=occupancy, usage={}, concurrency={}, pending_elsewhere=[], slot_types=SLOT_TYPES)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("seed", range(6))
def test_a_whole_pass_places_every_kernel_where_the_scan_would(strategy, seed):
    rng = random.Random(f"pass-{strategy}-{seed}")
    raw = _raw_snapshot(rng, rng.choice((3, 30)), 120)
    rr = {arch: rng.randrange(10) for arch in ARCHS}
    decided = dispatcher.decide(raw, group_name="sg", scheduler="fifo",
                                opts={"agent_selection_strategy": strategy}, now=raw.pending[-1].created_at,
                                rr_next=rr)
    space = dispatcher.build_space(raw)
    agents = [(a.id, a.architecture, a.available, tuple(a.free), a.schedulable)
              for a in dispatcher._agent_slots(space, raw)]
    scan = Scan(space, agents, strategy, rr_next=rr)
    placed = {}
    for change in decided.kernels:
        placed[change.id] = change.agent_id
    by_id = {s.id: s for s in raw.pending}
    assert [c.id for c in decided.sessions] == [s.id for s in raw.pending]  # FIFO, one decision each
    for change in decided.sessions:
        session = by_id[change.id]
        vectors = [space.vector(k.requested_raw) for k in session.kernels]
        if session.cluster_mode == "multi-node":
            expected, held = [], []
            for kernel, vec in zip(session.kernels, vectors):
                agent = scan.select(vec, kernel.architecture)
                if agent is None:
                    for agent_id, held_vec in held:
                        scan.allocate(agent_id, held_vec, -1)
                    expected = None
                    break
                scan.allocate(agent, vec)
                held.append((agent, vec))
                expected.append(agent)
        else:
            total = tuple(map(sum, zip(*vectors)))
            agent = scan.select(total, session.architecture)
            expected = None if agent is None else [agent] * len(session.kernels)
            if agent is not None:
                scan.allocate(agent, total)
        if expected is None:
            assert change.status == "PENDING" and change.status_info == "no-available-instances", change
            assert not any(placed.get(k.id) for k in session.kernels)
        else:
            assert change.status == "SCHEDULED", (change.status_info, change.status_data)
            assert [placed[k.id] for k in session.kernels] == expected
    assert decided.scheduled and decided.failed  # both kinds of decision happened
