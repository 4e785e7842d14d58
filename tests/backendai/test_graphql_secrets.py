"""Secrets never leave their owner: GraphQL masks ``secret_key`` for everyone (the
client still gets the field), agent addresses are for superadmins, the admin's
pages and actions never show another user's secret, the owner regenerates
their own secret and sees it once, and no log line carries a secret."""
import logging

import pytest
from django.utils import timezone

from accounts import services as account_services
from accounts.models import Keypair
from helpers import PASSWORD
from permission_matrix import World, assert_no_foreign_secret

pytestmark = pytest.mark.django_db

KEYPAIR_OF = "query($ak: String) { keypair(access_key: $ak) { access_key secret_key } }"


def gql(api, query, variables=None):
    response = api.post("/admin/gql", {"query": query, "variables": variables or {}})
    assert response.status_code == 200, response.content
    return response.json()["data"]


@pytest.fixture
def users(owner, member, outsider, foreign_admin, domain_admin, superadmin):
    return {"owner": owner, "member": member, "outsider": outsider, "foreign_admin": foreign_admin,
            "domain_admin": domain_admin, "superadmin": superadmin}


@pytest.mark.parametrize("role", ["owner", "domain_admin", "superadmin"])
def test_keypair_secret_key_answers_a_mask_to_everyone_who_may_see_the_keypair(signed, users, role):
    owner = users["owner"]
    data = gql(signed(users[role]), KEYPAIR_OF, {"ak": owner.main_keypair_id})
    assert data["keypair"] == {"access_key": owner.main_keypair_id, "secret_key": account_services.MASKED_SECRET}
    assert owner.main_keypair.secret_key not in str(data)


def test_the_clients_keypair_document_still_gets_every_field(signed, owner):
    data = gql(signed(owner), "query {  keypair {    user_id access_key secret_key is_active is_admin  }}")
    assert data["keypair"]["secret_key"] == "********" and data["keypair"]["access_key"] == owner.main_keypair_id


@pytest.fixture
def running_session(owner):
    from agents import services as agent_services
    from agents.models import Agent
    from sessions.models import Kernel, Session

    group = agent_services.ensure_default_scaling_group()
    agent = Agent.objects.create(id="node-7", scaling_group=group, addr="tcp://10.1.2.3:6001",
                                 available_slots={"cpu": "4", "mem": "8589934592"}, last_heartbeat=timezone.now())
    session = Session.objects.create(
        name="busy", user=owner, access_key=owner.main_keypair, domain_id=owner.domain_id,
        project=owner.projects.get(), scaling_group=group, image="bai-test/http:1.0", status="RUNNING",
        agent_ids=[agent.id], requested_slots={"cpu": "1", "mem": "1073741824"})
    Kernel.objects.create(session=session, agent=agent, agent_addr=agent.addr, cluster_role="main",
                          cluster_hostname="main1", image="bai-test/http:1.0", status="RUNNING",
                          requested_slots=session.requested_slots)
    return session


INFO = "query($id: UUID!) { compute_session(id: $id) { agent_ids containers { agent agent_addr } } }"


@pytest.mark.parametrize("role, shown", [("owner", False), ("domain_admin", False), ("superadmin", True)])
def test_agent_ids_and_addresses_of_a_session_are_for_superadmins(signed, users, running_session, role, shown):
    data = gql(signed(users[role]), INFO, {"id": str(running_session.pk)})["compute_session"]
    if shown:
        assert data == {"agent_ids": ["node-7"], "containers": [{"agent": "node-7", "agent_addr": "tcp://10.1.2.3:6001"}]}
    else:
        assert data == {"agent_ids": [], "containers": [{"agent": None, "agent_addr": None}]}


# --- the admin ----------------------------------------------------------------------------------

@pytest.fixture
def admin_client(client, superadmin):
    client.force_login(superadmin)
    return client


def test_no_admin_page_shows_another_users_secret(admin_client, users):
    owner = users["owner"]
    world = World(users=users)
    keypair = owner.main_keypair
    admin_client.post(f"/admin/accounts/keypair/{keypair.pk}/change/", {
        "is_active": "on", "resource_policy": "default", "rate_limit": 700, "bootstrap_script": "",
        "dotfiles": "[]"})
    pages = ["/admin/accounts/keypair/", f"/admin/accounts/keypair/{keypair.pk}/change/",
             f"/admin/accounts/keypair/{keypair.pk}/history/", "/admin/accounts/user/",
             f"/admin/accounts/user/{owner.pk}/change/", f"/admin/accounts/user/{owner.pk}/history/",
             "/admin/accounts/keypair/?q=" + keypair.secret_key[:8], "/admin/admin/logentry/",
             f"/admin/autocomplete/?app_label=accounts&model_name=keypair&field_name=user&term={owner.email}"]
    for url in pages:
        response = admin_client.get(url)
        assert response.status_code in (200, 403, 404), url
        assert_no_foreign_secret(response, users["superadmin"], world, url)


