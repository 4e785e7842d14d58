"""GraphQL images and container registries with Backend.AI's names and shapes: each
role sees the images its domain's allowed registries allow (superadmins every one);
alias, dealias, forget, rescan and the registry mutations are the superadmin's, refused
to anyone else with nothing changed; a rescan is a background task whose events the
client follows."""
from __future__ import annotations

import pytest

from agents_gql_support import (
    ALIAS,
    CUSTOMIZED,
    DEALIAS,
    FORGET,
    FORGET_BY_ID,
    IMAGE_BY_ID,
    IMAGE_GET,
    IMAGE_LIST,
    REGISTRIES,
    REGISTRY,
    REGISTRY_CREATE,
    REGISTRY_DELETE,
    REGISTRY_MODIFY,
    REGISTRY_PASSWORD,
    RESCAN,
    RESCAN_26,
    data_of,
    images_state,
)
from helpers import slug
from permission_matrix import ALL_OK, ROLES, SUPERADMIN_ONLY, Case, check, params
from permission_matrix import gql_case as gql

pytestmark = pytest.mark.django_db


def image_id(name):
    def of(world):
        from agents.models import Image

        return {"id": str(Image.objects.get(name=name).pk)}
    return of


QUERIES = [
    Case("images: a cr.example.com image", gql(IMAGE_LIST, {"is_operation": False}), ALL_OK,
         marker=lambda w: "team/app", sees=("owner", "member", "superadmin")),
    Case("images: an agent-local image", gql(IMAGE_LIST, {"is_operation": False}), ALL_OK,
         marker=lambda w: "bai-test/http", sees=("owner", "member", "superadmin")),
    Case("images: an other.io image", gql(IMAGE_LIST, {"is_operation": False}), ALL_OK,
         marker=lambda w: "x/y", sees=ROLES),
    Case("image(reference, architecture)", gql(IMAGE_GET, {"reference": "cr.example.com/team/app:2.0",
                                                           "architecture": "x86_64"}), ALL_OK,
         marker=lambda w: "team/app", sees=("owner", "member", "superadmin")),
    Case("image(id)", gql(IMAGE_BY_ID, image_id("cr.example.com/team/app:2.0")), ALL_OK,
         marker=lambda w: "team/app", sees=("owner", "member", "superadmin")),
    Case("customized_images", gql(CUSTOMIZED), ALL_OK),
    Case("container_registries", gql(REGISTRIES), SUPERADMIN_ONLY, marker=lambda w: "cr.example.com"),
    Case("container_registry(cr.example.com)", gql(REGISTRY, {"h": "cr.example.com"}), SUPERADMIN_ONLY,
         marker=lambda w: "https://cr.example.com"),
]


@pytest.mark.parametrize("case, role", params(QUERIES))
def test_image_and_registry_queries_answer_each_role_what_it_may_see(case, role, world, signed):
    check(case, role, world, signed)


def mutation(name, document, variables):
    return Case(name, gql(document, variables), SUPERADMIN_ONLY, unchanged=images_state)


MUTATIONS = [
    mutation("rescan_images (23.09)", RESCAN, {"registry": "cr.example.com"}),
    mutation("rescan_images (26.09)", RESCAN_26, {"registry": None, "project": None}),
    mutation("alias_image", ALIAS, {"alias": "app", "target": "cr.example.com/team/app:2.0"}),
    mutation("dealias_image", DEALIAS, {"alias": "http"}),
    mutation("forget_image", FORGET, {"reference": "other.io/x/y:1.0", "architecture": "x86_64"}),
    mutation("forget_image_by_id", FORGET_BY_ID,
             lambda w: {"image_id": image_id("cr.example.com/team/app:2.0")(w)["id"]}),
    mutation("create_container_registry", REGISTRY_CREATE,
             {"h": "new.example.com", "p": {"url": "https://new.example.com", "type": "docker"}}),
    mutation("modify_container_registry", REGISTRY_MODIFY, {"h": "cr.example.com", "p": {"username": "someone"}}),
    mutation("delete_container_registry", REGISTRY_DELETE, {"h": "cr.example.com"}),
]


