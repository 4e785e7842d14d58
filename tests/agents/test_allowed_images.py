"""A domain's allowed registries (``Domain.allowed_docker_registries``): an image
from a registry the session's domain does not list is refused at enqueue (REST
``POST /session``) and hidden from its users' listings (GraphQL ``images`` and
``image``, the web create form); an empty list allows everything; agent-local
images count as the registry ``local``; superadmins' listings show every image."""
from __future__ import annotations

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
