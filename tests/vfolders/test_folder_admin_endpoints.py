"""``/config/vfolder-types``, ``/folders/_/perf-metric``, ``/folders/_/change-ownership``
and ``/folders/_/shared`` (GET and POST) with the bodies the official clients send:
the permission matrix (``tests/permission_matrix.py``: owner, member, outsider, the
outsider's domain admin, superadmin; a refused request changes nothing), then what
each endpoint answers and changes, and the inputs each refuses with a 4xx."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from helpers import slug, tree_snapshot
from permission_matrix import ALL_OK, SUPERADMIN_ONLY, Case, World, check, params

pytestmark = pytest.mark.django_db

# POST /folders/_/shared: admins only, and only on the folders of their domain
SHARED_UPDATE = {"owner": 403, "member": 403, "outsider": 403, "foreign_admin": 404, "superadmin": 200}


@pytest.fixture
def world(owner, member, outsider, foreign_admin, superadmin, defaults, host, vfroot):
    """The owner's folder ``ownerdata`` (a file in it) shared with the member by an accepted
    invitation, and a project folder ``teamdata`` the member has ``rw`` of their own on."""
    from vfolders import services

    owned = services.create_folder(owner, name="ownerdata")
    (owned.path / "notes.txt").write_bytes(b"owner's notes")
    services.invite(owner, "ownerdata", "ro", [member.email])
    services.accept_invitation(member, services.invitations_received(member)[0].id)
    team = services.create_folder(superadmin, name="teamdata", group=str(defaults.project.pk))
    services.share(superadmin, team.id.hex, "rw", [member.email])
    users = {"owner": owner, "member": member, "outsider": outsider, "foreign_admin": foreign_admin,
             "superadmin": superadmin}
    return World(users=users, objects={"folder": str(owned.id), "team": str(team.id), "member": str(member.pk),
                                       "vfroot": vfroot})


def folder_state(world):
    """The folders, every permission of one's own, the invitations and the files on disk."""
    from vfolders.models import VFolder, VFolderGrant, VFolderInvitation

    return (sorted(VFolder.objects.values_list("id", "name", "user_id", "domain_id", "quota_scope_id", "status")),
            sorted(VFolderGrant.objects.values_list("vfolder_id", "user_id", "permission")),
            sorted(VFolderInvitation.objects.values_list("id", "state", "permission")),
            tree_snapshot(world.objects["vfroot"]))


def owner_folder(world):
    return world.objects["folder"]


CASES = [
    Case("GET /config/vfolder-types", lambda api, w, r: api.get("/config/vfolder-types"), ALL_OK),
    Case("GET /folders/_/perf-metric", lambda api, w, r: api.get("/folders/_/perf-metric?folder_host=local:volume1"),
         SUPERADMIN_ONLY, marker=lambda w: "capacity_bytes"),
    Case("GET /folders/_/perf-metric (23.09 body)",
         lambda api, w, r: api.get("/folders/_/perf-metric", data={"folder_host": "local:volume1"}),
         SUPERADMIN_ONLY, marker=lambda w: "capacity_bytes"),
    Case("POST /folders/_/change-ownership",
         lambda api, w, r: api.post("/folders/_/change-ownership",
                                    {"vfolder": owner_folder(w), "user_email": w.users["member"].email}),
         SUPERADMIN_ONLY, unchanged=folder_state),
    Case("GET /folders/_/shared", lambda api, w, r: api.get("/folders/_/shared"), ALL_OK,
         marker=owner_folder, sees=("owner", "superadmin")),
    Case("GET /folders/_/shared?vfolder_id=owner's",
         lambda api, w, r: api.get(f"/folders/_/shared?vfolder_id={owner_folder(w)}"), ALL_OK,
         marker=owner_folder, sees=("owner", "superadmin")),
    Case("GET /folders/_/shared (23.09 body)",
         lambda api, w, r: api.get("/folders/_/shared", data={"vfolder_id": owner_folder(w)}), ALL_OK,
         marker=owner_folder, sees=("owner", "superadmin")),
    Case("POST /folders/_/shared (change)",
         lambda api, w, r: api.post("/folders/_/shared",
                                    {"vfolder": owner_folder(w), "user": w.objects["member"], "perm": "wd"}),
         SHARED_UPDATE, unchanged=folder_state),
    Case("POST /folders/_/shared (take back)",
         lambda api, w, r: api.post("/folders/_/shared",
                                    {"vfolder": owner_folder(w), "user": w.objects["member"], "perm": None}),
         SHARED_UPDATE, unchanged=folder_state),
    Case("POST /folders/_/shared (project folder)",
         lambda api, w, r: api.post("/folders/_/shared",
                                    {"vfolder": w.objects["team"], "user": w.objects["member"], "perm": "ro"}),
         SHARED_UPDATE, unchanged=folder_state),
]


