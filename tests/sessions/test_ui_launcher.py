"""The session launcher (``/ui/sessions/new/`` and its live hint): bounds of each amount
shown from the image, the largest agent and the policy; folder mounts with their mode and
path; multi-node; impossible or over-quota requests refused at once with the reason (never
queued); "would start now on <agent>" / "would wait because …" computed by the scheduler's
own code without writing anything."""
from __future__ import annotations

import html
import re

import pytest
from django.urls import reverse
from sessions_ui_support import GIB, IMAGE, seed_python_image_and_agent
from sessions_ui_support import running as running_session

from accounts.models import Domain
from accounts.services import preferences
from agents import services as agent_services
from agents.models import Agent, ScalingGroup, ScalingGroupForDomain
from sessions.enqueue import EnqueueRequest, enqueue
from sessions.models import Kernel, ResourcePreset, Session
from vfolders import services as vfolder_services

pytestmark = pytest.mark.django_db

CREATE = reverse("ui-sessions:create")
HINT = reverse("ui-sessions:create-hint")


@pytest.fixture
def cluster(defaults):
    group = agent_services.ensure_default_scaling_group()
    image = seed_python_image_and_agent(
        group, resources={"cpu": {"min": "1", "max": "16"}, "mem": {"min": str(256 * 2**20), "max": None}})
    ResourcePreset.objects.create(name="small", resource_slots={"cpu": "1", "mem": str(GIB)})
    ResourcePreset.objects.create(name="medium", resource_slots={"cpu": "2", "mem": str(2 * GIB)})
    return group, image


@pytest.fixture
def host(storage_proxy):
    return vfolder_services.ensure_default_storage_host()


def form_data(**overrides) -> dict:
    data = {"image": IMAGE, "architecture": "", "session_type": "interactive", "scaling_group": "", "preset": "",
            "project": "default", "name": "", "startup_command": "", "environ": "", "batch_timeout": "",
            "cluster_mode": "single-node", "cluster_size": "1", "slot_cpu": "1", "slot_mem": "1g"}
    data.update(overrides)
    return data


def as_user(client, user):
    client.force_login(user)
    return client


def field_error(response, field: str) -> str:
    match = re.search(rf'id="error-{re.escape(field)}"[^>]*>(.*?)</div>', response.content.decode(), re.S)
    return html.unescape(match.group(1).strip()) if match else ""


def top_errors(response) -> str:
    match = re.search(r'id="form-errors"[^>]*>(.*?)</div>\s*</div>', response.content.decode(), re.S)
    return html.unescape(match.group(1)) if match else ""


def hint_text(response) -> str:
    match = re.search(r'id="launch-hint-text">(.*?)</p>', response.content.decode(), re.S)
    return html.unescape(match.group(1).strip()) if match else ""


def limit_policy(user, **fields):
    policy = user.main_keypair.resource_policy
    for key, value in fields.items():
        setattr(policy, key, value)
    policy.save()


# --- bounds shown, not discovered ------------------------------------------------------------

def test_each_amount_shows_its_bounds_from_the_image_the_largest_agent_and_the_policy(client, owner, cluster):
    limit_policy(owner, total_resource_slots={"cpu": "6"}, default_for_unspecified="UNLIMITED")
    page = as_user(client, owner).get(CREATE, {"image": IMAGE}).content.decode()
    bound = re.search(r'id="bound-slot_cpu"[^>]*>(.*?)</div>', page).group(1)
    assert "at least 1 core" in bound
    assert "up to 6 cores (image: 16, largest agent: 8, your policy: 6" in bound
    cpu_input = re.search(r'<input[^>]*name="slot_cpu"[^>]*>', page).group(0)
    assert 'min="1"' in cpu_input and 'max="6"' in cpu_input and 'type="number"' in cpu_input
    memory = re.search(r'id="bound-slot_mem"[^>]*>(.*?)</div>', page).group(1)
    assert "up to 16 GiB (largest agent: 16 GiB)" in memory and "at least 320 MiB" in memory  # 256 MiB + 64 MiB shared memory
    assert "Bounds for resource group default" in page
    assert "This image takes cpu 1 to 16 · mem at least 320 MiB (64 MiB of it shared memory)." in page


def test_single_node_kernels_share_the_largest_agent_and_the_quota(client, owner, cluster):
    limit_policy(owner, total_resource_slots={"cpu": "6"}, default_for_unspecified="UNLIMITED")
    response = as_user(client, owner).post(HINT, form_data(cluster_size="2"))
    bound = re.search(r'id="bound-slot_cpu"[^>]*>(.*?)</div>', response.content.decode()).group(1)
    assert "up to 3 cores" in bound and "largest agent / 2 kernels: 4" in bound


