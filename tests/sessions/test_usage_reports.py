"""``GET /resource/usage/month``, ``GET /resource/usage/period`` and ``POST
/resource/recalculate-usage``: usage computed from the kernel rows in the shapes the
official clients print, for superadmins and the domain admins of the projects' domain
only; every parameter checked first, and a refused request changes nothing."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from agents import services as agent_services
from agents.models import Agent
from helpers import problem, slug
from permission_matrix import SUPERADMIN_ONLY, Case, World, check, params
from sessions import services as session_services
from sessions import usage
from sessions.lifecycle import KernelStatus, SessionStatus
from sessions.models import Kernel, Session

pytestmark = pytest.mark.django_db

ADMINS_OF_THE_PROJECT = {"owner": 403, "member": 403, "outsider": 403, "foreign_admin": 400, "superadmin": 200}


def at(day: str, hour: int = 0) -> datetime:
    """``YYYYMMDD`` at ``hour`` in the server's time zone."""
    return timezone.make_aware(datetime.strptime(day, "%Y%m%d") + timedelta(hours=hour),
                               timezone.get_current_timezone())


def place(user, agent, name, slots=None, **fields) -> Session:
    """A session placed on ``agent`` (the service the agent tests use), then moved in time:
    ``since`` (created and scheduled), ``until`` (terminated, or None: still running)."""
    since, until = fields.pop("since"), fields.pop("until", None)
    session = session_services.create_session_on_agent(
        user=user, image="bai-test/http:1.0", agent=agent, name=name,
        slots=slots or {"cpu": "2", "mem": "1073741824"}, resource_opts={"shmem": "67108864"},
        mounts=[], **fields)
    history = [{"status": "SCHEDULED", "timestamp": since.isoformat()}]
    status = KernelStatus.TERMINATED if until else KernelStatus.RUNNING
    Kernel.objects.filter(session=session).update(created_at=since, terminated_at=until, status=status,
                                                  status_history=history, container_id=f"c-{name}",
                                                  last_stat={"cpu_util": "5.0", "mem_used": "1000"})
    Session.objects.filter(pk=session.pk).update(
        created_at=since, terminated_at=until,
        status=SessionStatus.TERMINATED if until else SessionStatus.RUNNING,
        vfolder_mounts=[{"name": "data1", "vfolder_id": str(uuid.uuid4())}])
    return session


@pytest.fixture
def agent(defaults):
    group = agent_services.ensure_default_scaling_group()
    return Agent.objects.create(id="node-1", scaling_group=group, available_slots={"cpu": "8", "mem": "8589934592"},
                                last_heartbeat=timezone.now())


@pytest.fixture
def world(owner, member, outsider, foreign_admin, superadmin, agent):
    from accounts.models import Project

    place(owner, agent, "ownersess", since=at("20250310", 9), until=at("20250312", 21))
    project = Project.objects.get(domain_id=owner.domain_id, name="default")
    users = {"owner": owner, "member": member, "outsider": outsider, "foreign_admin": foreign_admin,
             "superadmin": superadmin}
    return World(users=users, objects={"project": str(project.pk)})


def project_id(world) -> str:
    return world.objects["project"]


def agent_state(world=None):
    return dict(Agent.objects.values_list("pk", "occupied_slots"))


CASES = [
    Case("GET /resource/usage/month (query, 26.09)",
         lambda api, w, r: api.get(f"/resource/usage/month?month=202503&group_ids={project_id(w)}"),
         ADMINS_OF_THE_PROJECT, marker=lambda w: "ownersess"),
    Case("GET /resource/usage/month (body, 23.09)",
         lambda api, w, r: api.request("GET", "/resource/usage/month",
                                       data={"month": "202503", "group_ids": [project_id(w)]}),
         ADMINS_OF_THE_PROJECT, marker=lambda w: "ownersess"),
    Case("GET /resource/usage/period (query, 24.09)",
         lambda api, w, r: api.get(f"/resource/usage/period?start_date=20250301&end_date=20250331"
                                   f"&group_id={project_id(w)}"),
         ADMINS_OF_THE_PROJECT, marker=lambda w: "ownersess"),
    Case("GET /resource/usage/period (body, 23.09)",
         lambda api, w, r: api.request("GET", "/resource/usage/period", data={
             "group_id": project_id(w), "start_date": "20250301", "end_date": "20250331"}),
         ADMINS_OF_THE_PROJECT, marker=lambda w: "ownersess"),
    Case("GET /resource/usage/month (every project)",
         lambda api, w, r: api.get("/resource/usage/month?month=202503"),
         {**ADMINS_OF_THE_PROJECT, "foreign_admin": 200}, marker=lambda w: "ownersess", sees=("superadmin",)),
    Case("POST /resource/recalculate-usage", lambda api, w, r: api.post("/resource/recalculate-usage"),
         SUPERADMIN_ONLY, unchanged=agent_state),
]


