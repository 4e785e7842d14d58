"""The daemon's side of the long poll (docs/agent-protocol.md, "Long poll"), against the fake manager."""
from __future__ import annotations

from decimal import Decimal

import pytest

from agents.daemon.agent import Agent
from agents.daemon.backends.base import BackendSettings
from agents.daemon.backends.local import LocalBackend
from agents.daemon.backoff import Backoff
from agents.daemon.client import ManagerClient
from agents.daemon.config import AgentConfig
from agents.daemon.discovery import Resources

TOKEN = "test-agent-token"


@pytest.fixture
def start_agent(tmp_path, fake_manager):
    agents = []

    def start(long_poll: float) -> Agent:
        config = AgentConfig(manager_url=fake_manager.url, token=TOKEN, agent_id="poll-test", backend="local",
                             scratch_root=tmp_path / "scratch", port_range=(31400, 31409), sync_interval=30,
                             long_poll=long_poll, stop_timeout=2)
        agent = Agent(config, LocalBackend(BackendSettings.from_config(config)),
                      ManagerClient(fake_manager.url, TOKEN, timeout=2), Resources(cpu=Decimal(1), mem=1 << 30),
                      watch_interval=0.1, backoff=Backoff(base=0.1, cap=0.4), link=False)
        agents.append(agent)
        agent.start()
        return agent

    yield start
    for agent in agents:
        agent.request_stop()


def synced(fake_manager, count):
    with fake_manager.lock:
        return list(fake_manager.syncs) if len(fake_manager.syncs) >= count else None


def test_a_manager_that_holds_syncs_gets_the_next_one_at_once_with_wait_and_fingerprint(start_agent, fake_manager,
                                                                                       wait_for):
    fake_manager.sync_interval = 30  # only the long poll can bring a second sync within the wait below
    fake_manager.extra_answer = {"fingerprint": "f1", "max_wait": 4}
    start_agent(long_poll=15)
    syncs = wait_for(lambda: synced(fake_manager, 2), timeout=20, what="the second sync")
    assert "wait" not in syncs[0] and "fingerprint" not in syncs[0]  # nothing to compare with yet
    assert syncs[1]["wait"] == 4 and syncs[1]["fingerprint"] == "f1"  # capped by the manager's max_wait


def test_the_long_poll_off_means_plain_syncs_every_interval(start_agent, fake_manager, wait_for):
    fake_manager.sync_interval = 0.3
    fake_manager.extra_answer = {"fingerprint": "f1", "max_wait": 4}
    start_agent(long_poll=0)
    syncs = wait_for(lambda: synced(fake_manager, 3), timeout=20, what="three syncs")
    assert all("wait" not in body and "fingerprint" not in body for body in syncs)


def test_a_manager_without_the_long_poll_gets_plain_syncs(start_agent, fake_manager, wait_for):
    fake_manager.sync_interval = 0.3  # answers carry neither fingerprint nor max_wait
    start_agent(long_poll=15)
    syncs = wait_for(lambda: synced(fake_manager, 3), timeout=20, what="three syncs")
    assert all("wait" not in body for body in syncs)


def test_held_syncs_that_come_back_at_once_without_news_pause_the_loop(start_agent, fake_manager, wait_for):
    fake_manager.sync_interval = 30  # the pause
    fake_manager.extra_answer = {"fingerprint": "f1", "max_wait": 4}  # the fake answers at once, unchanged
    agent = start_agent(long_poll=15)
    wait_for(lambda: synced(fake_manager, 4), timeout=20, what="the first syncs")
    # the first plus three quick unchanged answers, then a pause of sync_interval: no tight loop
    wait_for(lambda: agent._quick_unchanged == 0 and agent.syncs >= 4, timeout=20, what="the pause")
    with fake_manager.lock:
        count = len(fake_manager.syncs)
    assert count <= 5, count