def test_the_scaling_groups_app_proxy_token_is_write_only_in_the_admin(admin_client, superadmin):
    from agents import services as agent_services
    from agents.models import ScalingGroup

    group = agent_services.ensure_default_scaling_group()
    group.wsproxy_api_token = "sg-token-1b7f0e44a9"
    group.save(update_fields=["wsproxy_api_token"])
    page = admin_client.get(f"/admin/agents/scalinggroup/{group.pk}/change/")
    assert page.status_code == 200 and b"sg-token-1b7f0e44a9" not in page.content
    form = page.context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None and not isinstance(v, (list, dict))}
    data.update({"name": group.pk, "scheduler": group.scheduler, "scheduler_opts": "{}", "driver": group.driver,
                 "driver_opts": "{}", "wsproxy_api_token": "", "description": "edited",
                 "is_active": "on", "is_public": "on"})
    for inline in page.context["inline_admin_formsets"]:
        prefix = inline.formset.prefix
        data.update({f"{prefix}-TOTAL_FORMS": 0, f"{prefix}-INITIAL_FORMS": 0})
    response = admin_client.post(f"/admin/agents/scalinggroup/{group.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:3000]
    group = ScalingGroup.objects.get(pk=group.pk)
    assert group.description == "edited" and group.wsproxy_api_token == "sg-token-1b7f0e44a9"


# --- the owner's own regeneration ------------------------------------------------------------------

def test_the_owner_regenerates_their_secret_on_the_keys_page_and_sees_it_once(client, owner):
    client.force_login(owner)
    old = owner.main_keypair.secret_key
    page = client.post("/ui/keys/action/", {"access_key": owner.main_keypair_id, "action": "regenerate"},
                       follow=True)
    new = Keypair.objects.get(pk=owner.main_keypair_id).secret_key
    assert new != old and new in page.content.decode()
    assert new not in client.get("/ui/keys/").content.decode()


@pytest.mark.parametrize("role", ["member", "outsider", "foreign_admin", "domain_admin", "superadmin"])
def test_nobody_regenerates_someone_elses_secret_from_the_keys_page(client, owner, role, request):
    client.force_login(request.getfixturevalue(role))
    old = owner.main_keypair.secret_key
    page = client.post("/ui/keys/action/", {"access_key": owner.main_keypair_id, "action": "regenerate"},
                       follow=True)
    assert Keypair.objects.get(pk=owner.main_keypair_id).secret_key == old
    assert old not in page.content.decode()


# --- logs -----------------------------------------------------------------------------------------

def test_no_log_line_carries_a_secret(caplog, signed, client, admin_client, users):
    owner = users["owner"]
    caplog.set_level(logging.DEBUG)
    keypair, secret = account_services.create_keypair(owner)
    again = account_services.regenerate_secret(keypair)
    account_services.regenerate_ssh_keypair(keypair)
    client.post("/auth/authorize", {"type": "keypair", "domain": "default", "username": owner.email,
                                    "password": PASSWORD}, content_type="application/json")
    signed(owner).get("/auth")
    signed(owner).request("GET", "/auth", secret="not-the-secret")  # a signature mismatch is logged
    gql(signed(owner), "query { keypair { secret_key } }")
    admin_client.post("/admin/accounts/keypair/", {"action": "regenerate_secret",
                                                   "_selected_action": [owner.main_keypair_id]})
    world = World(users=users)
    logged = "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    assert logged  # something was logged
    for user in users.values():
        for value in world.secrets_of(user) + [secret, again, PASSWORD]:
            assert value not in logged



def test_an_unexpected_resolver_failure_is_not_echoed_to_the_caller():
    from graphql import GraphQLError

    from backendai.api.gqlkit import public_error as _public_error

    fault = RuntimeError('connection to "db-internal:5432" failed for user "bai" password "pg-secret-77"')
    shown = _public_error(GraphQLError(str(fault), path=["vfolder_list"], original_error=fault))
    assert "pg-secret-77" not in repr(shown) and "db-internal" not in repr(shown)
    assert "Internal error" in shown["message"] and shown["path"] == ["vfolder_list"]


def test_a_graphql_error_reaches_the_caller_as_problem_json_with_its_message(signed, owner):
    response = signed(owner).post("/admin/gql", {"query": "query { vfolder_list(limit: 1, offset: 0) { no_such } }"})
    assert response.status_code == 400 and response.json()["type"].endswith("/graphql-error")
    assert "no_such" in response.json()["msg"]
