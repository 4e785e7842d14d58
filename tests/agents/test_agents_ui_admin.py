"""Users see the resource groups open to them with free capacity; superadmins manage agents in the admin."""
import pytest
from django.utils import timezone

from agents import services
from agents.models import Agent, AgentStatus, AgentToken, ScalingGroup

pytestmark = pytest.mark.django_db


@pytest.fixture
def groups(defaults):
    default = services.ensure_default_scaling_group()
    private = ScalingGroup.objects.create(name="gpu-private", is_public=False)
    private.domains.add(defaults.domain)
    other = ScalingGroup.objects.create(name="elsewhere")
    Agent.objects.create(id="a1", scaling_group=default, available_slots={"cpu": "8", "mem": "17179869184"},
                         occupied_slots={"cpu": "2", "mem": "4294967296"}, last_heartbeat=timezone.now())
    Agent.objects.create(id="a2", scaling_group=default, available_slots={"cpu": "4", "mem": "8589934592"},
                         status=AgentStatus.LOST)
    return default, private, other


def test_a_user_sees_the_groups_open_to_them_with_free_capacity(client, owner, groups):
    client.force_login(owner)
    page = client.get("/ui/resource-groups/").content.decode()
    assert 'data-group="default"' in page and "cpu 6" in page and "mem 12 GiB" in page
    assert "gpu-private" not in page and "elsewhere" not in page


def test_a_domain_admin_also_sees_non_public_groups_of_their_domain(client, domain_admin, groups):
    client.force_login(domain_admin)
    page = client.get("/ui/resource-groups/").content.decode()
    assert 'data-group="gpu-private"' in page and "elsewhere" not in page


def test_an_outsider_sees_no_group_of_another_domain(client, outsider, groups):
    client.force_login(outsider)
    assert "No resource group is open to you" in client.get("/ui/resource-groups/").content.decode()


def test_a_keypair_association_opens_a_group(client, outsider, groups):
    _, _, other = groups
    other.keypairs.add(outsider.main_keypair)
    client.force_login(outsider)
    assert 'data-group="elsewhere"' in client.get("/ui/resource-groups/").content.decode()


@pytest.fixture
def admin_client(client, superadmin):
    client.force_login(superadmin)
    return client


@pytest.mark.parametrize("url", ["/admin/agents/agent/", "/admin/agents/scalinggroup/", "/admin/agents/image/",
                                 "/admin/agents/containerregistry/", "/admin/agents/agenttoken/",
                                 "/admin/agents/agenttoken/add/", "/admin/agents/scalinggroup/default/change/",
                                 "/admin/agents/agent/a1/change/", "/admin/compute_sessions/session/",
                                 "/admin/compute_sessions/kernel/", "/admin/django_celery_beat/periodictask/"])
def test_every_agents_admin_page_opens(admin_client, groups, url):
    assert admin_client.get(url).status_code == 200


def test_the_agent_list_shows_capacity_and_filters_by_status(admin_client, groups):
    page = admin_client.get("/admin/agents/agent/?status__exact=ALIVE").content.decode()
    assert "a1" in page and "cpu=8" in page and "mem=16 GiB" in page and ">a2<" not in page


def test_agents_can_be_marked_unschedulable_and_back(admin_client, groups):
    admin_client.post("/admin/agents/agent/", {"action": "mark_unschedulable", "_selected_action": ["a1"]})
    assert not Agent.objects.get(pk="a1").schedulable
    admin_client.post("/admin/agents/agent/", {"action": "mark_schedulable", "_selected_action": ["a1"]})
    assert Agent.objects.get(pk="a1").schedulable


def test_an_agent_token_is_shown_once_and_stored_hashed(admin_client, groups):
    response = admin_client.post("/admin/agents/agenttoken/add/", {"name": "rack 3", "scaling_group": "default"},
                                 follow=True)
    token = AgentToken.objects.get(name="rack 3")
    page = response.content.decode()
    shown = page.split("Agent token (shown once): ", 1)[1].split("<", 1)[0].strip()
    assert services.hash_token(shown) == token.token_hash and shown not in token.token_hash
    assert services.token_for(shown) == token
    assert shown not in admin_client.get("/admin/agents/agenttoken/").content.decode()


def test_a_token_must_name_exactly_one_scope(admin_client, groups):
    response = admin_client.post("/admin/agents/agenttoken/add/", {"name": "both", "scaling_group": "default",
                                                                   "agent_id": "a1"})
    assert response.status_code == 200 and b"exactly one" in response.content
    assert not AgentToken.objects.exists()


def test_revoking_a_token_stops_it(admin_client, groups):
    token, raw = services.issue_token("t", agent_id="a1")
    admin_client.post("/admin/agents/agenttoken/", {"action": "revoke", "_selected_action": [token.pk]})
    assert services.token_for(raw) is None


def test_registry_passwords_are_never_shown_back(admin_client, groups):
    from agents.models import ContainerRegistry

    registry = ContainerRegistry.objects.create(registry_name="r.example:5000", url="https://r.example:5000",
                                                username="u", password="s3cr3t-pw")
    page = admin_client.get(f"/admin/agents/containerregistry/{registry.pk}/change/").content.decode()
    assert "s3cr3t-pw" not in page
