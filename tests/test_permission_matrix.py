"""Every REST endpoint and GraphQL field that returns or changes user data, run as
the owner, a member of the owner's project, an outsider (another domain), the
domain admin of that other domain and a superadmin (``tests/permission_matrix.py``).
Each case checks the status, who sees the owner's data, that a refused request
changes nothing, and that no answer holds a secret its caller does not own."""
from __future__ import annotations

import pytest
from django.conf import settings as django_settings

from helpers import PASSWORD, seed_http_image_and_agent
from permission_matrix import ROLES, Case, World, check, params
from permission_matrix import gql_case as gql

pytestmark = pytest.mark.django_db

ALL_OK = {role: 200 for role in ROLES}
OWNER_AND_SUPERADMIN = {"owner": 200, "member": 404, "outsider": 404, "foreign_admin": 404, "superadmin": 200}
NO_USER = {role: (401, 403) for role in ROLES}


@pytest.fixture(autouse=True)
def vfroot(settings, tmp_path):
    settings.VFOLDER_ROOT = tmp_path / "vfroot"
    return settings.VFOLDER_ROOT


@pytest.fixture
def world(owner, member, outsider, foreign_admin, superadmin, signed):
    from accounts.models import UserRole
    from agents import services as agent_services
    from agents.models import ContainerRegistry
    from appproxy import services as proxy_services
    from vfolders import services as folder_services

    assert foreign_admin.role == UserRole.ADMIN and foreign_admin.domain_id == outsider.domain_id != owner.domain_id
    group = agent_services.ensure_default_scaling_group()
    group.wsproxy_api_token = "wsproxy-token-9f2c1d7e5b3a"
    group.save(update_fields=["wsproxy_api_token"])
    seed_http_image_and_agent(group, addr="tcp://10.9.8.7:6001")
    registry = ContainerRegistry.objects.create(registry_name="cr.example.com", url="https://cr.example.com",
                                                username="robot", password="registry-password-3e8a0c")
    _, agent_token = agent_services.issue_token("node", agent_id="node-1")
    _, worker_token = proxy_services.issue_token("edge")

    created = signed(owner).post("/session", {
        "name": "ownersess", "image": "bai-test/http:1.0", "type": "interactive", "enqueueOnly": True,
        "group": "default", "domain": "default", "config": {"resources": {"cpu": "1", "mem": "1g"}}})
    assert created.status_code == 201, created.content
    folder_services.ensure_default_storage_host()
    folder = folder_services.create_folder(owner, name="ownerdata")
    users = {"owner": owner, "member": member, "outsider": outsider, "foreign_admin": foreign_admin,
             "superadmin": superadmin}
    return World(users=users,
                 objects={"session": created.json()["sessionId"], "folder": str(folder.id),
                          "access_key": owner.main_keypair_id},
                 system_secrets=[agent_token, worker_token, registry.password, group.wsproxy_api_token,
                                 django_settings.SECRET_KEY])


def session_id(world):
    return world.objects["session"]


def folder_id(world):
    return world.objects["folder"]


def session_name(world):
    """What marks the owner's session in an answer (its id may be echoed back in a 404)."""
    return "ownersess"


def folder_name(world):
    return "ownerdata"


def owner_key(world):
    return world.objects["access_key"]


def session_state(world):
    from sessions.models import Session

    return tuple(Session.objects.filter(pk=session_id(world)).values_list("name", "status").get())


def folder_state(world):
    from vfolders.models import VFolder

    return tuple(VFolder.objects.filter(pk=folder_id(world)).values_list("name", "status", "permission").get())


def keypair_state(world):
    from accounts.models import Keypair

    return tuple(Keypair.objects.filter(pk=owner_key(world)).values_list("is_active", "secret_key").get())


def authorize(api, world, role):
    """``/auth/authorize`` with the caller's own password: the caller's own keypair only."""
    user = world.users[role]
    return api.client.post("/auth/authorize", {"type": "keypair", "domain": user.domain_id, "username": user.email,
                                               "password": PASSWORD}, content_type="application/json")


