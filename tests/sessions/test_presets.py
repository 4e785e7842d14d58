"""Resource presets, manageable everywhere: GraphQL (``resource_preset``, ``resource_presets``
and the superadmin-only ``create_resource_preset``, ``modify_resource_preset``,
``delete_resource_preset``), the Django admin, and the web UI's create form."""
from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import Domain
from agents import services as agent_services
from agents.models import Agent, Image, ScalingGroup
from helpers import slug
from permission_matrix import ALL_OK, ROLES, SUPERADMIN_ONLY, Case, World, check, params
from permission_matrix import gql_case as gql
from sessions.models import ResourcePreset, Session

pytestmark = pytest.mark.django_db

FIELDS = "name resource_slots shared_memory scaling_group_name"
LIST_DOC = f"query {{ resource_presets {{ {FIELDS} }} }}"
ONE_DOC = f"query($name: String) {{ resource_preset(name: $name) {{ {FIELDS} }} }}"
CREATE_DOC = ("mutation($name: String!, $props: CreateResourcePresetInput!) { create_resource_preset(name: $name, "
              f"props: $props) {{ ok msg resource_preset {{ {FIELDS} }} }} }}")
MODIFY_DOC = ("mutation($name: String, $props: ModifyResourcePresetInput!) { "
              "modify_resource_preset(name: $name, props: $props) { ok msg } }")
DELETE_DOC = "mutation($name: String) { delete_resource_preset(name: $name) { ok msg } }"
GIB = 2**30


def make_presets():
    """One preset offered everywhere, one for the default group (the default domain's), one for a
    private group of the other domain (its users may not use it; its domain admin may)."""
    default_group = agent_services.ensure_default_scaling_group()
    other, _ = Domain.objects.get_or_create(name="other")
    private = ScalingGroup.objects.create(name="private-sg", is_public=False)
    private.domains.add(other)
    ResourcePreset.objects.create(name="everywhere-preset", resource_slots={"cpu": "1", "mem": str(GIB)})
    ResourcePreset.objects.create(name="default-sg-preset", resource_slots={"cpu": "2", "mem": str(2 * GIB)},
                                  shared_memory=64 * 2**20, scaling_group=default_group)
    ResourcePreset.objects.create(name="private-sg-preset", resource_slots={"cpu": "4", "mem": str(4 * GIB)},
                                  scaling_group=private)


def presets_state(world=None):
    return sorted(ResourcePreset.objects.values_list("name", "resource_slots", "shared_memory", "scaling_group_id"),
                  key=lambda row: row[0])


@pytest.fixture
def world(owner, member, outsider, foreign_admin, superadmin):
    make_presets()
    users = {"owner": owner, "member": member, "outsider": outsider, "foreign_admin": foreign_admin,
             "superadmin": superadmin}
    return World(users=users)


def slots(**amounts) -> str:
    return json.dumps(amounts)


GRAPHQL = [
    Case("resource_presets: the preset offered everywhere", gql(LIST_DOC), ALL_OK,
         marker=lambda w: "everywhere-preset", sees=ROLES),
    Case("resource_presets: the default group's preset", gql(LIST_DOC), ALL_OK,
         marker=lambda w: "default-sg-preset", sees=("owner", "member", "superadmin")),
    Case("resource_presets: another domain's private group's preset", gql(LIST_DOC), ALL_OK,
         marker=lambda w: "private-sg-preset", sees=("foreign_admin", "superadmin")),
    Case("resource_preset(name: the private group's)", gql(ONE_DOC, {"name": "private-sg-preset"}), ALL_OK,
         marker=lambda w: "private-sg-preset", sees=("foreign_admin", "superadmin")),
    Case("resource_preset(name: the default group's)", gql(ONE_DOC, {"name": "default-sg-preset"}), ALL_OK,
         marker=lambda w: "default-sg-preset", sees=("owner", "member", "superadmin")),
    Case("create_resource_preset", gql(CREATE_DOC, {"name": "new-preset", "props": {
        "resource_slots": slots(cpu="2", mem="4g"), "shared_memory": "128m"}}), SUPERADMIN_ONLY,
         unchanged=presets_state),
    Case("modify_resource_preset", gql(MODIFY_DOC, {"name": "everywhere-preset", "props": {
        "resource_slots": slots(cpu="8", mem="8g")}}), SUPERADMIN_ONLY, unchanged=presets_state),
    Case("modify_resource_preset (rename)", gql(MODIFY_DOC, {"name": "default-sg-preset", "props": {
        "name": "renamed-preset"}}), SUPERADMIN_ONLY, unchanged=presets_state),
    Case("delete_resource_preset", gql(DELETE_DOC, {"name": "private-sg-preset"}), SUPERADMIN_ONLY,
         unchanged=presets_state),
]