@pytest.fixture
def aliased(world):
    from agents.models import Image, ImageAlias

    ImageAlias.objects.create(alias="http", image=Image.objects.get(name="bai-test/http:1.0"))


@pytest.mark.parametrize("case, role", params(MUTATIONS))
def test_image_and_registry_mutations_are_the_superadmins_alone(case, role, world, aliased, signed):
    check(case, role, world, signed)


@pytest.mark.parametrize("case", MUTATIONS, ids=str)
def test_a_domain_admin_is_refused_every_image_mutation_and_nothing_changes(case, world, aliased, domain_admin,
                                                                           signed):
    before = images_state()
    response = case.call(signed(domain_admin), world, "domain_admin")
    assert response.status_code == 403 and slug(response) == "insufficient-privilege"
    assert images_state() == before


def test_the_images_answer_keeps_its_shape_for_admin_image_list(world, superadmin, signed):
    items = data_of(signed(superadmin).post("/admin/gql", {"query": IMAGE_LIST, "variables": {
        "is_operation": False}}))["images"]
    assert {"name": "team/app", "registry": "cr.example.com", "architecture": "x86_64", "tag": "2.0",
            "digest": None, "size_bytes": 0.0, "aliases": []} in items
    assert {"name": "bai-test/http", "registry": "local", "architecture": "x86_64", "tag": "1.0",
            "digest": None, "size_bytes": 0.0, "aliases": []} in items


def test_alias_and_dealias_show_in_the_listing_and_the_admin(world, superadmin, client, signed):
    api = signed(superadmin)
    answer = data_of(api.post("/admin/gql", {"query": ALIAS, "variables": {
        "architecture": "x86_64", "alias": "app", "target": "cr.example.com/team/app:2.0"}}))
    assert answer["alias_image"] == {"ok": True, "msg": "success"}
    items = data_of(api.post("/admin/gql", {"query": IMAGE_LIST, "variables": {"is_operation": False}}))["images"]
    assert [i["aliases"] for i in items if i["name"] == "team/app"] == [["app"]]
    client.force_login(superadmin)
    page = client.get("/admin/agents/imagealias/").content.decode()
    assert ">app<" in page and "cr.example.com/team/app:2.0 (x86_64)" in page
    again = data_of(api.post("/admin/gql", {"query": ALIAS, "variables": {
        "alias": "app", "target": "bai-test/http:1.0"}}))["alias_image"]
    assert again["ok"] is False and "already" in again["msg"]
    assert data_of(api.post("/admin/gql", {"query": DEALIAS, "variables": {"alias": "app"}}))["dealias_image"] == {
        "ok": True, "msg": "success"}
    missing = data_of(api.post("/admin/gql", {"query": DEALIAS, "variables": {"alias": "app"}}))["dealias_image"]
    assert missing["ok"] is False


def test_an_alias_makes_the_image_usable_by_that_name_at_enqueue(world, superadmin, owner, signed):
    data_of(signed(superadmin).post("/admin/gql", {"query": ALIAS, "variables": {
        "alias": "webby", "target": "bai-test/http:1.0"}}))
    created = signed(owner).post("/session", {"name": "viaalias", "image": "webby", "enqueueOnly": True,
                                              "config": {"resources": {"cpu": "1", "mem": "1g"}}})
    assert created.status_code == 201, created.content