REST = [
    # accounts
    Case("GET /auth", lambda api, w, r: api.get("/auth?echo=hi"), ALL_OK),
    Case("GET /auth/role", lambda api, w, r: api.get("/auth/role"), ALL_OK),
    Case("POST /auth/authorize (own password)", authorize, ALL_OK),
    Case("GET /auth/ssh-keypair", lambda api, w, r: api.get("/auth/ssh-keypair"), ALL_OK),
    Case("PATCH /auth/ssh-keypair", lambda api, w, r: api.patch("/auth/ssh-keypair"), ALL_OK),
    Case("POST /auth/update-password (wrong old password)",
         lambda api, w, r: api.post("/auth/update-password", {"old_password": "nope", "new_password": "x-Y-z-12345",
                                                              "new_password2": "x-Y-z-12345"}),
         {role: 403 for role in ROLES}),
    Case("GET /keypairs", lambda api, w, r: api.get("/keypairs"), ALL_OK, marker=owner_key,
         sees=("owner", "superadmin")),
    Case("POST /keypairs", lambda api, w, r: api.post("/keypairs", {}), {role: 201 for role in ROLES}),
    Case("GET /keypairs/{owner's}", lambda api, w, r: api.get(f"/keypairs/{owner_key(w)}"), OWNER_AND_SUPERADMIN,
         marker=owner_key),
    Case("PATCH /keypairs/{owner's}", lambda api, w, r: api.patch(f"/keypairs/{owner_key(w)}", {"is_active": False}),
         OWNER_AND_SUPERADMIN, unchanged=keypair_state),
    # sessions
    Case("GET /session/{owner's}", lambda api, w, r: api.get(f"/session/{session_id(w)}"), OWNER_AND_SUPERADMIN,
         marker=session_name),
    Case("GET /session/{owner's}/logs", lambda api, w, r: api.get(f"/session/{session_id(w)}/logs"),
         OWNER_AND_SUPERADMIN),
    Case("GET /stream/session/{owner's}/apps", lambda api, w, r: api.get(f"/stream/session/{session_id(w)}/apps"),
         OWNER_AND_SUPERADMIN),
    Case("POST /session/{owner's}/rename",
         lambda api, w, r: api.post(f"/session/{session_id(w)}/rename?name=renamed1"),
         {"owner": (200, 204), "member": 404, "outsider": 404, "foreign_admin": 404, "superadmin": (200, 204)},
         unchanged=session_state),
    Case("POST /session/{owner's} (execute; the session is still pending)",
         lambda api, w, r: api.post(f"/session/{session_id(w)}", {"mode": "query", "code": "print(1)", "runId": "r1"}),
         {"owner": 403, "member": 404, "outsider": 404, "foreign_admin": 404, "superadmin": 403},
         unchanged=session_state),
    Case("DELETE /session/{owner's}", lambda api, w, r: api.delete(f"/session/{session_id(w)}"),
         OWNER_AND_SUPERADMIN, unchanged=session_state),
    Case("GET /session/_/match", lambda api, w, r: api.get("/session/_/match?id=ownersess"), ALL_OK,
         marker=session_name, sees=("owner",)),
    Case("POST /session for the owner (owner_access_key)",
         lambda api, w, r: api.post("/session", {
             "name": "onbehalf", "image": "bai-test/http:1.0", "type": "interactive", "enqueueOnly": True,
             "group": "default", "domain": "default", "owner_access_key": owner_key(w),
             "config": {"resources": {"cpu": "1", "mem": "1g"}}}),
         {"owner": 201, "member": (403, 404), "outsider": (403, 404), "foreign_admin": (403, 404),
          "superadmin": 201}),
    Case("POST /session/{owner's}/start-service",
         lambda api, w, r: api.post(f"/session/{session_id(w)}/start-service", {"app": "web"}),
         # the owner's session is still PENDING: a 4xx that is not "not found"
         {"owner": (400, 409, 503), "member": 404, "outsider": 404, "foreign_admin": 404,
          "superadmin": (400, 409, 503)}),
    # folders
    Case("GET /folders", lambda api, w, r: api.get("/folders"), ALL_OK, marker=folder_name, sees=("owner",)),
    # "all" widens an admin's list to their domain (a superadmin's to everything), never another domain
    Case("GET /folders?all=true", lambda api, w, r: api.get("/folders?all=true"), ALL_OK, marker=folder_name,
         sees=("owner", "superadmin")),
    Case("GET /folders/{owner's}", lambda api, w, r: api.get(f"/folders/{folder_id(w)}"), OWNER_AND_SUPERADMIN,
         marker=folder_name),
    Case("GET /folders/{owner's}/files", lambda api, w, r: api.get(f"/folders/{folder_id(w)}/files?path=."),
         OWNER_AND_SUPERADMIN),
    Case("POST /folders/{owner's}/rename",
         lambda api, w, r: api.post(f"/folders/{folder_id(w)}/rename", {"new_name": "taken"}),
         {"owner": (200, 201, 204), "member": 404, "outsider": 404, "foreign_admin": 404,
          "superadmin": (200, 201, 204)}, unchanged=folder_state),
    Case("POST /folders/{owner's}/request-download",
         lambda api, w, r: api.post(f"/folders/{folder_id(w)}/request-download", {"path": "missing.txt"}),
         {"owner": 404, "member": 404, "outsider": 404, "foreign_admin": 404, "superadmin": 404}),
    Case("DELETE /folders/{owner's}", lambda api, w, r: api.delete(f"/folders/{folder_id(w)}"),
         {"owner": (200, 204), "member": 404, "outsider": 404, "foreign_admin": 404, "superadmin": (200, 204)},
         unchanged=folder_state),
    Case("POST /folders/{owner's}/invite",
         lambda api, w, r: api.post(f"/folders/{folder_id(w)}/invite", {"perm": "rw", "emails": [w.users[r].email]}),
         {"owner": (200, 201, 400), "member": 404, "outsider": 404, "foreign_admin": 404,
          "superadmin": (200, 201, 400)}, unchanged=folder_state),
    # daemon APIs refuse every user credential
    Case("POST /agent-api/v1/sync", lambda api, w, r: api.post("/agent-api/v1/sync", {"id": "node-1"}), NO_USER),
    Case("POST /appproxy-api/v1/workers/edge/heartbeat",
         lambda api, w, r: api.post("/appproxy-api/v1/workers/edge/heartbeat", {}), NO_USER),
    Case("POST /appproxy-api/v1/workers/edge/setup-tokens/redeem",
         lambda api, w, r: api.post("/appproxy-api/v1/workers/edge/setup-tokens/redeem", {"token": "x"}), NO_USER),
]

