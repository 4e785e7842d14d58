"""Agent selectors: dispersed, concentrated, legacy, round-robin; GPU avoidance,
architecture, schedulable/ALIVE filters and a superadmin's designated agents."""
import pytest

from agents.models import Agent
from sessions.models import Kernel, Session

pytestmark = pytest.mark.django_db


def placed_on(session):
    return list(Kernel.objects.filter(session=session).values_list("agent_id", flat=True))


def busy(make_session, user, group, agent, cpu, mem="1g"):
    """A running session taking ``cpu`` on ``agent``."""
    return make_session(user, group, cpu=cpu, mem=mem, status="RUNNING", agent=agent, age=500)


def test_dispersed_picks_the_agent_with_the_most_free_resources(owner, make_group, make_agent, make_session, pass_):
    group = make_group(agent_selection_strategy="dispersed")
    a1, a2, a3 = (make_agent(group, f"a{i}", cpu=8) for i in (1, 2, 3))
    busy(make_session, owner, group, a1, 2)
    busy(make_session, owner, group, a3, 6)
    session = make_session(owner, group, cpu=1)
    pass_(group)
    assert placed_on(session) == ["a2"]


def test_dispersed_spreads_one_pass_over_the_agents(owner, make_group, make_agent, make_session, pass_):
    group = make_group()
    for i in range(3):
        make_agent(group, f"a{i}", cpu=4)
    sessions = [make_session(owner, group, cpu=1, age=10 - i) for i in range(3)]
    pass_(group)
    assert sorted(a for s in sessions for a in placed_on(s)) == ["a0", "a1", "a2"]


def test_concentrated_packs_the_fullest_agent_that_still_fits(owner, make_group, make_agent, make_session, pass_):
    group = make_group(agent_selection_strategy="concentrated")
    a1, a2, a3 = (make_agent(group, f"a{i}", cpu=8) for i in (1, 2, 3))
    busy(make_session, owner, group, a1, 7)  # 1 free: too little
    busy(make_session, owner, group, a2, 5)  # 3 free: the tightest fit
    busy(make_session, owner, group, a3, 1)
    session = make_session(owner, group, cpu=2)
    pass_(group)
    assert placed_on(session) == ["a2"]


def test_concentrated_fills_one_agent_before_the_next(owner, make_group, make_agent, make_session, pass_):
    group = make_group(agent_selection_strategy="concentrated")
    make_agent(group, "a1", cpu=4)
    make_agent(group, "a2", cpu=4)
    sessions = [make_session(owner, group, cpu=1, age=10 - i) for i in range(4)]
    pass_(group)
    assert sorted(a for s in sessions for a in placed_on(s)) == ["a1"] * 4


def test_legacy_picks_the_largest_agent(owner, make_group, make_agent, make_session, pass_):
    group = make_group(agent_selection_strategy="legacy")
    make_agent(group, "small", cpu=4)
    big = make_agent(group, "big", cpu=32)
    busy(make_session, owner, group, big, 30)  # even when it is the busiest, while it fits
    session = make_session(owner, group, cpu=1)
    pass_(group)
    assert placed_on(session) == ["big"]


def test_roundrobin_rotates_across_passes_and_skips_agents_that_do_not_fit(owner, make_group, make_agent,
                                                                           make_session, pass_):
    from django.core.cache import cache

    cache.delete("bai:scheduler:rr:sg:x86_64")
    group = make_group(agent_selection_strategy="roundrobin")
    a1 = make_agent(group, "a1", cpu=8)
    make_agent(group, "a2", cpu=8)
    make_agent(group, "a3", cpu=8)
    first = make_session(owner, group, cpu=1)
    pass_(group)
    second = make_session(owner, group, cpu=1)
    pass_(group)
    busy(make_session, owner, group, a1, 8)  # a1 is now full: skipped
    third = make_session(owner, group, cpu=1)
    fourth = make_session(owner, group, cpu=1, age=-1)
    pass_(group)
    assert [placed_on(s) for s in (first, second, third, fourth)] == [["a1"], ["a2"], ["a3"], ["a2"]]


