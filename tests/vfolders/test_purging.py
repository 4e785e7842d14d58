"""Purging a user or a project (GraphQL ``purge_user`` / ``purge_group``, the Django admin's
delete) takes their sessions and folders with them, as Backend.AI's purge does: refused,
with nothing changed, while a live session remains or mounts a folder that would go; the
folders' files are removed, a purged user's folders that others use are handed over to the
admin unless ``purge_shared_vfolders`` is true."""
from __future__ import annotations

import pytest

from accounts.models import Project, User
from permission_matrix import gql_post as gql
from sessions.models import Session
from vfolders import services
from vfolders.models import VFolder, VFolderGrant, VFolderInvitation, VFolderStatus

PURGE_USER = ("mutation($email: String!, $input: PurgeUserInput!) {\n    purge_user(email: $email, props: $input) {\n"
              "        ok msg\n    }\n}\n")
PURGE_GROUP = "mutation($gid: UUID!) {\n    purge_group(gid: $gid) {\n        ok msg\n    }\n}\n"


def session_of(user, project, name, status, mounts=()):
    return Session.objects.create(name=name, domain=project.domain, project=project, user=user,
                                  image="bai-test/shell:1.0", vfolder_mounts=list(mounts), status=status)


@pytest.fixture
def team(defaults, superadmin, owner, member):
    project = Project.objects.create(name="purged-team", domain=defaults.domain,
                                     resource_policy=defaults.project.resource_policy)
    for user in (owner, member, superadmin):
        project.members.add(user)
    return project


def test_it_refuses_to_purge_a_user_with_a_live_session_and_changes_nothing(signed, superadmin, owner, defaults,
                                                                         make_folder):
    folder = make_folder(owner, "keep")
    session_of(owner, defaults.project, "still-running", "RUNNING")
    refused = gql(signed(superadmin), PURGE_USER, {"email": owner.email, "input": {}})
    assert refused.status_code == 400 and "still-running" in refused.json()["msg"]
    assert User.objects.filter(pk=owner.pk).exists() and folder.path.is_dir()
    assert VFolder.objects.get(pk=folder.pk).status == VFolderStatus.READY


def test_purging_a_user_removes_their_ended_sessions_folders_files_and_invitations(signed, superadmin, owner, member,
                                                                                   defaults, make_folder):
    mine = make_folder(owner, "mine")
    (mine.path / "notes.txt").write_text("bye")
    trashed = make_folder(owner, "trashed")
    services.move_to_trash(owner, "trashed")
    given = make_folder(member, "given")
    services.invite(member, "given", "ro", [owner.email])
    session_of(owner, defaults.project, "long-gone", "TERMINATED")
    done = gql(signed(superadmin), PURGE_USER, {"email": owner.email, "input": {"purge_shared_vfolders": False}})
    assert done.status_code == 200 and done.json()["data"]["purge_user"]["ok"], done.content
    assert not User.objects.filter(pk=owner.pk).exists()
    assert not mine.path.exists() and not trashed.path.exists()
    assert not VFolder.objects.filter(pk__in=[mine.pk, trashed.pk]).exists()
    assert not Session.objects.filter(name="long-gone").exists()
    assert not VFolderInvitation.objects.filter(vfolder=given).exists() and given.path.is_dir()


def test_a_purged_users_folder_that_others_use_goes_to_the_admin_by_default(signed, superadmin, owner, member,
                                                                           make_folder):
    shared = make_folder(owner, "shared-work")
    (shared.path / "result.csv").write_text("1,2\n")
    VFolderGrant.objects.create(vfolder=shared, user=member, permission="ro")
    alone = make_folder(owner, "alone")
    done = gql(signed(superadmin), PURGE_USER, {"email": owner.email, "input": {}})
    assert done.json()["data"]["purge_user"]["ok"], done.content
    shared = VFolder.objects.get(pk=shared.pk)
    assert shared.user_id == superadmin.pk and (shared.path / "result.csv").read_text() == "1,2\n"
    assert VFolderGrant.objects.filter(vfolder=shared, user=member).exists()
    assert not VFolder.objects.filter(pk=alone.pk).exists() and not alone.path.exists()