@pytest.mark.parametrize("case, role", params(CASES))
def test_usage_endpoints_answer_each_role_what_it_may_see(case, role, world, signed):
    Agent.objects.update(occupied_slots={"cpu": "99"})  # a drifted counter a recalculation corrects
    check(case, role, world, signed)


def test_a_domain_admin_reads_the_usage_of_their_domains_projects(world, domain_admin, signed):
    answer = signed(domain_admin).get(f"/resource/usage/month?month=202503&group_ids={project_id(world)}")
    assert answer.status_code == 200, answer.content
    assert [c["name"] for g in answer.json() for c in g["c_infos"]] == ["ownersess"]
    everything = signed(domain_admin).get("/resource/usage/period?start_date=20250301&end_date=20250331")
    assert [s["session_name"] for p in everything.json() for s in p["sessions"]] == ["ownersess"]


def test_the_month_report_has_the_fields_the_cli_prints(world, owner, superadmin, signed):
    answer = signed(superadmin).get(f"/resource/usage/month?month=202503&group_ids={project_id(world)}")
    assert answer.status_code == 200, answer.content
    (group,) = answer.json()
    assert group["g_id"] == project_id(world) and group["g_name"] == "default" and group["domain_name"] == "default"
    assert group["g_smp"] == 2.0 and group["g_mem_allocated"] == 1073741824 and group["g_mem_used"] == 1000
    assert group["g_cpu_used"] == 0 and group["g_io_read"] == group["g_io_write"] == 0
    assert group["g_device_type"] == [] and group["g_gpu_allocated"] == 0
    (record,) = group["c_infos"]
    kernel = Kernel.objects.get(session__name="ownersess")
    assert record["id"] == str(kernel.pk) and record["session_id"] == str(kernel.session_id)
    assert record["name"] == "ownersess" and record["access_key"] == owner.main_keypair_id
    assert record["email"] == owner.email and record["agent"] == "node-1" and record["container_id"] == "c-ownersess"
    assert record["image_name"] == "bai-test/http:1.0" and record["smp"] == 2.0
    assert record["mem_allocated"] == 1073741824 and record["shared_memory"] == 67108864
    assert record["nfs"] == ["data1"] and record["device_type"] == [] and record["status"] == "TERMINATED"
    assert record["used_days"] == 3 and record["used_time"] == "2 days, 12:00:00"
    # the CLI joins these with ' ~ '
    assert record["created_at"] == at("20250310", 9).isoformat()
    assert record["terminated_at"] == at("20250312", 21).isoformat()
    assert record["scheduled_at"] == at("20250310", 9).isoformat()


def test_only_kernels_that_held_resources_during_the_period_count(world, owner, agent, superadmin, signed):
    place(owner, agent, "before", since=at("20250201"), until=at("20250228", 23))
    place(owner, agent, "across", since=at("20250228", 22), until=at("20250301", 1))
    place(owner, agent, "running", since=at("20250331", 12))
    place(owner, agent, "after", since=at("20250401"), until=at("20250402"))
    queued = session_services.create_session_on_agent(user=owner, image="bai-test/http:1.0", agent=agent,
                                                      name="queued", slots={"cpu": "1", "mem": "1"})
    Kernel.objects.filter(session=queued).update(status=KernelStatus.PENDING, agent=None, agent_addr="",
                                                 created_at=at("20250305"))
    answer = signed(superadmin).get("/resource/usage/month?month=202503").json()
    records = {c["name"]: c for g in answer for c in g["c_infos"]}
    assert sorted(records) == ["across", "ownersess", "running"]
    assert records["running"]["terminated_at"] == "" and records["running"]["status"] == "RUNNING"
    assert records["running"]["used_days"] == 1 and records["across"]["used_days"] == 1


def test_the_period_report_sums_each_sessions_kernels(world, owner, agent, superadmin, signed):
    cluster = place(owner, agent, "cluster", since=at("20250315"), until=at("20250316"))
    first = Kernel.objects.get(session=cluster)
    sub = Kernel.objects.create(
        session=cluster, cluster_role="sub", cluster_idx=1, cluster_hostname="sub1", agent=agent, image=first.image,
        requested_slots={"cpu": "1", "mem": "512", "cuda.device": "1"},
        occupied_slots={"cpu": "1", "mem": "512", "cuda.device": "1"}, status=KernelStatus.TERMINATED,
        terminated_at=at("20250316"), status_history=first.status_history)
    Kernel.objects.filter(pk=sub.pk).update(created_at=at("20250315"))
    answer = signed(superadmin).get(f"/resource/usage/period?start_date=20250314&end_date=20250320"
                                    f"&group_id={project_id(world)}")
    assert answer.status_code == 200, answer.content
    (entry,) = answer.json()
    assert entry["project_id"] == project_id(world) and entry["project_name"] == "default"
    assert entry["domain_name"] == "default"
    (session,) = entry["sessions"]
    assert session["session_name"] == "cluster" and len(session["kernel_ids"]) == 2
    assert session["total_usage"]["cpu_allocated"] == 3.0 and session["total_usage"]["mem_allocated"] == 1073742336
    assert session["total_usage"]["device_type"] == ["cuda.device"] and session["total_usage"]["gpu_allocated"] == 1.0
    assert session["agents"] == ["node-1"] and session["used_days"] == 1  # 15th 00:00 to 16th 00:00
    total = entry["total_usage"]
    for key in ("cpu_used", "mem_used", "io_read", "io_write", "device_type"):  # what 26.09's CLI prints
        assert key in total
    assert total["gpu_allocated"] == 1.0 and total["gpu_mem_allocated"] == 0


