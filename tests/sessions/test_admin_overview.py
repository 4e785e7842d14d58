"""The admin's cluster overview: capacity, occupancy and sessions by status, per
scaling group and per agent; superadmins only; linked from the admin index."""
from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from agents import services as agent_services
from agents.models import Agent, Image, ScalingGroup
from sessions.enqueue import EnqueueRequest, enqueue
from sessions.models import Session

pytestmark = pytest.mark.django_db

OVERVIEW = "/admin/compute_sessions/session/overview/"
GIB = 2**30


@pytest.fixture
def cluster(defaults):
    default = agent_services.ensure_default_scaling_group()
    gpu = ScalingGroup.objects.create(name="gpu", description="GPU nodes")
    Image.objects.create(name="bai/shell:1.0", repository="bai/shell", tag="1.0", is_local=True)
    now = timezone.now()
    Agent.objects.create(id="cpu-1", scaling_group=default, available_slots={"cpu": "8", "mem": str(16 * GIB)},
                         occupied_slots={"cpu": "2", "mem": str(4 * GIB)}, last_heartbeat=now, addr="10.0.0.1")
    Agent.objects.create(id="cpu-2", scaling_group=default, available_slots={"cpu": "8", "mem": str(16 * GIB)},
                         occupied_slots={}, last_heartbeat=now, schedulable=False)
    Agent.objects.create(id="gpu-1", scaling_group=gpu,
                         available_slots={"cpu": "32", "mem": str(256 * GIB), "cuda.device": "4"},
                         occupied_slots={"cpu": "4", "mem": str(32 * GIB), "cuda.device": "3"}, last_heartbeat=now)
    Agent.objects.create(id="gone-1", scaling_group=gpu, status="LOST",
                         available_slots={"cpu": "32", "mem": str(256 * GIB), "cuda.device": "4"})
    return default, gpu


def sessions_for(user, count, status=None):
    made = []
    for index in range(count):
        session = enqueue(user, user.main_keypair, EnqueueRequest(
            image="bai/shell:1.0", name=f"s-{status or 'pending'}-{index}", enqueue_only=True,
            resources={"cpu": "1", "mem": "1g"})).session
        if status:
            Session.objects.filter(pk=session.pk).update(status=status)
            session.kernels.update(status=status, agent_id="cpu-1")
        made.append(session)
    return made


def test_the_overview_sums_capacity_occupancy_and_statuses(client, superadmin, owner, cluster):
    sessions_for(owner, 2)
    sessions_for(owner, 3, "RUNNING")
    sessions_for(owner, 1, "TERMINATED")
    client.force_login(superadmin)
    response = client.get(reverse("admin:compute_sessions_cluster_overview"))
    assert response.status_code == 200
    context = response.context
    groups = {row["name"]: row for row in context["group_rows"]}
    default = groups["default"]
    assert (default["agents"], default["alive"], default["schedulable"]) == (2, 2, 1)
    usage = {u["slot"]: u for u in default["usage"]}
    assert usage["cpu"]["used"] == "2" and usage["cpu"]["total"] == "8" and usage["cpu"]["percent"] == 25.0
    assert usage["mem"]["used"] == "4 GiB" and usage["mem"]["total"] == "16 GiB"
    assert dict(default["statuses"]) == {"PENDING": 2, "RUNNING": 3, "TERMINATED": 1}
    assert default["pending"] == 2 and default["live"] == 5 and default["oldest_pending"] is not None
    gpu = {u["slot"]: u for u in groups["gpu"]["usage"]}
    assert gpu["cuda.device"]["percent"] == 75.0 and groups["gpu"]["alive"] == 1  # the LOST agent counts for nothing
    assert dict(context["status_totals"]) == {"PENDING": 2, "RUNNING": 3, "TERMINATED": 1}
    assert context["agents_total"] == 4 and context["agents_alive"] == 3
    agents = {row["agent"].pk: row for row in context["agent_rows"]}
    assert agents["cpu-1"]["kernels"] == 3 and agents["cpu-2"]["kernels"] == 0
    assert not agents["gone-1"]["alive"]
    total = {u["slot"]: u for u in context["total_usage"]}
    assert total["cpu"]["total"] == "40" and total["cpu"]["used"] == "6"  # 8 + 32 schedulable, 2 + 4 used
    page = response.content.decode()
    for marker in ('id="groups"', 'id="agents"', 'data-agent="gpu-1"', 'data-group="gpu"', 'data-slot="cuda.device"',
                   "status__exact=RUNNING&amp;scaling_group__name__exact=default", "Cluster overview"):
        assert marker in page


def test_the_overview_costs_the_same_queries_for_a_bigger_cluster(client, superadmin, owner, cluster,
                                                                  django_assert_max_num_queries):
    client.force_login(superadmin)
    with django_assert_max_num_queries(9):
        client.get(OVERVIEW)
    default, gpu = cluster
    Agent.objects.bulk_create([Agent(id=f"more-{i}", scaling_group=gpu if i % 2 else default,
                                     available_slots={"cpu": "4", "mem": str(8 * GIB)}) for i in range(40)])
    sessions_for(owner, 5)
    with django_assert_max_num_queries(9):
        assert client.get(OVERVIEW).status_code == 200


def test_an_empty_cluster_renders(client, superadmin, defaults):
    client.force_login(superadmin)
    page = client.get(OVERVIEW).content.decode()
    assert "No agent has registered yet" in page and "No sessions yet" in page


def test_only_superadmins_see_the_overview(client, owner, domain_admin, cluster):
    for user in (owner, domain_admin):
        client.force_login(user)
        response = client.get(OVERVIEW)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
    client.logout()
    assert client.get(OVERVIEW).status_code == 302


def test_the_admin_index_and_the_sessions_list_link_to_it(client, superadmin, cluster):
    client.force_login(superadmin)
    index = client.get(reverse("admin:index")).content.decode()
    assert f'href="{OVERVIEW}" id="cluster-overview-link"' in index
    assert "Compute sessions" in index  # the usual app list is still there
    changelist = client.get(reverse("admin:compute_sessions_session_changelist")).content.decode()
    assert f'href="{OVERVIEW}" id="cluster-overview-link"' in changelist
