"""``GET /config/docker-registries`` (23.09 clients) and ``GET /resource/container-registries``
(24.09 and later): ``{hostname: url}`` of the configured registries, for superadmins only and
never with a password."""
from __future__ import annotations

import pytest

from permission_matrix import SUPERADMIN_ONLY, Case, check, params

pytestmark = pytest.mark.django_db


def registries_state(world=None):
    from agents.models import ContainerRegistry

    return list(ContainerRegistry.objects.order_by("registry_name").values_list("registry_name", "url", "password"))


CASES = [
    Case("GET /resource/container-registries", lambda api, w, r: api.get("/resource/container-registries"),
         SUPERADMIN_ONLY, marker=lambda w: "https://cr.example.com", unchanged=registries_state),
    Case("GET /config/docker-registries", lambda api, w, r: api.get("/config/docker-registries"),
         SUPERADMIN_ONLY, marker=lambda w: "https://cr.example.com", unchanged=registries_state),
]


@pytest.mark.parametrize("case, role", params(CASES))
def test_registries_are_listed_to_superadmins_alone(case, role, world, signed):
    check(case, role, world, signed)


@pytest.mark.parametrize("path", ["/resource/container-registries", "/config/docker-registries"])
def test_the_listing_maps_each_hostname_to_its_url(path, world, superadmin, domain_admin, signed):
    from agents.models import ContainerRegistry

    ContainerRegistry.objects.create(registry_name="a.example.com:5000", url="http://a.example.com:5000",
                                     password="another-secret-5e1f")
    answer = signed(superadmin).get(path)
    assert answer.status_code == 200, answer.content
    assert answer.json() == {"a.example.com:5000": "http://a.example.com:5000", "cr.example.com": "https://cr.example.com"}
    assert "another-secret-5e1f" not in answer.content.decode()
    assert signed(domain_admin).get(path).status_code == 403


def test_with_no_registry_configured_the_listing_is_empty(superadmin, signed):
    answer = signed(superadmin).get("/resource/container-registries")
    assert answer.status_code == 200 and answer.json() == {}
