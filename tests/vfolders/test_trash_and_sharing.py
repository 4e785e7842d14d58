"""The trash (delete, restore, purge), invitations (invite, list, accept,
reject, cancel, update), project sharing and leaving."""
import pytest

from helpers import slug

pytestmark = pytest.mark.django_db


# --- trash ------------------------------------------------------------------------------------

def test_delete_moves_to_the_trash_and_restore_brings_it_back_with_its_files(signed, owner, make_folder):
    folder = make_folder(owner, "keep")
    (folder.path / "f.txt").write_bytes(b"data")
    api = signed(owner)
    assert api.delete("/folders/keep").status_code == 204
    folder.refresh_from_db()
    assert folder.status == "delete-pending" and (folder.path / "f.txt").exists()
    listed = {f["name"]: f["status"] for f in api.get("/folders").json()}
    assert listed == {"keep": "delete-pending"}
    assert api.get("/folders/keep/files").status_code == 404  # not usable while in the trash
    assert api.post("/folders/restore-from-trash-bin", {"vfolder_id": folder.id.hex}).status_code == 204
    folder.refresh_from_db()
    assert folder.status == "ready"
    assert [h["status"] for h in folder.status_history] == ["ready", "delete-pending", "ready"]
    assert api.get("/folders/keep/files").status_code == 200


def test_a_trashed_name_can_be_reused_but_then_the_old_one_cannot_come_back(signed, owner, make_folder):
    old = make_folder(owner, "name")
    api = signed(owner)
    assert api.delete("/folders/name").status_code == 204
    assert api.post("/folders", {"name": "name"}).status_code == 201
    resp = api.post("/folders/restore-from-trash-bin", {"vfolder_id": old.id.hex})
    assert resp.status_code == 400 and slug(resp) == "vfolder-already-exists"


def test_purge_removes_the_files_for_good(signed, owner, make_folder):
    folder = make_folder(owner, "bye")
    (folder.path / "f.txt").write_bytes(b"data")
    api = signed(owner)
    assert api.post("/folders/purge", {"vfolder_id": folder.id.hex}).status_code == 404  # not in the trash yet
    assert api.delete("/folders", {"vfolder_id": folder.id.hex}).status_code == 204
    assert api.post("/folders/purge", {"vfolder_id": folder.id.hex}).status_code == 204
    folder.refresh_from_db()
    assert folder.status == "delete-complete" and not folder.path.exists()
    assert api.get("/folders").json() == []
    assert api.post("/folders/restore-from-trash-bin", {"vfolder_id": folder.id.hex}).status_code == 404


def test_delete_from_trash_bin_is_purge_by_delete(signed, owner, make_folder):
    folder = make_folder(owner, "bye")
    api = signed(owner)
    assert api.delete("/folders/bye").status_code == 204
    assert api.delete("/folders/delete-from-trash-bin", {"vfolder_id": str(folder.id)}).status_code == 204
    assert not folder.path.exists()


def test_purge_that_fails_keeps_the_folder_in_the_trash_and_reconcile_finishes_it(owner, make_folder,
                                                                                  storage_proxy):
    from vfolders import services
    from vfolders.models import VFolder

    folder = make_folder(owner, "stuck")
    services.move_to_trash(owner, "stuck")
    storage_proxy.kill()  # the storage proxy cannot remove the files
    try:
        with pytest.raises(Exception):
            services.purge(owner, folder.id)
    finally:
        storage_proxy.start()
    assert VFolder.objects.get(pk=folder.pk).status == "delete-error" and folder.path.is_dir()
    services.purge(owner, folder.id)  # delete-error may be purged again
    assert VFolder.objects.get(pk=folder.pk).status == "delete-complete"

    other = make_folder(owner, "crashed")
    services.move_to_trash(owner, "crashed")
    VFolder.objects.filter(pk=other.pk).update(status="delete-ongoing",
                                               status_changed="2000-01-01T00:00:00+00:00")
    assert services.reconcile()["deletions_retried"] == 1
    assert VFolder.objects.get(pk=other.pk).status == "delete-complete" and not other.path.exists()