@pytest.mark.parametrize("case, role", params(CASES))
def test_it_answers_each_role_as_the_matrix_says(case, role, world, signed):
    check(case, role, world, signed)


# --- /config/vfolder-types ----------------------------------------------------------------------

def test_it_lists_the_folder_types_as_allowed_types_does(signed, owner, client):
    api = signed(owner)
    resp = api.get("/config/vfolder-types")
    assert resp.status_code == 200 and resp.json() == ["user", "group"]
    assert api.get("/folders/_/allowed-types").json() == resp.json()
    assert client.get("/config/vfolder-types").status_code == 401


# --- /folders/_/perf-metric ---------------------------------------------------------------------

def test_it_measures_the_volume_of_a_host(signed, superadmin, host):
    resp = signed(superadmin).get("/folders/_/perf-metric?folder_host=local:volume1")
    assert resp.status_code == 200
    metric = resp.json()["metric"]
    fs = os.statvfs(host.root)
    assert metric["capacity_bytes"] == fs.f_blocks * fs.f_frsize
    assert metric["inodes_total"] == fs.f_files
    assert 0 <= metric["used_bytes"] <= metric["capacity_bytes"]
    assert 0 <= metric["available_bytes"] <= metric["capacity_bytes"]
    assert all(isinstance(v, (int, float)) for v in metric.values())  # the clients format every value as a number
    dev = os.stat(host.root).st_dev
    on_block_device = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat").is_file()
    assert ("iops_read" in metric) == on_block_device
    if on_block_device:
        assert all(metric[k] >= 0 for k in ("iops_read", "iops_write", "io_bytes_read", "io_bytes_write",
                                            "io_usec_read", "io_usec_write"))


def test_it_reads_the_io_counters_of_the_block_device_holding_the_volume(tmp_path):
    from storageproxy import metrics  # the proxy measures its volumes

    root = tmp_path / "volume"
    root.mkdir()
    dev = os.stat(root).st_dev
    stat_dir = tmp_path / "sys" / "dev" / "block" / f"{os.major(dev)}:{os.minor(dev)}"
    stat_dir.mkdir(parents=True)
    (stat_dir / "stat").write_text("  100 0 800 50 40 0 160 20 0 0 0 0 0 0 0 0 0\n")
    metric = metrics.measure_volume(root, sample_seconds=0.01, sysfs=tmp_path / "sys")
    assert metric["iops_read"] == 0 and metric["io_bytes_write"] == 0 and metric["io_usec_read"] == 0.0
    assert "iops_read" not in metrics.measure_volume(root, sample_seconds=0.01, sysfs=tmp_path / "nosys")


def test_it_turns_two_readings_of_the_counters_into_rates():
    from storageproxy.metrics import io_rates

    # (reads, sectors read, ms reading, writes, sectors written, ms writing)
    rates = io_rates((10, 100, 5, 4, 40, 8), (30, 500, 25, 4, 40, 8), 2.0)
    assert rates == {"iops_read": 10.0, "iops_write": 0.0, "io_bytes_read": 400 * 512 / 2.0, "io_bytes_write": 0.0,
                     "io_usec_read": 1000.0, "io_usec_write": 0.0}