def test_a_project_without_usage_is_left_out(world, superadmin, signed):
    answer = signed(superadmin).get(f"/resource/usage/month?month=202504&group_ids={project_id(world)}")
    assert answer.status_code == 200 and answer.json() == []
    answer = signed(superadmin).get("/resource/usage/period?start_date=20250401&end_date=20250410")
    assert answer.status_code == 200 and answer.json() == []


def test_a_period_of_exactly_the_limit_is_answered(world, superadmin, signed):
    answer = signed(superadmin).get("/resource/usage/period?start_date=20250101&end_date=20250410")  # 100 days
    assert answer.status_code == 200, answer.content
    assert [s["session_name"] for p in answer.json() for s in p["sessions"]] == ["ownersess"]


BAD = [
    "/resource/usage/month",
    "/resource/usage/month?month=2025-03",
    "/resource/usage/month?month=202513",
    "/resource/usage/month?month=202500",
    "/resource/usage/month?month=2025031",
    "/resource/usage/month?month=000103",
    "/resource/usage/month?month=%00%00%00",
    "/resource/usage/month?month=202503&group_ids=not-a-uuid",
    "/resource/usage/month?month=202503&group_ids=3f1d2c4b-5a69-4e7f-8d0c-1b2a3e4f5061",
    "/resource/usage/period?end_date=20250331",
    "/resource/usage/period?start_date=20250301",
    "/resource/usage/period?start_date=20250230&end_date=20250331",
    "/resource/usage/period?start_date=2025031&end_date=20250331",
    "/resource/usage/period?start_date=20250331&end_date=20250301",
    "/resource/usage/period?start_date=20250101&end_date=20250411",  # 101 days
    "/resource/usage/period?start_date=20000101&end_date=20250101",
    "/resource/usage/period?start_date=99991231&end_date=99991231",
    f"/resource/usage/period?start_date=20250301&end_date=20250331&group_id={uuid.uuid4()}",
    "/resource/usage/period?start_date=20250301&end_date=20250331&group_id=x%00",
]


@pytest.mark.parametrize("target", BAD)
def test_bad_parameters_are_refused_with_400(target, world, superadmin, signed):
    answer = signed(superadmin).get(target)
    assert answer.status_code == 400, answer.content
    assert slug(answer) == "invalid-api-params"


@pytest.mark.parametrize("body", [
    {"month": 202503, "group_ids": []},
    {"month": "202503", "group_ids": 7},
    {"month": "202503", "group_ids": [None]},
    {"month": "202503", "group_ids": ["x" * 100000]},
    {"month": "202503", "group_ids": ["00000000-0000-0000-0000-000000000000"] * 1001},
    ["202503"],
])
def test_bad_bodies_are_refused_with_400(body, world, superadmin, signed):
    answer = signed(superadmin).request("GET", "/resource/usage/month", data=body)
    assert answer.status_code == 400, answer.content
    assert problem(answer)["title"]


def test_a_period_named_two_ways_is_refused(world, superadmin, signed):
    answer = signed(superadmin).get(f"/resource/usage/period?start_date=20250301&end_date=20250331"
                                    f"&group_id={project_id(world)}&project_id={project_id(world)}")
    assert answer.status_code == 400


def test_a_users_request_is_refused_before_its_parameters_are_read(world, owner, signed):
    assert signed(owner).get("/resource/usage/month?month=bad").status_code == 403
    assert signed(owner).get("/resource/usage/period?start_date=x&end_date=y").status_code == 403


def test_recalculation_rewrites_agents_occupancy_from_the_live_kernels(world, owner, agent, superadmin, signed):
    place(owner, agent, "live", since=at("20250301"), slots={"cpu": "1.5", "mem": "1024"})
    Agent.objects.update(occupied_slots={"cpu": "99", "mem": "1"})
    answer = signed(superadmin).post("/resource/recalculate-usage")
    assert answer.status_code == 200 and answer.json() == {}
    assert Agent.objects.get(pk="node-1").occupied_slots == {"cpu": "1.5", "mem": "1024"}
    assert usage.recalculate_usage(superadmin) == {"agents_changed": 0, "keypairs_with_sessions": 1}


def test_usage_records_never_carry_a_secret(world, owner, superadmin, signed):
    answer = signed(superadmin).get("/resource/usage/month?month=202503").content.decode()
    assert owner.main_keypair.secret_key not in answer and "password" not in answer