def test_the_storage_proxy_sweeps_abandoned_staged_uploads(owner, make_folder, transfers, vfroot, repoint_proxy):
    import os
    import time

    make_folder(owner, "up")
    repoint_proxy("--token-lifetime", "60", "--sweep-interval", "0.3")
    t = transfers(owner)
    target = t.request_upload("up", "f.bin", 10)
    assert t.patch(target, 0, b"12345").status_code == 204
    parts = list((vfroot / "volume1" / ".staging").rglob("*.part"))
    assert len(parts) == 1
    time.sleep(1)
    assert parts[0].exists()  # younger than two token lifetimes: kept
    old = time.time() - 3 * 60
    os.utime(parts[0], (old, old))
    deadline = time.monotonic() + 10
    while parts[0].exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not parts[0].exists()


# --- invitations ------------------------------------------------------------------------------

def test_the_invitation_flow_from_invite_to_accept(signed, owner, member, make_folder):
    folder = make_folder(owner, "together")
    (folder.path / "f.txt").write_bytes(b"shared")
    owner_api, member_api = signed(owner), signed(member)
    invited = owner_api.post("/folders/together/invite", {"perm": "rw", "user_ids": [member.email, "nobody@x.y"]})
    assert invited.status_code == 201 and invited.json() == {"invited_ids": [member.email]}
    again = owner_api.post("/folders/together/invite", {"perm": "rw", "emails": [member.email]})
    assert again.json() == {"invited_ids": []}  # already pending
    assert member_api.get("/folders/together").status_code == 404  # nothing before accepting
    received = member_api.get("/folders/invitations/list").json()["invitations"]
    assert len(received) == 1
    inv = received[0]
    assert (inv["inviter"], inv["invitee"], inv["perm"], inv["state"], inv["vfolder_name"]) == (
        owner.email, member.email, "rw", "pending", "together")
    assert inv["vfolder_id"] == str(folder.id)
    sent = owner_api.get("/folders/invitations/list-sent").json()["invitations"]
    assert [i["id"] for i in sent] == [inv["id"]]
    assert member_api.post("/folders/invitations/accept", {"inv_id": inv["id"]}).status_code == 200
    assert member_api.get("/folders/invitations/list").json() == {"invitations": []}
    listed = member_api.get("/folders").json()
    assert [(f["name"], f["is_owner"], f["permission"]) for f in listed] == [("together", False, "rw")]
    assert member_api.get("/folders/together/files").status_code == 200
    twice = member_api.post("/folders/invitations/accept", {"inv_id": inv["id"]})
    assert twice.status_code == 400


def test_rejecting_and_canceling_invitations(signed, owner, member, make_user, make_folder):
    make_folder(owner, "maybe")
    third = make_user("third@example.com")
    owner_api = signed(owner)
    owner_api.post("/folders/maybe/invite", {"perm": "ro", "emails": [member.email, third.email]})
    member_inv = signed(member).get("/folders/invitations/list").json()["invitations"][0]["id"]
    third_inv = signed(third).get("/folders/invitations/list").json()["invitations"][0]["id"]
    assert signed(third).delete("/folders/invitations/delete", {"inv_id": member_inv}).status_code == 404
    assert signed(member).delete("/folders/invitations/delete", {"inv_id": member_inv}).json() == {
        "state": "rejected"}
    assert owner_api.post("/folders/invitations/update/" + third_inv, {"perm": "wd"}).status_code == 200
    assert owner_api.delete("/folders/invitations/delete", {"inv_id": third_inv}).json() == {"state": "canceled"}
    assert signed(third).post("/folders/invitations/accept", {"inv_id": third_inv}).status_code == 400
    assert signed(third).get("/folders/maybe").status_code == 404


def test_an_invitee_with_a_folder_of_the_same_name_must_rename_it_first(signed, owner, member, make_folder):
    make_folder(owner, "data")
    make_folder(member, "data")
    signed(owner).post("/folders/data/invite", {"perm": "ro", "emails": [member.email]})
    inv = signed(member).get("/folders/invitations/list").json()["invitations"][0]["id"]
    resp = signed(member).post("/folders/invitations/accept", {"inv_id": inv})
    assert resp.status_code == 400 and slug(resp) == "vfolder-already-exists"