def test_the_users_default_preset_and_resource_group_are_preselected(client, owner, cluster):
    preferences.save_preferences(owner, default_preset="medium", default_resource_group="default", language="en",
                                 time_zone="UTC", allowed_presets=["small", "medium"],
                                 allowed_resource_groups=["default"])
    page = as_user(client, owner).get(CREATE).content.decode()
    assert re.search(r'<input type="radio" name="preset" value="medium"\s+checked>', page)
    assert '<option value="default" selected>default</option>' in page


# --- refused at once, not queued ----------------------------------------------------------------

def test_a_request_bigger_than_any_agent_is_refused_with_the_reason_and_not_queued(client, owner, cluster):
    response = as_user(client, owner).post(CREATE, form_data(slot_cpu="12", name="too-big"))
    assert response.status_code == 200
    error = field_error(response, "resources")
    assert "No agent in resource group default is big enough" in error
    assert "cpu 12 asked, the largest agent has 8" in error
    assert not Session.objects.exists() and not Kernel.objects.exists()


def test_a_multi_node_request_is_measured_per_kernel(client, owner, cluster):
    response = as_user(client, owner).post(CREATE, form_data(slot_cpu="6", cluster_size="2",
                                                             cluster_mode="multi-node", name="two-nodes"))
    assert response.status_code == 302, field_error(response, "resources") or top_errors(response)
    session = Session.objects.get(name="two-nodes")
    assert session.cluster_size == 2 and session.cluster_mode == "multi-node" and session.kernels.count() == 2
    response = as_user(client, owner).post(CREATE, form_data(slot_cpu="6", cluster_size="2", name="one-node"))
    assert "cpu 12 asked, the largest agent has 8" in field_error(response, "resources")
    assert not Session.objects.filter(name="one-node").exists()


def test_at_the_concurrency_limit_a_launch_is_refused_above_the_form(client, owner, cluster):
    running_session(owner, "first")
    limit_policy(owner, max_concurrent_sessions=1)
    api = as_user(client, owner)
    quota = re.search(r'<tr data-quota="sessions">(.*?)</tr>', api.get(CREATE).content.decode()).group(1)
    assert re.sub(r"<[^>]+>", " ", quota).split() == ["Sessions", "1", "1", "0"]  # limit, running, left
    response = api.post(CREATE, form_data(name="second"))
    assert response.status_code == 200
    assert "cannot run more than 1 concurrent session(s) (1 running or starting)" in top_errors(response)
    assert list(Session.objects.values_list("name", flat=True)) == ["first"]


def test_over_the_domains_quota_is_refused_with_the_reason_beside_the_resources(client, owner, member, cluster):
    Domain.objects.filter(pk="default").update(total_resource_slots={"cpu": "2"})
    running_session(member, "members", resources={"cpu": "2", "mem": "1g"})
    response = as_user(client, owner).post(CREATE, form_data(name="mine"))
    assert "The domain's resource quota is exceeded: cpu requested 1, 0 left of 2" in field_error(
        response, "resources")
    assert not Session.objects.filter(name="mine").exists()


def test_over_the_keypair_policy_is_refused_beside_the_resources(client, owner, cluster):
    limit_policy(owner, total_resource_slots={"cpu": "2", "mem": str(4 * GIB)}, default_for_unspecified="LIMITED")
    response = as_user(client, owner).post(CREATE, form_data(slot_cpu="3", name="over"))
    assert "More than your remaining quota (cpu 3 asked, 2 left)" in field_error(response, "resources")
    assert not Session.objects.exists()


@pytest.mark.parametrize("fields,field,words", [
    ({"cluster_size": "0"}, "cluster_size", "greater than or equal to 1"),
    ({"cluster_size": "65"}, "cluster_size", "less than or equal to 64"),
    ({"cluster_size": "two"}, "cluster_size", "whole number"),
    ({"cluster_mode": "galaxy"}, "cluster_mode", "Select a valid choice"),
    ({"slot_cpu": "0.5"}, "resources", "needs at least 1 of cpu"),
])
def test_bad_launcher_input_is_shown_beside_its_field_and_queues_nothing(client, owner, cluster, fields, field,
                                                                        words):
    response = as_user(client, owner).post(CREATE, form_data(name="bad-input", **fields))
    assert response.status_code == 200
    assert words in field_error(response, field), response.content.decode()
    assert not Session.objects.exists()


def test_another_domains_resource_group_cannot_be_chosen(client, owner, cluster):
    other, _ = Domain.objects.get_or_create(name="other")
    foreign = ScalingGroup.objects.create(name="foreign-sg")
    ScalingGroupForDomain.objects.create(scaling_group=foreign, domain=other)
    page = as_user(client, owner).get(CREATE).content.decode()
    assert "foreign-sg" not in page
    response = client.post(CREATE, form_data(scaling_group="foreign-sg", name="sneaky"))
    assert "Select a valid choice" in field_error(response, "scaling_group")
    assert "Resource group" in hint_text(client.post(HINT, form_data(scaling_group="foreign-sg")))
    assert not Session.objects.exists()


