"""GraphQL's ``KeyPair.concurrency_used`` counts the keypair's sessions that hold a
concurrency slot (``sessions.lifecycle.CONCURRENCY_SESSION``), answered by the sessions
app through the accounts hook it registers."""
import pytest

from agents import services as agent_services
from agents.models import Agent
from sessions import agent_sync
from sessions import services as session_services

pytestmark = pytest.mark.django_db

KEYPAIR = "query { keypair { access_key concurrency_used } }"


def concurrency_used(api) -> int:
    response = api.post("/admin/gql", {"query": KEYPAIR, "variables": {}})
    assert response.status_code == 200, response.content
    return response.json()["data"]["keypair"]["concurrency_used"]


def test_a_placed_session_counts_and_an_ended_one_does_not(defaults, owner, signed):
    group = agent_services.ensure_default_scaling_group()
    token = agent_services.issue_token("nodes", scaling_group=group)[0]
    agent_sync.sync(token, {"agent_id": "node-1", "scaling_group": "default", "capacity": {"cpu": "4", "mem": "1024"},
                            "slot_types": {"cpu": "count", "mem": "bytes"}}, "127.0.0.1")
    api = signed(owner)
    assert concurrency_used(api) == 0
    session = session_services.create_session_on_agent(
        user=owner, image="bai-test/http:1.0", agent=Agent.objects.get(pk="node-1"), slots={"cpu": "1", "mem": "1"})
    assert concurrency_used(api) == 1
    session_services.request_termination(session, forced=True)
    assert concurrency_used(api) == 0
