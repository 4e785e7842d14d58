"""A domain's allowed registries (``Domain.allowed_docker_registries``) and its optional image
list (``Domain.allowed_images``): an image the session's domain does not allow is refused at
enqueue (REST ``POST /session``) and hidden from its users' listings (GraphQL ``images`` and
``image``, the web create form); empty lists allow everything; agent-local images count as
the registry ``local``; superadmins' listings show every image."""
from __future__ import annotations

import json

import pytest

from agents_gql_support import IMAGE_GET, IMAGE_LIST, data_of
from helpers import seed_http_image_and_agent, slug

pytestmark = pytest.mark.django_db

LOCAL = "bai-test/http:1.0"
REMOTE = "cr.example.com/team/app:2.0"


@pytest.fixture
def images(defaults):
    from agents import services
    from agents.models import Image, ImageAlias

    group = services.ensure_default_scaling_group()
    local, _ = seed_http_image_and_agent(group)
    remote = Image.objects.create(name=REMOTE, registry_name="cr.example.com", repository="team/app", tag="2.0",
                                  resources={"cpu": {"min": "0.1", "max": None}})
    ImageAlias.objects.create(alias="webapp", image=remote)
    ImageAlias.objects.create(alias="http", image=local)
    return local, remote


def allow(domain, registries):
    from accounts.models import Domain

    Domain.objects.filter(pk=domain).update(allowed_docker_registries=registries)


def create(api, image, name="allowtest"):
    return api.post("/session", {"name": name, "image": image, "enqueueOnly": True,
                                 "config": {"resources": {"cpu": "1", "mem": "1g"}}})


def sessions_named(name):
    from sessions.models import Session

    return Session.objects.filter(name=name).count()


@pytest.mark.parametrize("image", [LOCAL, REMOTE, "http", "webapp"])
def test_an_empty_list_allows_every_image(images, owner, signed, image):
    assert create(signed(owner), image).status_code == 201


def test_an_image_from_an_unlisted_registry_is_refused_at_enqueue_and_nothing_is_created(images, owner, signed):
    allow("default", ["other.io"])
    for image in (REMOTE, "webapp", LOCAL, "http"):
        refused = create(signed(owner), image)
        assert refused.status_code == 403 and slug(refused) == "generic-forbidden", refused.content
        assert "does not allow images from registry" in refused.json()["msg"]
    assert sessions_named("allowtest") == 0


def test_a_listed_registry_and_local_are_allowed(images, owner, signed):
    allow("default", ["cr.example.com"])
    assert create(signed(owner), "webapp", "remote1").status_code == 201
    assert create(signed(owner), LOCAL, "local1").status_code == 403
    allow("default", ["cr.example.com", "local"])
    assert create(signed(owner), LOCAL, "local2").status_code == 201


def test_the_session_domain_decides_even_for_a_superadmin(images, superadmin, signed):
    allow("default", ["other.io"])
    assert create(signed(superadmin), REMOTE).status_code == 403


def test_the_graphql_listing_hides_what_the_domain_does_not_allow(images, owner, superadmin, signed):
    allow("default", ["cr.example.com"])
    names = [i["name"] for i in data_of(signed(owner).post("/admin/gql", {
        "query": IMAGE_LIST, "variables": {"is_operation": False}}))["images"]]
    assert names == ["team/app"]
    hidden = data_of(signed(owner).post("/admin/gql", {"query": IMAGE_GET, "variables": {
        "reference": LOCAL, "architecture": "x86_64"}}))
    assert hidden["image"] is None
    everything = [i["name"] for i in data_of(signed(superadmin).post("/admin/gql", {
        "query": IMAGE_LIST, "variables": {"is_operation": False}}))["images"]]
    assert sorted(everything) == ["bai-test/http", "team/app"]


def test_the_web_create_form_offers_only_allowed_images_and_aliases(images, owner, client):
    from django.urls import reverse

    client.force_login(owner)
    url = reverse("ui-sessions:create")
    page = client.get(url).content.decode()
    assert REMOTE in page and LOCAL in page and "webapp" in page
    allow("default", ["cr.example.com"])
    page = client.get(url).content.decode()
    assert REMOTE in page and "webapp" in page
    assert LOCAL not in page and 'value="http"' not in page


# --- the optional image allow-list (Domain.allowed_images) ---------------------------------------