def test_cpu_only_sessions_avoid_gpu_agents(owner, make_group, make_agent, make_session, pass_):
    group = make_group()
    make_agent(group, "gpu-node", cpu=64, mem="256g", gpus=8)  # far more free CPU
    make_agent(group, "cpu-node", cpu=4, mem="8g")
    session = make_session(owner, group, cpu=1)
    pass_(group)
    assert placed_on(session) == ["cpu-node"]


def test_cpu_only_sessions_use_a_gpu_agent_when_nothing_else_fits(owner, make_group, make_agent, make_session,
                                                                  pass_):
    group = make_group()
    make_agent(group, "gpu-node", cpu=64, mem="256g", gpus=8)
    make_agent(group, "cpu-node", cpu=2, mem="8g")
    session = make_session(owner, group, cpu=4)
    pass_(group)
    assert placed_on(session) == ["gpu-node"]


@pytest.mark.parametrize("strategy", ["dispersed", "concentrated", "legacy"])
def test_gpu_sessions_go_to_gpu_agents(strategy, owner, make_group, make_agent, make_session, pass_):
    group = make_group(agent_selection_strategy=strategy)
    make_agent(group, "cpu-node", cpu=64, mem="256g")
    make_agent(group, "gpu-node", cpu=8, mem="32g", gpus=2)
    session = make_session(owner, group, cpu=1, gpus=1)
    pass_(group)
    assert placed_on(session) == ["gpu-node"]


def test_agents_of_another_architecture_are_not_considered(owner, make_group, make_agent, make_session, pass_):
    group = make_group()
    make_agent(group, "arm", cpu=64, arch="aarch64")
    make_agent(group, "x86", cpu=2)
    x86_session = make_session(owner, group, cpu=1)
    arm_session = make_session(owner, group, cpu=1, arch="aarch64")
    riscv = make_session(owner, group, cpu=1, arch="riscv64")
    pass_(group)
    assert placed_on(x86_session) == ["x86"]
    assert placed_on(arm_session) == ["arm"]
    riscv.refresh_from_db()
    assert riscv.status_info == "no-available-instances"
    assert "no ALIVE schedulable agent for architecture riscv64" in riscv.status_data["scheduler"]["msg"]


def test_lost_unschedulable_and_other_group_agents_are_not_considered(owner, make_group, make_agent, make_session,
                                                                      pass_):
    group = make_group()
    other = make_group("other")
    make_agent(group, "lost", cpu=64, status="LOST")
    make_agent(group, "drained", cpu=64, schedulable=False)
    make_agent(other, "elsewhere", cpu=64)
    make_agent(group, "ok", cpu=2)
    session = make_session(owner, group, cpu=1)
    pass_(group)
    assert placed_on(session) == ["ok"]


def test_a_designated_agent_is_used_when_it_has_capacity(superadmin, make_group, make_agent, make_session, pass_):
    group = make_group()
    make_agent(group, "a1", cpu=64)
    make_agent(group, "a2", cpu=4)
    session = make_session(superadmin, group, cpu=2, agent_ids=["a2"])
    pass_(group)
    assert placed_on(session) == ["a2"]
    assert Session.objects.get(pk=session.pk).agent_ids == ["a2"]


def test_a_designated_agent_without_capacity_keeps_the_session_waiting(superadmin, make_group, make_agent,
                                                                       make_session, pass_):
    group = make_group()
    make_agent(group, "a1", cpu=64)
    make_agent(group, "a2", cpu=1)
    session = make_session(superadmin, group, cpu=2, agent_ids=["a2"])
    pass_(group)
    session.refresh_from_db()
    assert session.status == "PENDING"
    assert session.status_info == "no-available-instances"
    assert "a2 has only cpu 1, mem 16 GiB free" in session.status_data["scheduler"]["msg"]


def test_a_designated_agent_that_is_not_alive_is_explained(superadmin, make_group, make_agent, make_session, pass_):
    group = make_group()
    make_agent(group, "a1", cpu=64)
    make_agent(group, "gone", cpu=64, status="LOST")
    session = make_session(superadmin, group, cpu=2, agent_ids=["gone"])
    pass_(group)
    session.refresh_from_db()
    assert "gone is not ALIVE in scaling group 'sg'" in session.status_data["scheduler"]["msg"]