@pytest.mark.parametrize("query, status, expected_slug", [
    ("folder_host=nope:none", 404, "object-not-found"),
    ("", 400, "invalid-api-params"),
    ("folder_host=", 400, "invalid-api-params"),
    ("folder_host=" + "x" * 129, 400, "invalid-api-params"),
    ("folder_host=local%00volume1", 400, "invalid-api-params"),
])
def test_it_refuses_a_missing_or_unknown_host(signed, superadmin, host, query, status, expected_slug):
    resp = signed(superadmin).get("/folders/_/perf-metric" + (f"?{query}" if query else ""))
    assert resp.status_code == status and slug(resp) == expected_slug


def test_it_refuses_a_host_that_is_not_a_string(signed, superadmin, host):
    resp = signed(superadmin).get("/folders/_/perf-metric", data={"folder_host": 5})
    assert resp.status_code == 400 and slug(resp) == "invalid-api-params"


# --- /folders/_/change-ownership ----------------------------------------------------------------

GQL_LIST = ("query($limit:Int!, $offset:Int!) { vfolder_list(limit:$limit, offset:$offset) "
            "{ items { id name user user_email } total_count } }")


def test_it_gives_a_user_folder_to_another_user_with_its_files(signed, client, owner, member, superadmin,
                                                                make_folder):
    from vfolders.models import QuotaScope, VFolder, VFolderGrant

    folder = make_folder(owner, "gift")
    (folder.path / "a.txt").write_bytes(b"hello")
    old_path = folder.path
    resp = signed(superadmin).post("/folders/_/change-ownership", {"vfolder": folder.id.hex,
                                                                   "user_email": member.email})
    assert resp.status_code == 200 and resp.json() == {}
    folder = VFolder.objects.get(pk=folder.pk)
    assert folder.user_id == member.pk and folder.quota_scope_id == f"user:{member.pk}"
    assert folder.status == "ready" and [h["status"] for h in folder.status_history][-2:] == ["performing", "ready"]
    assert (folder.path / "a.txt").read_bytes() == b"hello" and not old_path.exists()
    assert f"user-{member.pk.hex}" in str(folder.path)
    assert QuotaScope.objects.get(host=folder.host, quota_scope_id=f"user:{member.pk}").usage_bytes == 5
    assert not VFolderGrant.objects.filter(vfolder=folder).exists()
    # REST
    mine = {f["name"]: f for f in signed(member).get("/folders").json()}
    assert mine["gift"]["is_owner"] is True and mine["gift"]["user"] == str(member.pk)
    assert "gift" not in {f["name"] for f in signed(owner).get("/folders").json()}
    assert signed(member).get("/folders/gift/files").status_code == 200
    # GraphQL
    listed = signed(member).post("/admin/gql", {"query": GQL_LIST, "variables": {"limit": 20, "offset": 0}}).json()
    items = listed["data"]["vfolder_list"]["items"]
    assert [(i["name"], i["user"], i["user_email"]) for i in items] == [("gift", str(member.pk), member.email)]
    # the Django admin
    client.force_login(superadmin)
    page = client.get(f"/admin/vfolders/vfolder/{folder.pk}/change/").content.decode()
    user_field = re.search(r'field-user\b.*?<div class="readonly">(.*?)</div>', page, re.S)
    assert user_field and re.sub(r"<[^>]+>", "", user_field.group(1)).strip() == member.email


def test_it_drops_the_new_owners_own_permission_and_the_pending_invitations(owner, member, domain_admin,
                                                                            superadmin, make_folder):
    from vfolders import services
    from vfolders.models import VFolderGrant, VFolderInvitation

    folder = make_folder(owner, "shared")
    services.invite(owner, "shared", "ro", [member.email, domain_admin.email])
    invitation = [i for i in services.invitations_received(member)][0]
    services.accept_invitation(member, invitation.id)
    services.change_owner(superadmin, str(folder.id), member.email)
    assert not VFolderGrant.objects.filter(vfolder=folder, user=member).exists()
    assert VFolderInvitation.objects.get(vfolder=folder, invitee=domain_admin).state == "canceled"


