"""GraphQL agents (``agent``, ``agents``, ``agent_list``, ``agent_summary``,
``agent_summary_list``): superadmins only, as Backend.AI with hide-agents; the
documents of ``admin agent info`` and the SDK answer fields the client's
formatters can read."""
from __future__ import annotations

import json

import pytest

from agents_gql_support import (
    AGENT_DETAIL_SDK,
    AGENT_INFO,
    AGENT_SUMMARY,
    AGENT_SUMMARY_LIST,
    AGENTS,
    data_of,
)
from permission_matrix import SUPERADMIN_ONLY, Case, check, params
from permission_matrix import gql_case as gql

pytestmark = pytest.mark.django_db

ADDRESS = "10.9.8.7"


QUERIES = [
    Case("agent (admin agent info)", gql(AGENT_INFO, {"agent_id": "node-1"}), SUPERADMIN_ONLY,
         marker=lambda w: "node-1"),
    Case("agent (the SDK's detail)", gql(AGENT_DETAIL_SDK, {"agent_id": "node-1"}), SUPERADMIN_ONLY,
         marker=lambda w: ADDRESS),
    Case("agents", gql(AGENTS), SUPERADMIN_ONLY, marker=lambda w: ADDRESS),
    Case("agent_summary", gql(AGENT_SUMMARY, {"id": "node-1"}), SUPERADMIN_ONLY, marker=lambda w: '"node-1"'),
    Case("agent_summary_list", gql(AGENT_SUMMARY_LIST), SUPERADMIN_ONLY, marker=lambda w: '"node-1"'),
]


@pytest.mark.parametrize("case, role", params(QUERIES))
def test_agent_queries_are_for_superadmins(case, role, world, signed):
    check(case, role, world, signed)


def test_a_domain_admin_is_refused_agent_details(world, domain_admin, signed):
    response = signed(domain_admin).post("/admin/gql", {"query": AGENT_INFO, "variables": {"agent_id": "node-1"}})
    assert response.status_code == 403 and "node-1" not in response.content.decode()


def test_admin_agent_info_gets_what_its_formatters_read(world, superadmin, signed):
    from agents.models import Agent

    Agent.objects.filter(pk="node-1").update(
        region="local", compute_plugins={"cuda": {"driver_version": "550.1"}},
        devices=[{"slot": "cuda.device", "id": "0", "model": "H100", "memory": 80 * 2**30}],
        live_stat={"cpu_util": "150.0", "mem_used": str(2 * 2**30), "_images_fingerprint": "x"})
    item = data_of(signed(superadmin).post("/admin/gql", {"query": AGENT_INFO,
                                                          "variables": {"agent_id": "node-1"}}))["agent"]
    assert item["id"] == "node-1" and item["status"] == "ALIVE" and item["cpu_cur_pct"] == 150.0
    assert json.loads(item["available_slots"]) == {"cpu": "4", "mem": "8589934592"}
    stat = json.loads(item["live_stat"])  # the client's AgentStatFormatter reads node/devices with unit hints
    assert stat["node"]["cpu_util"] == {"current": "150.0", "capacity": "400", "pct": "37.50", "unit_hint": "percent"}
    assert stat["node"]["mem"]["unit_hint"] == "bytes" and int(stat["node"]["mem"]["capacity"]) == 8589934592
    assert stat["devices"] == {"cpu_util": {}, "mem": {}}
    hardware = json.loads(item["hardware_metadata"])
    assert hardware["cuda"]["metadata"]["driver_version"] == "550.1"
    assert hardware["cuda"]["metadata"]["devices"][0]["model"] == "H100"
    assert json.loads(item["local_config"])["agent"]["scaling_group"] == "default"


def test_an_agent_without_stats_has_null_live_stat_and_an_unknown_one_is_null(world, superadmin, signed):
    api = signed(superadmin)
    item = data_of(api.post("/admin/gql", {"query": AGENT_INFO, "variables": {"agent_id": "node-1"}}))["agent"]
    assert item["live_stat"] is None
    assert data_of(api.post("/admin/gql", {"query": AGENT_INFO, "variables": {"agent_id": "nope"}}))["agent"] is None


def test_agent_summary_list_pages_like_agent_list(world, superadmin, signed):
    data = data_of(signed(superadmin).post("/admin/gql", {"query": AGENT_SUMMARY_LIST}))["agent_summary_list"]
    assert data == {"items": [{"id": "node-1", "status": "ALIVE", "scaling_group": "default"}], "total_count": 1}