def test_a_superadmin_may_designate_an_unschedulable_agent(superadmin, make_group, make_agent, make_session, pass_):
    group = make_group()
    make_agent(group, "drained", cpu=8, schedulable=False)
    session = make_session(superadmin, group, cpu=2, agent_ids=["drained"])
    pass_(group)
    assert placed_on(session) == ["drained"]


def test_one_pass_never_overcommits_an_agent(owner, make_group, make_agent, make_session, pass_):
    group = make_group()
    agent = make_agent(group, "a1", cpu=4, mem="4g")
    sessions = [make_session(owner, group, cpu=1, mem="1g", age=20 - i) for i in range(6)]
    result = pass_(group)
    assert len(result.scheduled) == 4
    agent.refresh_from_db()
    assert agent.occupied_slots == {"cpu": "4", "mem": str(4 * 1024**3)}
    assert [Session.objects.get(pk=s.pk).status for s in sessions[4:]] == ["PENDING", "PENDING"]


def test_occupancy_is_recomputed_from_kernels_not_read_from_the_agent_row(owner, make_group, make_agent,
                                                                          make_session, pass_):
    group = make_group()
    agent = make_agent(group, "a1", cpu=4)
    Agent.objects.filter(pk=agent.pk).update(occupied_slots={"cpu": "4", "mem": str(16 * 1024**3)})  # stale
    session = make_session(owner, group, cpu=2)
    pass_(group)
    assert placed_on(session) == ["a1"]
    agent.refresh_from_db()
    assert agent.occupied_slots["cpu"] == "2"


def test_terminated_and_pending_kernels_hold_no_capacity(owner, make_group, make_agent, make_session, pass_):
    group = make_group()
    agent = make_agent(group, "a1", cpu=4)
    make_session(owner, group, cpu=4, status="TERMINATED", agent=agent)
    make_session(owner, group, cpu=4, status="TERMINATING", agent=agent, kernel_status="TERMINATING")
    session = make_session(owner, group, cpu=1)
    pass_(group)
    # TERMINATING still holds its 4 CPUs until the agent confirms
    assert Session.objects.get(pk=session.pk).status == "PENDING"


def test_pool_unit_dispersed_and_concentrated_keys_update_after_each_allocation():
    from sessions.scheduler.selectors import AgentPool, AgentSlot
    from sessions.scheduler.slotspace import SlotSpace

    space = SlotSpace(["cpu", "mem"], {"cpu": "count", "mem": "bytes"})

    def agent(i, cpu):
        vec = space.vector({"cpu": str(cpu), "mem": "1000"})
        return AgentSlot(f"a{i}", "", "x86_64", vec, list(vec))

    request = space.vector({"cpu": "1"})
    pool = AgentPool(space, [agent(1, 3), agent(2, 2)], "dispersed")
    picks = []
    for _ in range(5):
        chosen = pool.select(request, "x86_64")
        pool.allocate(chosen, request)
        picks.append(chosen.id)
    assert picks == ["a1", "a1", "a2", "a1", "a2"]  # most free first, ties to the smaller id
    assert pool.select(request, "x86_64") is None

    pool = AgentPool(space, [agent(1, 3), agent(2, 2)], "concentrated")
    picks = []
    for _ in range(5):
        chosen = pool.select(request, "x86_64")
        pool.allocate(chosen, request)
        picks.append(chosen.id)
    assert picks == ["a2", "a2", "a1", "a1", "a1"]


def test_pool_unit_a_failed_request_answers_larger_ones_at_once():
    from sessions.scheduler.selectors import AgentPool, AgentSlot
    from sessions.scheduler.slotspace import SlotSpace

    space = SlotSpace(["cpu", "mem"], {"cpu": "count", "mem": "bytes"})
    vec = space.vector({"cpu": "2", "mem": "10"})
    pool = AgentPool(space, [AgentSlot("a1", "", "x86_64", vec, list(vec))], "dispersed")
    assert pool.select(space.vector({"cpu": "3", "mem": "1"}), "x86_64") is None
    assert pool._failures["x86_64"] == [space.vector({"cpu": "3", "mem": "1"})]
    assert pool.select(space.vector({"cpu": "4", "mem": "5"}), "x86_64") is None
    assert pool.select(space.vector({"cpu": "2", "mem": "5"}), "x86_64").id == "a1"