def test_it_takes_vfid_for_the_folder_too(signed, owner, member, superadmin, make_folder):
    folder = make_folder(owner, "gift")
    resp = signed(superadmin).post("/folders/_/change-ownership", {"vfid": str(folder.id), "user_email": member.email})
    assert resp.status_code == 200
    folder.refresh_from_db()
    assert folder.user_id == member.pk


def test_it_moves_a_folder_to_an_owner_of_another_domain_who_may_use_the_host(signed, owner, outsider, superadmin,
                                                                              defaults, host, world_snapshot):
    from accounts.models import Domain
    from vfolders import services
    from vfolders.models import StorageHost

    StorageHost.objects.create(name="local:volume2")
    services.grant_host_permissions(defaults.domain, "local:volume2")  # the owner's domain only
    folder = services.create_folder(owner, name="abroad", host="local:volume2")
    api = signed(superadmin)
    body = {"vfolder": folder.id.hex, "user_email": outsider.email}
    before = world_snapshot()
    resp = api.post("/folders/_/change-ownership", body)  # nothing gives the outsider the host
    assert resp.status_code == 400 and slug(resp) == "vfolder-operation-failed"
    assert world_snapshot() == before
    services.grant_host_permissions(Domain.objects.get(name="other"), "local:volume2", ["mount-in-session"])
    assert api.post("/folders/_/change-ownership", body).status_code == 200
    folder.refresh_from_db()
    assert folder.user_id == outsider.pk and folder.domain_id == outsider.domain_id
    assert [f["name"] for f in signed(outsider).get("/folders").json()] == ["abroad"]


@pytest.fixture
def world_snapshot(vfroot):
    def snapshot():
        from vfolders.models import VFolder, VFolderGrant, VFolderInvitation

        return (sorted(VFolder.objects.values_list("id", "name", "user_id", "domain_id", "quota_scope_id", "status",
                                                   "status_history")),
                sorted(VFolderGrant.objects.values_list("vfolder_id", "user_id", "permission")),
                sorted(VFolderInvitation.objects.values_list("id", "state")),
                tree_snapshot(vfroot))

    return snapshot


def test_it_refuses_a_name_the_new_owner_already_has(signed, owner, member, superadmin, make_folder,
                                                     world_snapshot):
    folder = make_folder(owner, "same")
    (folder.path / "keep.txt").write_bytes(b"x")
    make_folder(member, "same")
    before = world_snapshot()
    resp = signed(superadmin).post("/folders/_/change-ownership", {"vfolder": folder.id.hex,
                                                                   "user_email": member.email})
    assert resp.status_code == 400 and slug(resp) == "vfolder-already-exists"
    assert world_snapshot() == before


def test_it_refuses_a_project_folder_a_trashed_one_and_a_mounted_one(signed, owner, member, superadmin, defaults,
                                                                     make_folder, world_snapshot):
    from sessions.models import Session
    from vfolders import services

    api = signed(superadmin)
    team = services.create_folder(superadmin, name="team", group=str(defaults.project.pk))
    trashed = make_folder(owner, "old")
    services.move_to_trash(owner, "old")
    busy = make_folder(owner, "busy")
    mounts = services.resolve_mounts(owner, defaults.project, ["busy"], {}, {})
    Session.objects.create(name="using-it", domain=defaults.domain, project=defaults.project, user=owner,
                           image="bai-test/shell:1.0", vfolder_mounts=mounts, status="RUNNING")
    before = world_snapshot()
    for folder in (team, trashed, busy):
        resp = api.post("/folders/_/change-ownership", {"vfolder": folder.id.hex, "user_email": member.email})
        assert resp.status_code == 400 and slug(resp) == "vfolder-operation-failed", folder.name
    assert "using-it" in resp.json()["msg"]
    assert world_snapshot() == before