@pytest.mark.parametrize("case, role", params(GRAPHQL))
def test_preset_fields_answer_each_role_as_the_matrix_says(case, role, world, signed):
    check(case, role, world, signed)


@pytest.mark.parametrize("role", ["owner", "member", "outsider", "foreign_admin"])
def test_a_refused_mutation_names_the_reason(world, signed, role):
    response = signed(world.users[role]).post("/admin/gql", {"query": DELETE_DOC,
                                                             "variables": {"name": "everywhere-preset"}})
    assert response.status_code == 403 and slug(response) == "insufficient-privilege"
    assert "Only superadmins" in response.json()["msg"]


def test_the_list_shows_the_wire_shapes(world, signed):
    data = signed(world.users["superadmin"]).post("/admin/gql", {"query": LIST_DOC}).json()["data"]
    rows = {row["name"]: row for row in data["resource_presets"]}
    assert list(rows) == ["default-sg-preset", "everywhere-preset", "private-sg-preset"]  # by name
    assert json.loads(rows["default-sg-preset"]["resource_slots"]) == {"cpu": "2", "mem": str(2 * GIB)}
    assert rows["default-sg-preset"]["shared_memory"] == 64 * 2**20
    assert rows["default-sg-preset"]["scaling_group_name"] == "default"
    assert rows["everywhere-preset"]["shared_memory"] is None and rows["everywhere-preset"]["scaling_group_name"] is None


def test_the_list_takes_a_filter_and_an_order(world, signed):
    api = signed(world.users["superadmin"])
    doc = 'query { resource_presets(filter: "name ilike \\"%sg%\\"", order: "-name") { name } }'
    names = [row["name"] for row in api.post("/admin/gql", {"query": doc}).json()["data"]["resource_presets"]]
    assert names == ["private-sg-preset", "default-sg-preset"]
    bad = api.post("/admin/gql", {"query": 'query { resource_presets(order: "secret") { name } }'})
    assert bad.status_code == 400


def test_a_superadmin_creates_a_preset_seen_by_rest_and_the_admin(world, signed, client):
    root = world.users["superadmin"]
    response = signed(root).post("/admin/gql", {"query": CREATE_DOC, "variables": {"name": "gpu-small", "props": {
        "resource_slots": slots(cpu="2", mem="4g"), "shared_memory": "256m", "scaling_group_name": "default"}}})
    assert response.status_code == 200, response.content
    created = response.json()["data"]["create_resource_preset"]
    assert created["ok"] is True and created["resource_preset"]["name"] == "gpu-small"
    preset = ResourcePreset.objects.get(name="gpu-small")
    assert preset.resource_slots == {"cpu": "2", "mem": str(4 * GIB)} and preset.shared_memory == 256 * 2**20
    assert preset.scaling_group_id == "default"
    listed = {p["name"]: p for p in signed(world.users["owner"]).get("/resource/presets").json()["presets"]}
    assert listed["gpu-small"]["resource_slots"] == {"cpu": "2", "mem": str(4 * GIB)}
    client.force_login(root)
    page = client.get(reverse("admin:compute_sessions_resourcepreset_changelist")).content.decode()
    assert "gpu-small" in page


def test_a_superadmin_modifies_only_the_fields_given(world, signed):
    api = signed(world.users["superadmin"])
    response = api.post("/admin/gql", {"query": MODIFY_DOC, "variables": {"name": "default-sg-preset", "props": {
        "shared_memory": "32m"}}})
    assert response.json()["data"]["modify_resource_preset"] == {"ok": True, "msg": "success"}
    preset = ResourcePreset.objects.get(name="default-sg-preset")
    assert preset.shared_memory == 32 * 2**20 and preset.resource_slots == {"cpu": "2", "mem": str(2 * GIB)}
    assert preset.scaling_group_id == "default"
    api.post("/admin/gql", {"query": MODIFY_DOC, "variables": {"name": "default-sg-preset", "props": {
        "name": "anywhere-now", "scaling_group_name": None, "shared_memory": None}}})
    preset = ResourcePreset.objects.get(pk=preset.pk)
    assert preset.name == "anywhere-now" and preset.scaling_group_id is None and preset.shared_memory is None