KEYPAIR_DOC = "query($ak: String) { keypair(access_key: $ak) { user_id access_key secret_key is_active is_admin } }"
PS_DOC = """query($limit:Int!, $offset:Int!, $status: String, $access_key: String, $filter: String, $order: String) {
  compute_session_list(limit:$limit, offset:$offset, status:$status, access_key:$access_key, filter:$filter,
                       order:$order) {
    items { name access_key id group_name main_kernel_id image type status status_info status_changed result
            containers { agent agent_addr } agent_ids }
    total_count } }"""
INFO_DOC = ("query($id: UUID!) { compute_session(id: $id) { name id status containers { id agent agent_addr "
            "container_id } agent_ids } }")
VFOLDER_DOC = """query($limit:Int!, $offset:Int!, $group_id: UUID) {
  vfolder_list(limit:$limit, offset:$offset, group_id:$group_id) {
    items { id host name created_at creator group permission ownership_type status user user_email } total_count } }"""
AGENT_DOC = """query { agent_list(limit: 20, offset: 0) { items { id addr status available_slots } total_count } }"""
IMAGES_DOC = "query { images { name tag architecture installed } }"


def page(**extra):
    return lambda world: {"limit": 20, "offset": 0, **{k: (v(world) if callable(v) else v) for k, v in extra.items()}}


GRAPHQL = [
    Case("gql keypair (own)", gql("query { keypair { user_id access_key secret_key is_active is_admin } }"), ALL_OK),
    Case("gql keypair(access_key: owner's)", gql(KEYPAIR_DOC, lambda w: {"ak": owner_key(w)}), ALL_OK,
         marker=owner_key, sees=("owner", "superadmin")),
    Case("gql compute_session_list", gql(PS_DOC, page()), ALL_OK, marker=session_name, sees=("owner", "superadmin")),
    Case("gql compute_session_list(access_key: owner's)", gql(PS_DOC, page(access_key=owner_key)),
         {"owner": 200, "member": 403, "outsider": 403, "foreign_admin": 200, "superadmin": 200},
         marker=session_name, sees=("owner", "superadmin")),
    Case("gql compute_session_list(domain_name: default)", gql(PS_DOC.replace(
        "order:$order)", "order:$order, domain_name: \"default\")"), page()), ALL_OK,
         marker=session_name, sees=("owner", "superadmin")),
    Case("gql compute_session(id: owner's)", gql(INFO_DOC, lambda w: {"id": session_id(w)}), ALL_OK,
         marker=session_name, sees=("owner", "superadmin")),
    Case("gql vfolder_list", gql(VFOLDER_DOC, page()), ALL_OK, marker=folder_name, sees=("owner", "superadmin")),
    Case("gql agent_list", gql(AGENT_DOC), {"owner": 403, "member": 403, "outsider": 403, "foreign_admin": 403,
                                            "superadmin": 200}, marker=lambda w: "10.9.8.7"),
    Case("gql images", gql(IMAGES_DOC), ALL_OK),
]


@pytest.mark.parametrize("case, role", params(REST))
def test_rest_endpoints_answer_each_role_as_the_matrix_says(case, role, world, signed):
    check(case, role, world, signed)


@pytest.mark.parametrize("case, role", params(GRAPHQL))
def test_graphql_fields_answer_each_role_as_the_matrix_says(case, role, world, signed):
    check(case, role, world, signed)