def test_outsiders_cannot_be_invited_and_project_folders_are_not_invited_to(signed, owner, outsider, domain_admin,
                                                                            make_folder):
    from accounts.models import Project

    make_folder(owner, "mine")
    assert signed(owner).post("/folders/mine/invite", {"emails": [outsider.email]}).json() == {"invited_ids": []}
    project = Project.objects.get(name="default")
    resp = signed(domain_admin).post("/folders", {"name": "proj", "group": project.name})
    assert resp.status_code == 201
    resp = signed(domain_admin).post("/folders/proj/invite", {"emails": [owner.email]})
    assert resp.status_code == 400 and slug(resp) == "vfolder-operation-failed"


def test_leaving_and_being_removed(signed, owner, member, make_folder):
    from vfolders import services

    make_folder(owner, "club")
    services.invite(owner, "club", "rw", [member.email])
    services.accept_invitation(member, services.invitations_received(member)[0].id)
    assert signed(owner).post("/folders/club/leave", {}).status_code == 400  # the owner deletes instead
    assert signed(member).post("/folders/club/leave", {"shared_user_uuid": None}).status_code == 200
    assert signed(member).get("/folders/club").status_code == 404
    services.invite(owner, "club", "rw", [member.email])
    services.accept_invitation(member, services.invitations_received(member)[0].id)
    shared = signed(owner).get("/folders/_/shared").json()["shared"]
    assert [(s["vfolder_name"], s["shared_to"]["email"], s["perm"]) for s in shared] == [
        ("club", member.email, "rw")]
    assert signed(owner).post("/folders/club/leave", {"shared_user_uuid": str(member.pk)}).status_code == 200
    assert signed(member).get("/folders/club").status_code == 404


# --- project sharing --------------------------------------------------------------------------

def test_share_and_unshare_override_a_project_members_permission(signed, member, domain_admin, owner, outsider,
                                                                 host):
    from accounts.models import Project

    project = Project.objects.get(name="default")
    admin_api = signed(domain_admin)
    assert admin_api.post("/folders", {"name": "teamdir", "group": str(project.pk), "permission": "ro"}
                          ).status_code == 201
    member_api = signed(member)
    assert member_api.post("/folders/teamdir/mkdir", {"path": "x"}).status_code == 400  # ro
    shared = admin_api.post("/folders/teamdir/share", {"permission": "rw",
                                                       "emails": [member.email, outsider.email]})
    assert shared.status_code == 201 and shared.json() == {"shared_emails": [member.email]}
    assert member_api.post("/folders/teamdir/mkdir", {"path": "x"}).status_code == 201
    listed = {f["name"]: f["permission"] for f in member_api.get("/folders").json()}
    assert listed["teamdir"] == "rw"
    unshared = admin_api.delete("/folders/teamdir/unshare", {"emails": [member.email]})
    assert unshared.json() == {"unshared_emails": [member.email]}
    assert member_api.post("/folders/teamdir/mkdir", {"path": "y"}).status_code == 400
    assert member_api.post("/folders/teamdir/share", {"permission": "rw", "emails": [owner.email]}
                           ).status_code == 400


def test_a_folder_mounted_in_a_live_session_cannot_go_to_the_trash(signed, owner, make_folder, defaults):
    from sessions.models import Session
    from vfolders import services

    make_folder(owner, "busy")
    mounts = services.resolve_mounts(owner, defaults.project, ["busy"], {}, {})
    session = Session.objects.create(name="using-it", domain=defaults.domain, project=defaults.project, user=owner,
                                     image="bai-test/shell:1.0", vfolder_mounts=mounts, status="RUNNING")
    resp = signed(owner).delete("/folders/busy")
    assert resp.status_code == 400 and slug(resp) == "vfolder-operation-failed"
    assert "using-it" in resp.json()["msg"]
    Session.objects.filter(pk=session.pk).update(status="TERMINATED")
    assert signed(owner).delete("/folders/busy").status_code == 204