def test_a_superadmin_deletes_a_preset(world, signed):
    api = signed(world.users["superadmin"])
    response = api.post("/admin/gql", {"query": DELETE_DOC, "variables": {"name": "everywhere-preset"}})
    assert response.json()["data"]["delete_resource_preset"]["ok"] is True
    assert not ResourcePreset.objects.filter(name="everywhere-preset").exists()
    missing = api.post("/admin/gql", {"query": DELETE_DOC, "variables": {"name": "everywhere-preset"}})
    assert missing.status_code == 404 and slug(missing) == "object-not-found"


@pytest.mark.parametrize("props, words", [
    ({"resource_slots": "{}"}, "at least one"),
    ({"resource_slots": slots(cpu="0", mem="0")}, "at least one"),
    ({"resource_slots": slots(cpu="-1")}, "invalid number"),
    ({"resource_slots": json.dumps({"cpu": -1})}, "negative"),
    ({"resource_slots": slots(cpu="inf")}, "finite"),
    ({"resource_slots": slots(cpu="many")}, "cpu"),
    ({"resource_slots": slots(**{"fake.device": "1"})}, "unknown slot"),
    ({"resource_slots": "[1, 2]"}, "object"),
    ({"resource_slots": slots(cpu="1", mem="1g"), "shared_memory": "lots"}, "shared_memory"),
    ({"resource_slots": slots(cpu="1", mem="1g"), "shared_memory": "2g"}, "less than"),
    ({"resource_slots": slots(cpu="1", mem="1g"), "shared_memory": "-5"}, "shared_memory"),
    ({"resource_slots": slots(cpu="1"), "scaling_group_name": "no-such-group"}, "no scaling group"),
])
def test_hostile_preset_input_is_refused_and_changes_nothing(world, signed, props, words):
    before = presets_state()
    response = signed(world.users["superadmin"]).post("/admin/gql", {"query": CREATE_DOC, "variables": {
        "name": "hostile", "props": props}})
    assert response.status_code == 400, response.content
    assert words in response.json()["msg"], response.json()
    assert presets_state() == before


@pytest.mark.parametrize("name, words", [("", "name"), ("  ", "name"), ("x" * 300, "at most"),
                                         ("bad\nname", "control"), ("everywhere-preset", "already exists")])
def test_a_bad_or_taken_name_is_refused(world, signed, name, words):
    before = presets_state()
    response = signed(world.users["superadmin"]).post("/admin/gql", {"query": CREATE_DOC, "variables": {
        "name": name, "props": {"resource_slots": slots(cpu="1")}}})
    assert response.status_code == 400 and words in response.json()["msg"]
    assert presets_state() == before


def test_text_that_is_not_json_is_a_graphql_error(world, signed):
    before = presets_state()
    response = signed(world.users["superadmin"]).post("/admin/gql", {"query": CREATE_DOC, "variables": {
        "name": "broken", "props": {"resource_slots": "{not json"}}})
    assert response.status_code == 400 and slug(response) == "graphql-error"
    assert presets_state() == before


def test_renaming_onto_another_preset_or_modifying_a_missing_one_is_refused(world, signed):
    api = signed(world.users["superadmin"])
    before = presets_state()
    taken = api.post("/admin/gql", {"query": MODIFY_DOC, "variables": {"name": "everywhere-preset", "props": {
        "name": "default-sg-preset"}}})
    assert taken.status_code == 400 and "already exists" in taken.json()["msg"]
    missing = api.post("/admin/gql", {"query": MODIFY_DOC, "variables": {"name": "nope", "props": {}}})
    assert missing.status_code == 404
    nameless = api.post("/admin/gql", {"query": MODIFY_DOC, "variables": {"props": {}}})
    assert nameless.status_code == 400
    assert presets_state() == before


# --- the Django admin -------------------------------------------------------------------------------

ADMIN_ADD = "admin:compute_sessions_resourcepreset_add"


def admin_form(**overrides) -> dict:
    """The admin's human form (accounts.slot_form): one field per slot, memory with a unit."""
    data = {"name": "admin-preset", "resource_slots_cpu": "2", "resource_slots_mem": "2",
            "resource_slots_mem_unit": "GiB", "resource_slots_cuda_device": "", "resource_slots_cuda_shares": "",
            "resource_slots_other": "", "shared_memory": "", "scaling_group": ""}
    data.update(overrides)
    return data


def test_the_admin_creates_a_preset_with_its_slots_checked_and_normalized(client, superadmin):
    client.force_login(superadmin)
    assert client.get(reverse(ADMIN_ADD)).status_code == 200
    response = client.post(reverse(ADMIN_ADD), admin_form(shared_memory="64m"))
    assert response.status_code == 302, response.content.decode()[:3000]
    preset = ResourcePreset.objects.get(name="admin-preset")
    assert preset.resource_slots == {"cpu": "2", "mem": str(2 * GIB)} and preset.shared_memory == 64 * 2**20


