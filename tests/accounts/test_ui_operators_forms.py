"""The admin's human forms for resource policies and presets: slots entered with units
(accounts.slot_form), sizes in GiB, the messages beside the field; Django's Groups hidden."""
from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group

from accounts.admin import KeypairPolicyHumanForm, ProjectPolicyForm, UserPolicyForm
from accounts.models import KeypairResourcePolicy, ProjectResourcePolicy, UserResourcePolicy
from accounts.slot_form import initial_from_slots

pytestmark = pytest.mark.django_db

GIB = 2**30


def keypair_policy_data(**slots):
    data = {"name": "gpu-team", "default_for_unspecified": "LIMITED", "max_concurrent_sessions": "3",
            "max_concurrent_sftp_sessions": "1", "max_containers_per_session": "1", "max_session_lifetime": "0",
            "idle_timeout": "-1", "max_pending_session_count": "", "allowed_vfolder_hosts": "{}",
            "total_resource_slots_mem_unit": "GiB", "max_pending_session_resource_slots_mem_unit": "GiB"}
    data.update({f"total_resource_slots_{k}": v for k, v in slots.items()})
    return data


def test_the_keypair_policy_form_turns_fields_with_units_into_the_stored_slot_map(defaults):
    form = KeypairPolicyHumanForm(data=keypair_policy_data(cpu="8", mem="16", cuda_device="2", cuda_shares="0.5",
                                                           other="rocm.device=1"))
    assert form.is_valid(), form.errors
    policy = form.save()
    policy.refresh_from_db()
    assert policy.total_resource_slots == {"cpu": "8", "mem": str(16 * GIB), "cuda.device": "2",
                                           "cuda.shares": "0.5", "rocm.device": "1"}
    assert policy.max_concurrent_sessions == 3


def test_the_stored_slot_map_comes_back_as_the_same_fields(defaults):
    slots = {"cpu": "4", "mem": str(512 * 2**20), "cuda.device": "1", "rocm.device": "2"}
    initial = initial_from_slots("total_resource_slots", slots)
    assert initial["total_resource_slots_cpu"] == Decimal("4")
    assert (initial["total_resource_slots_mem"], initial["total_resource_slots_mem_unit"]) == (Decimal("512"), "MiB")
    assert initial["total_resource_slots_cuda_device"] == Decimal("1")
    assert initial["total_resource_slots_other"] == "rocm.device=2"
    data = keypair_policy_data(cpu="4", mem="512", cuda_device="1", other="rocm.device=2")
    data["total_resource_slots_mem_unit"] = "MiB"
    form = KeypairPolicyHumanForm(data=data)
    assert form.is_valid(), form.errors
    assert form.cleaned_data["total_resource_slots"] == slots


def test_an_edit_form_shows_the_stored_memory_in_gib(defaults):
    policy = KeypairResourcePolicy.objects.create(name="big", total_resource_slots={"cpu": "16", "mem": str(64 * GIB)})
    form = KeypairPolicyHumanForm(instance=policy)
    assert form["total_resource_slots_mem"].value() == Decimal("64")
    assert form["total_resource_slots_mem_unit"].value() == "GiB"
    assert form["total_resource_slots_cpu"].value() == Decimal("16")
    assert "total_resource_slots" not in form.fields  # no JSON text box


@pytest.mark.parametrize(("field", "value"), [("cpu", "-1"), ("cpu", "eight"), ("mem", "-3"), ("cuda_device", "1.5"),
                                              ("other", "rocm.device"), ("other", "rocm.device=lots")])
def test_it_refuses_a_bad_amount_with_the_message_beside_its_field(defaults, field, value):
    form = KeypairPolicyHumanForm(data=keypair_policy_data(**{field: value}))
    assert not form.is_valid()
    assert f"total_resource_slots_{field}" in form.errors, form.errors
    assert not KeypairResourcePolicy.objects.filter(name="gpu-team").exists()


def test_it_refuses_a_slot_given_twice():
    form = KeypairPolicyHumanForm(data=keypair_policy_data(cpu="2", other="cpu=4"))
    assert not form.is_valid()
    assert "given twice" in str(form.errors["total_resource_slots_other"])


def test_quota_sizes_are_entered_in_gib_and_empty_means_unlimited(defaults):
    form = UserPolicyForm(data={"name": "lab", "max_vfolder_count": "5", "max_quota_scope_size": "1.5",
                                "max_session_count_per_model_session": "10", "max_customized_image_count": "3"})
    assert form.is_valid(), form.errors
    assert form.save().max_quota_scope_size == int(1.5 * GIB)
    form = ProjectPolicyForm(data={"name": "proj", "max_vfolder_count": "0", "max_quota_scope_size": ""})
    assert form.is_valid(), form.errors
    assert form.save().max_quota_scope_size == -1
    edit = UserPolicyForm(instance=UserResourcePolicy.objects.get(name="lab"))
    assert edit["max_quota_scope_size"].value() == "1.5"
    bad = ProjectPolicyForm(data={"name": "p2", "max_vfolder_count": "0", "max_quota_scope_size": "a lot"})
    assert not bad.is_valid() and "max_quota_scope_size" in bad.errors
    assert not ProjectResourcePolicy.objects.filter(name="p2").exists()


def test_the_admin_saves_a_keypair_policy_from_the_human_form(client, superadmin):
    client.force_login(superadmin)
    page = client.get("/admin/accounts/keypairresourcepolicy/add/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="total_resource_slots_mem_unit"' in html and 'name="total_resource_slots"' not in html
    response = client.post("/admin/accounts/keypairresourcepolicy/add/", keypair_policy_data(cpu="2", mem="4"))
    assert response.status_code == 302, response.content.decode()[-3000:]
    assert KeypairResourcePolicy.objects.get(name="gpu-team").total_resource_slots == {"cpu": "2", "mem": str(4 * GIB)}
    bad = client.post("/admin/accounts/keypairresourcepolicy/add/", {**keypair_policy_data(cpu="x"), "name": "nope"})
    assert bad.status_code == 200
    assert "Enter a number" in bad.content.decode()
    assert not KeypairResourcePolicy.objects.filter(name="nope").exists()


def test_the_policy_lists_show_sizes_for_people(client, superadmin):
    KeypairResourcePolicy.objects.create(name="big", total_resource_slots={"cpu": "16", "mem": str(64 * GIB)},
                                         max_session_lifetime=9000, idle_timeout=0)
    UserResourcePolicy.objects.create(name="lab", max_quota_scope_size=10 * GIB)
    client.force_login(superadmin)
    listed = client.get("/admin/accounts/keypairresourcepolicy/").content.decode()
    assert "cpu 16, mem 64 GiB" in listed and "2 h 30 min" in listed and "never" in listed
    assert "10 GiB" in client.get("/admin/accounts/userresourcepolicy/").content.decode()


def test_djangos_unused_groups_are_not_in_the_admin(client, superadmin):
    assert not admin.site.is_registered(Group)
    client.force_login(superadmin)
    assert client.get("/admin/auth/group/").status_code == 404