def test_a_project_the_user_is_not_a_member_of_cannot_be_chosen(client, outsider, cluster):
    response = as_user(client, outsider).post(CREATE, form_data(name="not-mine"))
    assert "Select a valid choice" in field_error(response, "project")
    assert not Session.objects.exists()


# --- folder mounts ---------------------------------------------------------------------------

def test_a_folder_is_mounted_with_the_chosen_mode_and_path(client, owner, cluster, host):
    folder = vfolder_services.create_folder(owner, name="data")
    api = as_user(client, owner)
    page = api.get(CREATE).content.decode()
    assert f'value="{folder.pk.hex}"' in page and 'data-folder="data"' in page
    response = api.post(CREATE, form_data(name="with-data", mounts=[folder.pk.hex],
                                          **{f"mount_mode_{folder.pk.hex}": "ro",
                                             f"mount_path_{folder.pk.hex}": "inputs"}))
    assert response.status_code == 302, response.content.decode()
    [mount] = [m for m in Session.objects.get(name="with-data").vfolder_mounts if m["name"] == "data"]
    assert mount["container_path"] == "/home/work/inputs" and mount["mode"] == "ro"


def test_a_folder_shared_read_only_is_offered_and_mounted_read_only(client, owner, member, cluster, host):
    folder = vfolder_services.create_folder(owner, name="shared")
    vfolder_services.invite(owner, "shared", "ro", [member.email])
    vfolder_services.accept_invitation(member, vfolder_services.invitations_received(member)[0].id)
    api = as_user(client, member)
    page = api.get(CREATE).content.decode()
    select = re.search(rf'<select name="mount_mode_{folder.pk.hex}".*?</select>', page, re.S).group(0)
    assert 'value="ro"' in select and 'value="rw"' not in select
    response = api.post(CREATE, form_data(name="asks-rw", mounts=[folder.pk.hex],
                                          **{f"mount_mode_{folder.pk.hex}": "rw"}))
    assert "is read only for you" in field_error(response, f"mount_mode_{folder.pk.hex}")
    assert not Session.objects.exists()
    response = api.post(CREATE, form_data(name="reads", mounts=[folder.pk.hex]))
    assert response.status_code == 302
    [mount] = [m for m in Session.objects.get(name="reads").vfolder_mounts if m["name"] == "shared"]
    assert mount["mode"] == "ro"


@pytest.mark.parametrize("user_fixture", ["outsider", "member", "foreign_admin"])
def test_a_folder_the_user_cannot_see_is_refused_beside_the_folders(client, owner, cluster, host, request,
                                                                    user_fixture):
    folder = vfolder_services.create_folder(owner, name="private")
    user = request.getfixturevalue(user_fixture)
    api = as_user(client, user)
    assert folder.pk.hex not in api.get(CREATE).content.decode()
    response = api.post(CREATE, form_data(name="sneaky", mounts=[folder.pk.hex]))
    assert "You cannot mount the folder" in field_error(response, "mounts")
    assert not Session.objects.exists()


@pytest.mark.parametrize("path,words", [
    ("../etc", "must not contain '..'"), ("/home/work/../etc", "must not contain '..'"),
    ("/etc", "reserved system path"), ("/home/work", "is reserved"), (".ssh", "shadows"),
])
def test_a_bad_mount_path_is_refused_beside_it(client, owner, cluster, host, path, words):
    folder = vfolder_services.create_folder(owner, name="data")
    response = as_user(client, owner).post(CREATE, form_data(name="bad-path", mounts=[folder.pk.hex], **{
        f"mount_path_{folder.pk.hex}": path}))
    assert words in field_error(response, f"mount_path_{folder.pk.hex}"), response.content.decode()
    assert not Session.objects.exists()


# --- the live hint -------------------------------------------------------------------------------

def test_the_hint_says_it_would_start_now_on_the_agent_and_writes_nothing(client, owner, cluster):
    api = as_user(client, owner)
    response = api.post(HINT, form_data(slot_cpu="2"))
    assert response.status_code == 200 and response["X-Live-Fragment"] == "1"
    assert hint_text(response) == "This would start now on node-1 (resource group default)."
    assert 'hx-swap-oob="true"' in response.content.decode()
    assert re.search(r'id="image-range" hx-swap-oob="true">This image takes cpu 1 to 16', response.content.decode())
    assert not Session.objects.exists() and not Kernel.objects.exists()
    assert Agent.objects.get(pk="node-1").occupied_slots in ({}, None) or not any(
        float(v) for v in Agent.objects.get(pk="node-1").occupied_slots.values())


