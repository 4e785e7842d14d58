"""The permission matrix: owner, invitees with ro/rw/wd, a project member (with
and without a share override), an outsider, a domain admin and a superadmin,
for list / read / write / delete / share on a user folder and a project folder.

``ok`` is a 2xx answer, ``denied`` a 400 vfolder-permission-error (the folder
is visible, the right is missing), ``hidden`` a 404 object-not-found (the folder
does not exist for them)."""
import itertools

import pytest

from helpers import slug

pytestmark = pytest.mark.django_db

OK, DENIED, HIDDEN = "ok", "denied", "hidden"
OPS = ["list", "read", "write", "delete", "share"]


@pytest.fixture
def cast(make_user, owner, member, outsider, domain_admin, superadmin, make_folder):
    from accounts.models import Project, ProjectMembership, ProjectResourcePolicy
    from vfolders import services

    people = {"owner": owner, "member": member, "outsider": outsider, "domain_admin": domain_admin,
              "superadmin": superadmin}
    for perm in ("ro", "rw", "wd"):
        people[f"invitee_{perm}"] = make_user(f"invitee-{perm}@example.com")
    people["member_ro"] = make_user("member-ro@example.com")
    people["colleague"] = make_user("colleague@example.com")
    team = Project.objects.create(name="team", domain_id="default",
                                  resource_policy=ProjectResourcePolicy.objects.get(name="default"))
    for who in ("member", "member_ro", "colleague"):
        ProjectMembership.objects.create(user=people[who], project=team)

    user_folder = make_folder(owner, "personal")
    for perm in ("ro", "rw", "wd"):
        services.invite(owner, "personal", perm, [people[f"invitee_{perm}"].email])
        invitee = people[f"invitee_{perm}"]
        services.accept_invitation(invitee, services.invitations_received(invitee)[0].id)
    project_folder = services.create_folder(domain_admin, name="teamdata", group=str(team.pk), permission="rw")
    services.share(domain_admin, project_folder.id.hex, "ro", [people["member_ro"].email])
    return people, user_folder, project_folder


def attempt(api, folder, op, counter=itertools.count()):
    """Try one operation; returns ok / denied / hidden."""
    ref = folder.id.hex
    n = next(counter)
    if op == "list":
        listed = api.get("/folders", data={"all": True}).json()
        return OK if ref in [f["id"] for f in listed] else HIDDEN
    if op == "read":
        resp = api.get(f"/folders/{ref}/files", data={"path": "."})
    elif op == "write":
        resp = api.post(f"/folders/{ref}/mkdir", {"path": f"new-{n}"})
    elif op == "delete":
        (folder.path / f"victim-{n}.txt").write_bytes(b"x")
        resp = api.delete(f"/folders/{ref}/delete-files", {"files": [f"victim-{n}.txt"]})
    elif op == "share":
        if folder.ownership_type == "group":
            resp = api.post(f"/folders/{ref}/share", {"permission": "rw", "emails": ["colleague@example.com"]})
        else:
            resp = api.post(f"/folders/{ref}/invite", {"perm": "ro", "emails": ["colleague@example.com"]})
    if 200 <= resp.status_code < 300:
        return OK
    if resp.status_code == 404 and slug(resp) == "object-not-found":
        return HIDDEN
    if resp.status_code == 400 and slug(resp) == "vfolder-permission-error":
        return DENIED
    raise AssertionError(f"{op}: unexpected {resp.status_code} {resp.content!r}")


USER_FOLDER = {
    "owner":        [OK, OK, OK, OK, OK],
    "invitee_ro":   [OK, OK, DENIED, DENIED, DENIED],
    "invitee_rw":   [OK, OK, OK, DENIED, DENIED],
    "invitee_wd":   [OK, OK, OK, OK, DENIED],
    "member":       [HIDDEN, HIDDEN, HIDDEN, HIDDEN, HIDDEN],
    "outsider":     [HIDDEN, HIDDEN, HIDDEN, HIDDEN, HIDDEN],
    "domain_admin": [OK, OK, OK, OK, OK],
    "superadmin":   [OK, OK, OK, OK, OK],
}

PROJECT_FOLDER = {
    "owner":        [HIDDEN, HIDDEN, HIDDEN, HIDDEN, HIDDEN],  # not a member of the project
    "invitee_wd":   [HIDDEN, HIDDEN, HIDDEN, HIDDEN, HIDDEN],
    "member":       [OK, OK, OK, DENIED, DENIED],  # the folder's rw
    "member_ro":    [OK, OK, DENIED, DENIED, DENIED],  # a share overrides it with ro
    "outsider":     [HIDDEN, HIDDEN, HIDDEN, HIDDEN, HIDDEN],
    "domain_admin": [OK, OK, OK, OK, OK],
    "superadmin":   [OK, OK, OK, OK, OK],
}


@pytest.mark.parametrize("role", USER_FOLDER)
def test_each_role_has_exactly_its_rights_on_a_user_folder(cast, signed, role):
    people, user_folder, _ = cast
    api = signed(people[role])
    got = [attempt(api, user_folder, op) for op in OPS]
    assert dict(zip(OPS, got)) == dict(zip(OPS, USER_FOLDER[role]))


@pytest.mark.parametrize("role", PROJECT_FOLDER)
def test_each_role_has_exactly_its_rights_on_a_project_folder(cast, signed, role):
    people, _, project_folder = cast
    api = signed(people[role])
    got = [attempt(api, project_folder, op) for op in OPS]
    assert dict(zip(OPS, got)) == dict(zip(OPS, PROJECT_FOLDER[role]))


@pytest.mark.parametrize("role,expected", [
    ("owner", 204), ("invitee_wd", 400), ("member", 404), ("outsider", 404), ("domain_admin", 204),
    ("superadmin", 204),
])
def test_only_the_owner_and_admins_move_a_user_folder_to_the_trash(cast, signed, role, expected):
    people, user_folder, _ = cast
    resp = signed(people[role]).delete(f"/folders/{user_folder.id.hex}")
    assert resp.status_code == expected, resp.content
    user_folder.refresh_from_db()
    assert user_folder.status == ("delete-pending" if expected == 204 else "ready")


@pytest.mark.parametrize("role,expected", [("member", 400), ("domain_admin", 204), ("superadmin", 204)])
def test_only_admins_move_a_project_folder_to_the_trash(cast, signed, role, expected):
    people, _, project_folder = cast
    assert signed(people[role]).delete(f"/folders/{project_folder.id.hex}").status_code == expected


def test_a_domain_admin_does_not_reach_another_domains_folders(signed, outsider, domain_admin, make_folder):
    folder = make_folder(outsider, "elsewhere")
    api = signed(domain_admin)
    assert folder.id.hex not in [f["id"] for f in api.get("/folders", data={"all": True}).json()]
    assert api.get(f"/folders/{folder.id.hex}").status_code == 404


def test_names_resolve_only_among_ones_own_folders_even_for_admins(signed, owner, superadmin, make_folder):
    make_folder(owner, "private-name")
    assert signed(superadmin).get("/folders/private-name").status_code == 404


def test_only_admins_create_project_folders(signed, member, domain_admin, host):
    from accounts.models import Project

    team = Project.objects.get(name="default")
    body = {"name": "projdata", "host": "local:volume1", "group": str(team.pk)}
    resp = signed(member).post("/folders", body)
    assert resp.status_code == 403 and slug(resp) == "generic-forbidden"
    resp = signed(domain_admin).post("/folders", body)
    assert resp.status_code == 201 and resp.json()["ownership_type"] == "group"
    assert resp.json()["quota_scope_id"] == f"project:{team.pk}"