@pytest.mark.parametrize("body, status, expected_slug", [
    ({"vfolder": "not-an-id", "user_email": "member@example.com"}, 400, "invalid-api-params"),
    ({"vfolder": 5, "user_email": "member@example.com"}, 400, "invalid-api-params"),
    ({"user_email": "member@example.com"}, 400, "invalid-api-params"),
    ({"vfolder": "FOLDER"}, 400, "invalid-api-params"),
    ({"vfolder": "FOLDER", "user_email": ["member@example.com"]}, 400, "invalid-api-params"),
    ({"vfolder": "FOLDER", "user_email": "x" * 300}, 400, "invalid-api-params"),
    ({"vfolder": "FOLDER", "user_email": "nobody@example.com"}, 404, "object-not-found"),
    ({"vfolder": "00000000-0000-0000-0000-000000000000", "user_email": "member@example.com"}, 404,
     "object-not-found"),
    ([1, 2], 400, "invalid-api-params"),
])
def test_it_refuses_bad_input_and_unknown_folders_or_users(signed, owner, member, superadmin, make_folder,
                                                           world_snapshot, body, status, expected_slug):
    folder = make_folder(owner, "gift")
    if isinstance(body, dict):
        body = {k: (str(folder.id) if v == "FOLDER" else v) for k, v in body.items()}
    before = world_snapshot()
    resp = signed(superadmin).post("/folders/_/change-ownership", body)
    assert resp.status_code == status and slug(resp) == expected_slug
    assert world_snapshot() == before


def test_giving_a_folder_to_its_owner_changes_nothing(signed, owner, superadmin, make_folder, world_snapshot):
    folder = make_folder(owner, "mine")
    before = world_snapshot()
    resp = signed(superadmin).post("/folders/_/change-ownership", {"vfolder": str(folder.id),
                                                                   "user_email": owner.email})
    assert resp.status_code == 200 and world_snapshot() == before


# --- /folders/_/shared --------------------------------------------------------------------------

@pytest.fixture
def invited(owner, member, make_folder):
    """The owner's folder ``club`` the member accepted a ``ro`` invitation to."""
    from vfolders import services

    folder = make_folder(owner, "club")
    services.invite(owner, "club", "ro", [member.email])
    services.accept_invitation(member, services.invitations_received(member)[0].id)
    return folder


def test_it_lists_who_shares_a_folder_as_the_client_prints_it(signed, owner, member, superadmin, defaults, invited):
    from vfolders import services

    team = services.create_folder(superadmin, name="team", group=str(defaults.project.pk))
    services.share(superadmin, team.id.hex, "wd", [member.email])
    shared = signed(superadmin).get("/folders/_/shared").json()["shared"]
    assert shared == [
        {"vfolder_id": str(invited.id), "vfolder_name": "club", "status": "ready", "owner": str(owner.pk),
         "type": "user", "shared_to": {"uuid": str(member.pk), "email": member.email}, "perm": "ro"},
        {"vfolder_id": str(team.id), "vfolder_name": "team", "status": "ready", "owner": str(defaults.project.pk),
         "type": "project", "shared_to": {"uuid": str(member.pk), "email": member.email}, "perm": "wd"},
    ]
    one = signed(superadmin).get(f"/folders/_/shared?vfolder_id={team.id.hex}").json()["shared"]
    assert [s["vfolder_name"] for s in one] == ["team"]


def test_it_refuses_a_bad_folder_id_when_listing(signed, owner):
    resp = signed(owner).get("/folders/_/shared?vfolder_id=nope")
    assert resp.status_code == 400 and slug(resp) == "invalid-api-params"


def test_an_admin_changes_and_takes_back_an_invitees_permission(signed, member, superadmin, invited):
    api = signed(superadmin)
    body = {"vfolder": str(invited.id), "user": str(member.pk), "perm": "rw"}
    resp = api.post("/folders/_/shared", body)
    assert resp.status_code == 200 and resp.json() == {"msg": "shared vfolder permission updated"}
    assert {f["name"]: f["permission"] for f in signed(member).get("/folders").json()} == {"club": "rw"}
    assert signed(member).post("/folders/club/mkdir", {"path": "now-writable"}).status_code == 201
    assert api.post("/folders/_/shared", {**body, "perm": None}).status_code == 200
    assert signed(member).get("/folders").json() == []
    resp = api.post("/folders/_/shared", {**body, "perm": None})  # nothing left to take back
    assert resp.status_code == 404 and slug(resp) == "object-not-found"