def test_forget_drops_the_image_and_its_aliases(world, aliased, superadmin, signed):
    from agents.models import Image, ImageAlias

    api = signed(superadmin)
    answer = data_of(api.post("/admin/gql", {"query": FORGET, "variables": {
        "reference": "http", "architecture": "x86_64"}}))
    assert answer["forget_image"] == {"ok": True, "msg": "success"}
    assert not Image.objects.filter(name="bai-test/http:1.0").exists() and not ImageAlias.objects.exists()
    by_id = image_id("other.io/x/y:1.0")(world)["id"]
    answer = data_of(api.post("/admin/gql", {"query": FORGET_BY_ID.replace("ok msg", "ok msg image { name tag }"),
                                             "variables": {"image_id": by_id}}))
    assert answer["forget_image_by_id"] == {"ok": True, "msg": "success", "image": {"name": "x/y", "tag": "1.0"}}
    gone = data_of(api.post("/admin/gql", {"query": FORGET_BY_ID, "variables": {"image_id": by_id}}))
    assert gone["forget_image_by_id"]["ok"] is False


def test_customized_images_are_their_owners(world, owner, member, superadmin, signed):
    from agents.models import Image

    Image.objects.create(name="cr.example.com/custom/mine:1", registry_name="cr.example.com", repository="custom/mine",
                         tag="1", labels={"ai.backend.customized-image.owner": f"user:{owner.pk}"})
    for user, sees in ((owner, True), (member, False), (superadmin, True)):
        items = data_of(signed(user).post("/admin/gql", {"query": CUSTOMIZED}))["customized_images"]
        assert ("custom/mine" in [i["name"] for i in items]) is sees, user


def test_registries_never_answer_their_password_and_changes_show_in_the_admin(world, superadmin, client, signed):
    api = signed(superadmin)
    created = data_of(api.post("/admin/gql", {"query": REGISTRY_CREATE, "variables": {
        "h": "harbor.example.com", "p": {"url": "https://harbor.example.com", "type": "harbor2",
                                         "project": ["team"], "username": "bot", "password": "harbor-secret-77"}}}))
    assert created["create_container_registry"]["container_registry"] == {
        "hostname": "harbor.example.com", "config": {"url": "https://harbor.example.com", "type": "harbor2",
                                                     "password": "********"}}
    modified = data_of(api.post("/admin/gql", {"query": REGISTRY_MODIFY, "variables": {
        "h": "harbor.example.com", "p": {"username": "robot2", "password": ""}}}))
    assert modified["modify_container_registry"]["container_registry"]["config"] == {
        "url": "https://harbor.example.com", "username": "robot2", "password": "********"}
    from agents.models import ContainerRegistry

    registry = ContainerRegistry.objects.get(registry_name="harbor.example.com")
    assert registry.password == "harbor-secret-77" and registry.project == "team"  # an empty password keeps it
    listed = api.post("/admin/gql", {"query": REGISTRIES})
    assert "harbor-secret-77" not in listed.content.decode() and REGISTRY_PASSWORD not in listed.content.decode()
    client.force_login(superadmin)
    assert "harbor.example.com" in client.get("/admin/agents/containerregistry/").content.decode()
    bad = api.post("/admin/gql", {"query": REGISTRY_CREATE, "variables": {
        "h": "harbor.example.com", "p": {"url": "https://harbor.example.com", "type": "docker"}}})
    assert bad.status_code == 400 and "already exists" in bad.content.decode()
    deleted = data_of(api.post("/admin/gql", {"query": REGISTRY_DELETE, "variables": {"h": "harbor.example.com"}}))
    assert deleted["delete_container_registry"]["container_registry"] == {"hostname": "harbor.example.com"}
    assert not ContainerRegistry.objects.filter(registry_name="harbor.example.com").exists()


def test_rescan_of_an_unknown_registry_answers_ok_false_and_starts_nothing(world, superadmin, signed):
    from backendai.models import BackgroundTask

    answer = data_of(signed(superadmin).post("/admin/gql", {"query": RESCAN, "variables": {"registry": "nowhere"}}))
    assert answer["rescan_images"]["ok"] is False and answer["rescan_images"]["task_id"] is None
    assert not BackgroundTask.objects.exists()
