"""Make the helpers next to these tests importable (``worker_support``, ``coordinator_support``),
and the agent the coordinator tests place sessions on."""
import sys
from pathlib import Path

import pytest
from django.utils import timezone

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)


@pytest.fixture
def agent(defaults):
    """One ALIVE agent (node-1, 10.0.0.5) in the default scaling group."""
    from agents import services as agent_services
    from agents.models import Agent

    group = agent_services.ensure_default_scaling_group()
    return Agent.objects.create(id="node-1", scaling_group=group, addr="10.0.0.5",
                                available_slots={"cpu": "4", "mem": "8589934592"}, last_heartbeat=timezone.now())