@pytest.mark.parametrize("overrides, words", [
    ({"resource_slots_cpu": "-2"}, "greater than or equal to 0"),
    ({"resource_slots_other": "warp.drive=1"}, "unknown slot"),
    ({"resource_slots_cpu": "0", "resource_slots_mem": ""}, "at least one"),
    ({"shared_memory": "4g"}, "less than"),
])
def test_the_admin_refuses_bad_slots_beside_the_field(client, superadmin, overrides, words):
    client.force_login(superadmin)
    response = client.post(reverse(ADMIN_ADD), admin_form(**overrides))
    assert response.status_code == 200 and words in response.content.decode()
    assert not ResourcePreset.objects.exists()


def test_the_admin_changes_and_deletes_a_preset(client, superadmin):
    client.force_login(superadmin)
    client.post(reverse(ADMIN_ADD), admin_form())
    preset = ResourcePreset.objects.get(name="admin-preset")
    change = reverse("admin:compute_sessions_resourcepreset_change", args=[preset.pk])
    response = client.post(change, admin_form(name="admin-renamed", resource_slots_cpu="3", resource_slots_mem=""))
    assert response.status_code == 302
    preset = ResourcePreset.objects.get(pk=preset.pk)
    assert preset.name == "admin-renamed" and preset.resource_slots == {"cpu": "3"}
    delete = reverse("admin:compute_sessions_resourcepreset_delete", args=[preset.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 302
    assert not ResourcePreset.objects.exists()


def test_the_admin_is_closed_to_everyone_but_superadmins(client, domain_admin):
    client.force_login(domain_admin)
    response = client.post(reverse(ADMIN_ADD), admin_form())
    assert response.status_code in (302, 403) and not ResourcePreset.objects.exists()


# --- the web UI's create form --------------------------------------------------------------------

IMAGE = "cr.example.com/stable/python:3.11"
CREATE = reverse("ui-sessions:create")


@pytest.fixture
def form_cluster(defaults):
    group = agent_services.ensure_default_scaling_group()
    Image.objects.create(name=IMAGE, registry_name="cr.example.com", repository="stable/python", tag="3.11",
                         architecture="x86_64",
                         resources={"cpu": {"min": "1", "max": None}, "mem": {"min": str(256 * 2**20), "max": None}})
    Agent.objects.create(id="node-1", scaling_group=group, available_slots={"cpu": "8", "mem": str(16 * GIB)},
                         last_heartbeat=timezone.now())
    make_presets()
    return group


def form_data(**overrides) -> dict:
    data = {"image": IMAGE, "architecture": "", "session_type": "interactive", "scaling_group": "", "preset": "",
            "project": "default", "name": "", "startup_command": "", "environ": "", "batch_timeout": "",
            "slot_cpu": "", "slot_mem": ""}
    data.update(overrides)
    return data


def preset_inputs(page: str, name: str) -> dict:
    match = re.search(rf'data-preset="{re.escape(name)}" data-inputs="([^"]*)"', page)
    assert match, f"no preset {name} on the page"
    return json.loads(match.group(1).replace("&quot;", '"'))


def test_the_form_carries_each_presets_amounts_for_the_script_to_fill_in(client, owner, form_cluster):
    client.force_login(owner)
    page = client.get(CREATE).content.decode()
    assert preset_inputs(page, "everywhere-preset") == {"slot_cpu": "1", "slot_mem": "1g"}
    assert preset_inputs(page, "default-sg-preset") == {"slot_cpu": "2", "slot_mem": "2g"}
    assert 'data-preset="private-sg-preset"' not in page  # not a group the owner may use
    assert "sessions/presets.js" in page
    assert client.get("/static/sessions/presets.js").status_code == 200


def test_a_chosen_preset_decides_the_resources_whatever_the_amount_fields_say(client, owner, form_cluster):
    client.force_login(owner)
    response = client.post(CREATE, form_data(name="preset-wins", preset="default-sg-preset", slot_cpu="7",
                                             slot_mem="7g"))
    assert response.status_code == 302, response.content.decode()[:3000]
    session = Session.objects.get(name="preset-wins")
    assert session.requested_slots == {"cpu": "2", "mem": str(2 * GIB)}
    assert session.resource_opts.get("shmem") in (64 * 2**20, str(64 * 2**20))


def test_a_preset_of_a_group_the_user_may_not_use_is_refused(client, owner, form_cluster):
    client.force_login(owner)
    response = client.post(CREATE, form_data(name="sneaky-1", preset="private-sg-preset"))
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert not Session.objects.exists()
