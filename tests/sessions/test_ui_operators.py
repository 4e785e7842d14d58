"""The operators' pages (sessions.operators_ui, superadmins only): agents with gauges and
bulk actions, the image catalogue with a rescan, maintenance (recalculate usage, stuck
sessions shown then cleared), usage statistics; and the admin: every registered model's
list and change pages render, every model has a readable name."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.apps import apps
from django.contrib import admin
from django.db import models
from django.urls import reverse
from django.utils import timezone

from accounts.models import Keypair
from agents import services as agent_services
from agents.models import (
    Agent,
    AgentStatus,
    ContainerRegistry,
    Image,
    ScalingGroup,
    ScalingGroupForDomain,
    ScalingGroupForKeypair,
    ScalingGroupForProject,
)
from backendai.bgtasks import BackgroundTask
from sessions.enqueue import EnqueueRequest, enqueue
from sessions.models import Kernel, ResourcePreset, Session

pytestmark = pytest.mark.django_db

GIB = 2**30
PAGES = ["agents", "images", "maintenance", "usage"]
ACTIONS = [("agent-action", {"action": "drain", "agent": "cpu-1"}), ("rescan", {}), ("recalculate", {}),
           ("clear-stuck", {})]


@pytest.fixture
def cluster(defaults):
    default = agent_services.ensure_default_scaling_group()
    gpu = ScalingGroup.objects.create(name="gpu")
    Image.objects.create(name="bai/shell:1.0", repository="bai/shell", tag="1.0", is_local=True,
                         resources={"cpu": {"min": "1", "max": "8"}, "mem": {"min": str(256 * 2**20), "max": None}})
    now = timezone.now()
    Agent.objects.create(id="cpu-1", scaling_group=default, available_slots={"cpu": "8", "mem": str(16 * GIB)},
                         occupied_slots={"cpu": "2", "mem": str(4 * GIB)}, last_heartbeat=now, addr="10.0.0.1")
    Agent.objects.create(id="gpu-1", scaling_group=gpu,
                         available_slots={"cpu": "32", "mem": str(256 * GIB), "cuda.device": "4"},
                         occupied_slots={"cpu": "4", "mem": str(32 * GIB), "cuda.device": "3"}, last_heartbeat=now)
    return default, gpu


def running_session(user, name, agent="cpu-1", status="RUNNING"):
    session = enqueue(user, user.main_keypair, EnqueueRequest(
        image="bai/shell:1.0", name=name, enqueue_only=True, resources={"cpu": "1", "mem": "1g"})).session
    Session.objects.filter(pk=session.pk).update(status=status)
    session.kernels.update(status=status, agent_id=agent)
    return Session.objects.get(pk=session.pk)


# --- who may ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("role", ["owner", "member", "outsider", "domain_admin", "foreign_admin"])
def test_it_refuses_the_operator_pages_to_anyone_but_a_superadmin(client, request, cluster, page, role):
    client.force_login(request.getfixturevalue(role))
    assert client.get(reverse(f"ui-operators:{page}")).status_code == 403


@pytest.mark.parametrize(("action", "data"), ACTIONS)
@pytest.mark.parametrize("role", ["owner", "domain_admin"])
def test_it_refuses_the_operator_actions_and_changes_nothing(client, request, cluster, owner, action, data, role):
    session = running_session(owner, "mine")
    client.force_login(request.getfixturevalue(role))
    assert client.post(reverse(f"ui-operators:{action}"), data).status_code == 403
    assert Agent.objects.get(pk="cpu-1").schedulable
    assert Session.objects.get(pk=session.pk).status == "RUNNING"
    assert not BackgroundTask.objects.exists()


@pytest.mark.parametrize("page", PAGES)
def test_it_sends_an_anonymous_visitor_to_the_login(client, cluster, page):
    response = client.get(reverse(f"ui-operators:{page}"))
    assert response.status_code == 302 and "/ui/login/" in response["Location"]


def test_only_a_superadmin_sees_the_operator_links(client, cluster, owner, superadmin):
    client.force_login(owner)
    assert reverse("ui-operators:agents") not in client.get(reverse("ui:dashboard")).content.decode()
    client.force_login(superadmin)
    html = client.get(reverse("ui:dashboard")).content.decode()
    for page in PAGES:
        assert reverse(f"ui-operators:{page}") in html


# --- agents -----------------------------------------------------------------------------------------

def test_the_agents_page_shows_each_agents_capacity_and_usage_as_meters(client, cluster, superadmin,
                                                                         django_assert_max_num_queries):
    client.force_login(superadmin)
    for n in range(20):
        Agent.objects.create(id=f"more-{n}", scaling_group=cluster[0], available_slots={"cpu": "4"},
                             occupied_slots={"cpu": "1"})
    with django_assert_max_num_queries(8):
        response = client.get(reverse("ui-operators:agents"))
    html = response.content.decode()
    assert response.status_code == 200
    assert "4 GiB of 16 GiB" in html and "2 of 8" in html and "3 of 4" in html
    assert 'value="75"' in html  # gpu-1's cuda.device: 3 of 4
    assert html.count("<meter") == 2 + 3 + 20
    assert 'style="' not in html
    rows = client.get(reverse("ui-operators:agent-rows"), HTTP_HX_REQUEST="true")
    assert rows.status_code == 200 and rows["X-Live-Fragment"] == "1"
    assert "<html" not in rows.content.decode() and 'data-agent="gpu-1"' in rows.content.decode()


def test_draining_an_agent_makes_it_unschedulable_and_leaves_its_sessions_running(client, cluster, owner, superadmin):
    session = running_session(owner, "keeps-running")
    client.force_login(superadmin)
    response = client.post(reverse("ui-operators:agent-action"), {"action": "drain", "agent": ["cpu-1"]}, follow=True)
    assert "1 session(s) there finish" in response.content.decode()
    assert not Agent.objects.get(pk="cpu-1").schedulable
    assert Agent.objects.get(pk="gpu-1").schedulable
    assert Session.objects.get(pk=session.pk).status == "RUNNING"
    client.post(reverse("ui-operators:agent-action"), {"action": "schedulable", "agent": ["cpu-1"]})
    assert Agent.objects.get(pk="cpu-1").schedulable


def test_terminating_the_sessions_on_an_agent_leaves_other_agents_sessions(client, cluster, owner, superadmin):
    on_cpu = running_session(owner, "on-cpu")
    on_gpu = running_session(owner, "on-gpu", agent="gpu-1")
    client.force_login(superadmin)
    client.post(reverse("ui-operators:agent-action"), {"action": "terminate", "agent": ["cpu-1"]})
    assert Session.objects.get(pk=on_cpu.pk).status == "TERMINATING"
    assert Session.objects.get(pk=on_gpu.pk).status == "RUNNING"


@pytest.mark.parametrize("data", [{"action": "drain"}, {"action": "drain", "agent": "no-such-agent"},
                                  {"action": "drain", "agent": ["cpu-1", "bad\x00id"]},
                                  {"action": "terminate", "agent": [f"a{n}" for n in range(300)]},
                                  {"action": "explode", "agent": "cpu-1"}, {"agent": "cpu-1"}])
def test_it_refuses_a_bad_agent_action_with_a_message_and_changes_nothing(client, cluster, superadmin, data):
    client.force_login(superadmin)
    response = client.post(reverse("ui-operators:agent-action"), data, follow=True)
    assert response.status_code == 200
    assert 'class="error"' in response.content.decode()
    assert Agent.objects.filter(schedulable=False).count() == 0


def test_the_admin_has_the_same_agent_actions(client, cluster, owner, superadmin):
    session = running_session(owner, "admin-target")
    client.force_login(superadmin)
    url = "/admin/agents/agent/"
    client.post(url, {"action": "drain_agents", "_selected_action": ["cpu-1"]})
    assert not Agent.objects.get(pk="cpu-1").schedulable
    client.post(url, {"action": "terminate_agent_sessions", "_selected_action": ["cpu-1"]})
    assert Session.objects.get(pk=session.pk).status == "TERMINATING"
    client.post(url, {"action": "mark_schedulable", "_selected_action": ["cpu-1"]})
    assert Agent.objects.get(pk="cpu-1").schedulable


# --- images -----------------------------------------------------------------------------------------

def test_the_image_catalogue_lists_images_with_their_resource_limits(client, cluster, superadmin):
    client.force_login(superadmin)
    html = client.get(reverse("ui-operators:images")).content.decode()
    assert "bai/shell" in html and "cpu 1 – 8" in html and "mem 256 MiB – —" in html


def test_a_rescan_runs_as_a_background_task_whose_page_shows_its_progress(client, cluster, superadmin):
    ContainerRegistry.objects.create(registry_name="cr.example.com", url="https://cr.example.com")
    client.force_login(superadmin)
    response = client.post(reverse("ui-operators:rescan"))
    task = BackgroundTask.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("ui:task", kwargs={"task_id": task.pk})
    assert task.name == "rescan_images" and task.owner_id == str(superadmin.pk)


# --- maintenance ------------------------------------------------------------------------------------

def test_maintenance_shows_the_stuck_sessions_first_and_clears_them_on_request(client, cluster, owner, superadmin,
                                                                              settings):
    settings.SESSION_TERMINATING_TIMEOUT = 600
    stuck = running_session(owner, "hangs", status="TERMINATING")
    Session.objects.filter(pk=stuck.pk).update(status_changed=timezone.now() - timedelta(hours=2))
    fine = running_session(owner, "fine")
    client.force_login(superadmin)
    html = client.get(reverse("ui-operators:maintenance")).content.decode()
    assert f'data-session="{stuck.pk}"' in html and 'data-kind="forced"' in html
    assert f'data-session="{fine.pk}"' not in html and "owner@example.com" in html
    assert Session.objects.get(pk=stuck.pk).status == "TERMINATING"  # showing changed nothing
    response = client.post(reverse("ui-operators:clear-stuck"), follow=True)
    assert "1 forced" in response.content.decode()
    assert Session.objects.get(pk=stuck.pk).status == "TERMINATED"
    assert Session.objects.get(pk=fine.pk).status == "RUNNING"
    assert "Nothing is stuck." in client.get(reverse("ui-operators:maintenance")).content.decode()


def test_the_findings_name_a_session_on_a_lost_agent_as_the_reconciler_then_treats_it(client, cluster, owner,
                                                                                       superadmin, settings):
    settings.AGENT_LOST_GRACE = 0
    on_lost = running_session(owner, "on-lost", agent="gpu-1")
    Agent.objects.filter(pk="gpu-1").update(status=AgentStatus.LOST, lost_at=timezone.now() - timedelta(hours=1))
    client.force_login(superadmin)
    html = client.get(reverse("ui-operators:maintenance")).content.decode()
    assert f'data-session="{on_lost.pk}" data-kind="agent_lost"' in html and "its agent is lost" in html
    client.post(reverse("ui-operators:clear-stuck"))
    assert Session.objects.get(pk=on_lost.pk).status == "ERROR"


def test_recalculating_usage_rewrites_an_agents_drifted_occupancy(client, cluster, owner, superadmin):
    running_session(owner, "holds-one")
    Kernel.objects.filter(agent_id="cpu-1").update(occupied_slots={"cpu": "1", "mem": str(GIB)})
    client.force_login(superadmin)
    response = client.post(reverse("ui-operators:recalculate"), follow=True)
    assert "Usage recalculated" in response.content.decode()
    assert Agent.objects.get(pk="cpu-1").occupied_slots == {"cpu": "1", "mem": str(GIB)}


# --- usage statistics -------------------------------------------------------------------------------

def test_usage_statistics_show_core_hours_per_user_and_day_as_a_table_and_an_svg_chart(client, cluster, owner,
                                                                                      member, superadmin):
    now = timezone.now()
    yesterday = now - timedelta(days=1)
    session = running_session(owner, "two-hours", status="TERMINATED")
    start = yesterday.replace(hour=10, minute=0, second=0, microsecond=0)
    Kernel.objects.filter(session=session).update(
        created_at=start, terminated_at=start + timedelta(hours=2), occupied_slots={"cpu": "2", "mem": str(GIB)},
        status_history=[{"status": "SCHEDULED", "timestamp": start.isoformat()}])
    client.force_login(superadmin)
    day = yesterday.date().isoformat()
    response = client.get(reverse("ui-operators:usage"), {"start": day, "end": day, "by": "user"})
    html = response.content.decode()
    assert response.status_code == 200
    assert 'data-owner="owner@example.com"' in html and "4.0" in html  # 2 cores x 2 hours
    assert "<svg" in html and "<rect" in html and 'style="' not in html
    by_project = client.get(reverse("ui-operators:usage"), {"start": day, "end": day, "by": "project"})
    assert 'data-owner="default/default"' in by_project.content.decode()


@pytest.mark.parametrize("query", [{"start": "yesterday"}, {"start": "2026-02-10", "end": "2026-02-01"},
                                   {"start": "2020-01-01", "end": "2026-01-01"}, {"by": "planet"}])
def test_it_refuses_a_bad_usage_period_with_a_message(client, cluster, superadmin, query):
    client.force_login(superadmin)
    response = client.get(reverse("ui-operators:usage"), query)
    assert response.status_code == 400
    assert "errorlist" in response.content.decode() or 'class="error"' in response.content.decode()


# --- the admin --------------------------------------------------------------------------------------

OUR_APPS = ("accounts", "agents", "compute_sessions", "sessions", "vfolders", "appproxy", "serving", "backendai")


def test_every_model_of_ours_has_a_readable_name():
    plain = [m.__name__ for m in apps.get_models() if m._meta.app_label in OUR_APPS and m.__str__ is models.Model.__str__]
    assert plain == []


def test_every_registered_admin_page_renders_and_names_rows_for_people(client, cluster, owner, superadmin, defaults):
    running_session(owner, "listed")
    default, gpu = cluster
    project = owner.projects.first()
    ScalingGroupForDomain.objects.create(scaling_group=gpu, domain=defaults.domain)
    ScalingGroupForProject.objects.create(scaling_group=gpu, project=project)
    ScalingGroupForKeypair.objects.create(scaling_group=gpu, keypair=Keypair.objects.get(user=owner))
    ResourcePreset.objects.create(name="small", resource_slots={"cpu": "1", "mem": str(GIB)})
    agent_services.issue_token("node token", agent_id="cpu-1")
    client.force_login(superadmin)
    for model, model_admin in admin.site._registry.items():
        meta = model._meta
        changelist = client.get(reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist"))
        assert changelist.status_code == 200, meta.label
        assert "object (" not in changelist.content.decode(), meta.label
        for row in model.objects.all()[:3]:
            assert "object (" not in str(row), meta.label
            page = client.get(reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[row.pk]))
            assert page.status_code == 200, meta.label
            assert "object (" not in page.content.decode(), meta.label
    for association in (ScalingGroupForDomain, ScalingGroupForProject, ScalingGroupForKeypair):
        assert "gpu \u2194 " in str(association.objects.get(scaling_group=gpu))
    assert AgentStatus.ALIVE  # the fixture's agents are alive ones


def test_the_preset_admin_takes_slots_with_units(client, cluster, superadmin):
    client.force_login(superadmin)
    response = client.post("/admin/compute_sessions/resourcepreset/add/", {
        "name": "gpu-small", "scaling_group": "", "resource_slots_cpu": "2", "resource_slots_mem": "8",
        "resource_slots_mem_unit": "GiB", "resource_slots_cuda_device": "", "resource_slots_cuda_shares": "",
        "resource_slots_other": "", "shared_memory": "64m"})
    assert response.status_code == 302, response.content.decode()[-2000:]
    preset = ResourcePreset.objects.get(name="gpu-small")
    assert preset.resource_slots == {"cpu": "2", "mem": str(8 * GIB)} and preset.shared_memory == 64 * 2**20
    listed = client.get("/admin/compute_sessions/resourcepreset/").content.decode()
    assert "mem 8 GiB" in listed and "64 MiB" in listed
    page = client.get(f"/admin/compute_sessions/resourcepreset/{preset.pk}/change/").content.decode()
    assert 'name="resource_slots_mem" value="8"' in page