def test_the_hint_says_it_would_wait_when_no_agent_has_room(client, owner, member, cluster):
    running_session(member, "big-one", resources={"cpu": "7", "mem": "1g"})
    text = hint_text(as_user(client, owner).post(HINT, form_data(slot_cpu="2")))
    assert text.startswith("This would wait because no ALIVE agent with cpu 2")
    assert "in scaling group 'default'" in text, text
    assert Session.objects.count() == 1


def test_the_hint_counts_the_sessions_queued_ahead(client, owner, member, cluster):
    enqueue(member, member.main_keypair, EnqueueRequest(image=IMAGE, name="ahead", enqueue_only=True,
                                                       resources={"cpu": "7", "mem": "1g"}))
    text = hint_text(as_user(client, owner).post(HINT, form_data(slot_cpu="2")))
    assert text.startswith("This would wait because") and "1 session(s) queued ahead" in text
    assert list(Session.objects.values_list("status", flat=True)) == ["PENDING"]  # still pending: nothing ran


def test_the_hint_says_an_impossible_request_cannot_start(client, owner, cluster):
    text = hint_text(as_user(client, owner).post(HINT, form_data(slot_cpu="12")))
    assert text.startswith("This cannot start: No agent in resource group default is big enough")


def test_the_hint_asks_for_an_image_first_and_for_valid_input(client, owner, cluster):
    api = as_user(client, owner)
    assert hint_text(api.post(HINT, form_data(image=""))).startswith("Choose an image")
    assert hint_text(api.post(HINT, form_data(slot_mem="lots"))).startswith("Check the form first (Memory:")


@pytest.mark.parametrize("fields", [
    {"image": "bad\x00image", "architecture": "x\x00"}, {"cluster_size": "9" * 40, "cluster_mode": "\x00"},
    {"scaling_group": "\x00", "project": "\x00", "preset": "\x00"}, {"mounts": ["\x00", "z" * 5000]},
    {"slot_cpu": "1e999", "slot_mem": "-0"}, {"cluster_size": "-3", "session_type": "system"},
])
def test_garbage_gets_an_answer_not_a_500(client, owner, cluster, fields):
    api = as_user(client, owner)
    assert api.post(HINT, form_data(**fields)).status_code == 200
    assert api.post(CREATE, form_data(name="garbage", **fields)).status_code == 200
    assert not Session.objects.exists()


def test_what_the_form_read_is_reused_only_when_it_is_what_enqueue_would_find(owner, cluster):
    from agents.models import Image
    from backendai.api.errors import BackendAIError
    from sessions import launch_check

    _group, image = cluster
    other = Image.objects.create(name="cr.example.com/stable/other:1", registry_name="cr.example.com",
                                 repository="stable/other", tag="1", architecture="x86_64", resources={})
    project = owner.projects.get(name="default")
    req = EnqueueRequest(image=IMAGE, resources={"cpu": "1", "mem": "1g"})
    stale = launch_check.Known(project=project, image=("cr.example.com/stable/other:1", None, "default", other))
    assert launch_check.resolve(owner, owner.main_keypair, req, known=stale).image == image  # another reference
    same = launch_check.Known(project=project, image=(IMAGE, None, "default", image))
    resolved = launch_check.resolve(owner, owner.main_keypair, req, known=same)
    assert (resolved.image, resolved.project, resolved.owner) == (image, project, owner)
    project.is_active = False  # an inactive project is never taken from the form: enqueue refuses it
    project.save(update_fields=["is_active"])
    with pytest.raises(BackendAIError):
        launch_check.resolve(owner, owner.main_keypair, req, known=same)


def test_the_hint_needs_a_login_and_a_post(client, owner, cluster):
    response = client.post(HINT, form_data())
    assert response.status_code == 302 and "/login" in response["Location"]
    assert as_user(client, owner).get(HINT).status_code == 405


@pytest.mark.parametrize("folders", [1, 8])
def test_the_launcher_costs_a_bounded_number_of_queries(client, owner, member, cluster, host, folders,
                                                          django_assert_max_num_queries, django_assert_num_queries):
    """The same count for 1 or 8 folders and with sessions queued: no query per row.  The hint
    reads what the form read once (slot types, project, image, the owner's keypair and policy)
    and the scheduler's snapshot through ``sessions.scheduler.preview_request``: 34 statements
    (was 45 with the slot types read five times)."""
    for n in range(folders):
        vfolder_services.create_folder(owner, name=f"data{n}")
    for n in range(folders):
        enqueue(member, member.main_keypair, EnqueueRequest(image=IMAGE, name=f"queued-{n}", enqueue_only=True))
    api = as_user(client, owner)
    with django_assert_max_num_queries(28):
        page = api.get(CREATE, {"image": IMAGE}).content.decode()
    assert page.count('name="mounts"') == folders
    with django_assert_num_queries(34):
        assert api.post(HINT, form_data()).status_code == 200