def test_a_domain_admin_gives_a_project_member_a_permission_of_their_own(signed, member, outsider, domain_admin,
                                                                         defaults, host, world_snapshot):
    from vfolders import services
    from vfolders.models import VFolderGrant

    team = services.create_folder(domain_admin, name="team", group=str(defaults.project.pk), permission="ro")
    api = signed(domain_admin)
    resp = api.post("/folders/_/shared", {"vfolder": team.id.hex, "user": str(member.pk), "perm": "wd"})
    assert resp.status_code == 200
    assert VFolderGrant.objects.get(vfolder=team, user=member).permission == "wd"
    before = world_snapshot()
    resp = api.post("/folders/_/shared", {"vfolder": team.id.hex, "user": str(outsider.pk), "perm": "rw"})
    assert resp.status_code == 400 and slug(resp) == "vfolder-operation-failed"  # not a member of the project
    assert world_snapshot() == before


def test_it_does_not_share_a_user_folder_with_someone_not_invited(signed, outsider, superadmin, invited,
                                                                  world_snapshot):
    before = world_snapshot()
    resp = signed(superadmin).post("/folders/_/shared", {"vfolder": str(invited.id), "user": str(outsider.pk),
                                                         "perm": "rw"})
    assert resp.status_code == 404 and slug(resp) == "object-not-found"
    assert world_snapshot() == before


@pytest.mark.parametrize("body, status, expected_slug", [
    ({"vfolder": "FOLDER", "user": "MEMBER", "perm": "xx"}, 400, "invalid-api-params"),
    ({"vfolder": "FOLDER", "user": "MEMBER"}, 400, "invalid-api-params"),
    ({"vfolder": "FOLDER", "user": "MEMBER", "perm": ["rw"]}, 400, "invalid-api-params"),
    ({"vfolder": "nope", "user": "MEMBER", "perm": "rw"}, 400, "invalid-api-params"),
    ({"vfolder": "FOLDER", "user": "member@example.com", "perm": "rw"}, 400, "invalid-api-params"),
    ({"vfolder": None, "user": "MEMBER", "perm": "rw"}, 400, "invalid-api-params"),
    ({"vfolder": "FOLDER", "user": "00000000-0000-0000-0000-000000000000", "perm": "rw"}, 404, "object-not-found"),
    ({"vfolder": "00000000-0000-0000-0000-000000000000", "user": "MEMBER", "perm": "rw"}, 404, "object-not-found"),
    ("perm=rw", 400, "invalid-api-params"),
])
def test_it_refuses_bad_input_when_changing_a_permission(signed, member, superadmin, invited, world_snapshot,
                                                         body, status, expected_slug):
    if isinstance(body, dict):
        names = {"FOLDER": str(invited.id), "MEMBER": str(member.pk)}
        body = {k: names.get(v, v) if isinstance(v, str) else v for k, v in body.items()}
    before = world_snapshot()
    resp = signed(superadmin).post("/folders/_/shared", body)
    assert resp.status_code == status and slug(resp) == expected_slug
    assert world_snapshot() == before


def test_a_folder_whose_directory_is_missing_keeps_its_owner(signed, owner, member, superadmin, make_folder):
    import shutil

    from vfolders.models import VFolder

    folder = make_folder(owner, "gone")
    shutil.rmtree(folder.path)
    resp = signed(superadmin).post("/folders/_/change-ownership", {"vfolder": folder.id.hex,
                                                                   "user_email": member.email})
    assert resp.status_code == 400 and slug(resp) == "vfolder-operation-failed"
    folder = VFolder.objects.get(pk=folder.pk)
    assert (folder.user_id, folder.quota_scope_id, folder.status) == (owner.pk, f"user:{owner.pk}", "ready")