OTHER = "cr.example.com/team/tool:1.0"


def allow_images(domain, patterns):
    from accounts.models import Domain

    Domain.objects.filter(pk=domain).update(allowed_images=patterns)


@pytest.fixture
def more_images(images):
    from agents.models import Image

    Image.objects.create(name=OTHER, registry_name="cr.example.com", repository="team/tool", tag="1.0",
                         resources={"cpu": {"min": "0.1", "max": None}})
    return images


def test_an_image_outside_the_domains_image_list_is_refused_at_enqueue(more_images, owner, signed):
    allow_images("default", [REMOTE])
    refused = create(signed(owner), OTHER, "tool1")
    assert refused.status_code == 403 and slug(refused) == "generic-forbidden"
    assert "does not allow the image" in refused.json()["msg"] and sessions_named("tool1") == 0
    assert create(signed(owner), "webapp", "app1").status_code == 201


def test_a_trailing_star_allows_every_name_it_starts_with(more_images, owner, signed):
    allow_images("default", ["cr.example.com/team/*"])
    assert create(signed(owner), OTHER, "tool2").status_code == 201
    assert create(signed(owner), REMOTE, "app2").status_code == 201
    assert create(signed(owner), LOCAL, "local3").status_code == 403


def test_the_image_list_narrows_the_allowed_registries_and_the_listings(more_images, owner, signed):
    allow("default", ["cr.example.com", "local"])
    allow_images("default", [LOCAL, "cr.example.com/team/tool*"])
    names = sorted(i["name"] for i in data_of(signed(owner).post("/admin/gql", {
        "query": IMAGE_LIST, "variables": {"is_operation": False}}))["images"])
    assert names == ["bai-test/http", "team/tool"]
    assert create(signed(owner), REMOTE, "app3").status_code == 403
    allow("default", ["cr.example.com"])  # the registry list still applies
    assert create(signed(owner), LOCAL, "local4").status_code == 403


MODIFY_DOMAIN = ("mutation($name: String!, $input: ModifyDomainInput!) {\n"
                 "    modify_domain(name: $name, props: $input) { ok msg domain { allowed_images } }\n}\n")


def test_a_superadmin_sets_the_image_list_with_graphql_and_bad_entries_change_nothing(defaults, superadmin, owner,
                                                                                      signed):
    from accounts.models import Domain

    done = data_of(signed(superadmin).post("/admin/gql", {"query": MODIFY_DOMAIN, "variables": {
        "name": "default", "input": {"allowed_images": ["cr.example.com/team/*", LOCAL]}}}))
    assert done["modify_domain"]["domain"]["allowed_images"] == ["cr.example.com/team/*", LOCAL]
    for bad in (["a*b"], ["**"], [""], ["has space"], ["x" * 600], [3]):
        refused = signed(superadmin).post("/admin/gql", {"query": MODIFY_DOMAIN, "variables": {
            "name": "default", "input": {"allowed_images": bad}}})
        assert refused.status_code == 400 or refused.json().get("errors"), (bad, refused.content)
    assert Domain.objects.get(pk="default").allowed_images == ["cr.example.com/team/*", LOCAL]
    mine = signed(owner).post("/admin/gql", {"query": MODIFY_DOMAIN, "variables": {
        "name": "default", "input": {"allowed_images": []}}})
    assert mine.status_code in (400, 403) or mine.json().get("errors")
    assert Domain.objects.get(pk="default").allowed_images == ["cr.example.com/team/*", LOCAL]


def test_the_django_admin_refuses_a_bad_image_list_beside_the_field(defaults, superadmin, client):
    client.force_login(superadmin)
    page = client.get("/admin/accounts/domain/default/change/")
    assert page.status_code == 200 and "allowed_images" in page.content.decode()
    form = page.context["adminform"].form
    post = {}
    for name in form.fields:
        value = form.initial.get(name)
        post[name] = json.dumps(value) if isinstance(value, (list, dict)) else ("" if value is None else value)
    post["is_active"] = "on"
    post["allowed_images"] = '["bad*name"]'
    for prefix in ("projects", "project_set"):
        post.update({f"{prefix}-TOTAL_FORMS": "0", f"{prefix}-INITIAL_FORMS": "0"})
    refused = client.post("/admin/accounts/domain/default/change/", post)
    assert refused.status_code == 200 and "is not an image name" in refused.content.decode()