def test_purge_shared_vfolders_true_removes_the_shared_folders_too(signed, superadmin, owner, member, make_folder):
    shared = make_folder(owner, "shared-work")
    VFolderGrant.objects.create(vfolder=shared, user=member, permission="ro")
    done = gql(signed(superadmin), PURGE_USER, {"email": owner.email, "input": {"purge_shared_vfolders": True}})
    assert done.json()["data"]["purge_user"]["ok"], done.content
    assert not VFolder.objects.filter(pk=shared.pk).exists() and not shared.path.exists()
    assert not VFolderGrant.objects.filter(user=member).exists()


def test_the_handover_is_refused_when_the_admin_has_a_folder_of_that_name(signed, superadmin, owner, member,
                                                                          make_folder):
    shared = make_folder(owner, "results")
    VFolderGrant.objects.create(vfolder=shared, user=member, permission="ro")
    make_folder(superadmin, "results")
    refused = gql(signed(superadmin), PURGE_USER, {"email": owner.email, "input": {}})
    assert refused.status_code == 400 and "results" in refused.json()["msg"]
    assert User.objects.filter(pk=owner.pk).exists() and shared.path.is_dir()


def test_purging_a_group_removes_its_folders_trashed_ones_too_and_its_ended_sessions(signed, superadmin, owner,
                                                                                    team, make_folder):
    live = make_folder(superadmin, "team-data", group=str(team.pk))
    old = make_folder(superadmin, "team-old", group=str(team.pk))
    services.move_to_trash(superadmin, "team-old")
    session_of(owner, team, "team-run", "CANCELLED")
    done = gql(signed(superadmin), PURGE_GROUP, {"gid": str(team.pk)})
    assert done.json()["data"]["purge_group"]["ok"], done.content
    assert not Project.objects.filter(pk=team.pk).exists()
    assert not VFolder.objects.filter(pk__in=[live.pk, old.pk]).exists()
    assert not live.path.exists() and not old.path.exists()
    assert User.objects.filter(pk=owner.pk).exists()


def test_it_refuses_to_purge_a_group_whose_folder_a_live_session_mounts(signed, superadmin, owner, defaults, team,
                                                                       make_folder):
    folder = make_folder(superadmin, "team-data", group=str(team.pk))
    mounts = services.resolve_mounts(owner, team, ["team-data"], {}, {})
    session_of(owner, defaults.project, "reader", "RUNNING", mounts)
    refused = gql(signed(superadmin), PURGE_GROUP, {"gid": str(team.pk)})
    assert refused.status_code == 400 and "reader" in refused.json()["msg"]
    assert Project.objects.filter(pk=team.pk).exists() and folder.path.is_dir()


@pytest.mark.parametrize("role", ["owner", "member", "outsider", "foreign_admin"])
def test_only_admins_of_the_user_purge_them(role, request, signed, owner, make_folder):
    folder = make_folder(owner, "mine")
    caller = request.getfixturevalue(role)
    target = owner if role != "owner" else request.getfixturevalue("member")
    refused = gql(signed(caller), PURGE_USER, {"email": target.email, "input": {}})
    assert refused.status_code in (400, 403, 404)
    assert User.objects.filter(pk=target.pk).exists() and folder.path.is_dir()


def test_a_domain_admin_purges_a_user_of_their_domain(signed, domain_admin, member, make_folder):
    folder = make_folder(member, "bye")
    done = gql(signed(domain_admin), PURGE_USER, {"email": member.email, "input": {}})
    assert done.json()["data"]["purge_user"]["ok"], done.content
    assert not User.objects.filter(pk=member.pk).exists() and not folder.path.exists()


def test_the_django_admin_delete_is_the_purge_with_its_refusals(client, superadmin, owner, defaults, make_folder):
    folder = make_folder(owner, "admin-view")
    session = session_of(owner, defaults.project, "busy", "RUNNING")
    client.force_login(superadmin)
    url = f"/admin/accounts/user/{owner.pk}/delete/"
    refused = client.post(url, {"post": "yes"}, follow=True)
    assert "was not deleted" in refused.content.decode() and "busy" in refused.content.decode()
    assert User.objects.filter(pk=owner.pk).exists() and folder.path.is_dir()
    Session.objects.filter(pk=session.pk).update(status="TERMINATED")
    done = client.post(url, {"post": "yes"}, follow=True)
    assert "was purged" in done.content.decode()
    assert not User.objects.filter(pk=owner.pk).exists() and not folder.path.exists()
