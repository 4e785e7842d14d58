"""``resolve_mounts``: what a new session mounts, where, and read-only or not
(reference §9 mounting rules)."""
import pytest

from backendai.api import errors

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(defaults):
    return defaults.project


def resolve(user, project, mounts, mount_map=None, mount_options=None):
    from vfolders.services import resolve_mounts

    return resolve_mounts(user, project, mounts, mount_map or {}, mount_options or {})


def test_a_folder_mounts_read_write_at_home_work_by_default(owner, project, make_folder):
    folder = make_folder(owner, "data")
    [mount] = resolve(owner, project, ["data"])
    assert mount["vfolder_id"] == str(folder.id) and mount["name"] == "data"
    assert mount["host_path"] == str(folder.path) and mount["container_path"] == "/home/work/data"
    assert mount["mode"] == "rw"
    folder.refresh_from_db()
    assert folder.last_used is not None


def test_agents_see_the_host_at_its_mount_path(owner, project, make_folder, host):
    from vfolders.models import StorageHost

    StorageHost.objects.filter(pk=host.pk).update(mount_path="/mnt/vfroot/volume1")
    folder = make_folder(owner, "data")
    [mount] = resolve(owner, project, [folder.id.hex])
    assert mount["host_path"] == "/mnt/vfroot/volume1/" + folder.relative_path


@pytest.mark.parametrize("target,expected", [
    ("/data/in", "/data/in"), ("relative/dir", "/home/work/relative/dir"), ("/home/work/x", "/home/work/x"),
    ("/models", "/models"),
])
def test_mount_map_sets_the_destination(owner, project, make_folder, target, expected):
    make_folder(owner, "data")
    [mount] = resolve(owner, project, ["data"], {"data": target})
    assert mount["container_path"] == expected


@pytest.mark.parametrize("target", ["/", "/home/work", "/home", "/home/other", "/etc", "/etc/app", "/usr/local",
                                    "/tmp/x", ".ssh", "/home/work/.jupyter", ".bashrc", "../etc", "/data/../etc",
                                    "a\x00b"])
def test_reserved_destinations_are_refused(owner, project, make_folder, target):
    make_folder(owner, "data")
    with pytest.raises(errors.InvalidAPIParameters):
        resolve(owner, project, ["data"], {"data": target})


def test_a_mount_map_key_is_mounted_even_if_not_listed(owner, project, make_folder):
    make_folder(owner, "data")
    [mount] = resolve(owner, project, [], {"data": "/data"})
    assert mount["container_path"] == "/data"


def test_read_only_access_mounts_read_only_and_asking_for_more_fails(owner, member, project, make_folder):
    from vfolders import services

    make_folder(owner, "shared")
    services.invite(owner, "shared", "ro", [member.email])
    services.accept_invitation(member, services.invitations_received(member)[0].id)
    [mount] = resolve(member, project, ["shared"])
    assert mount["mode"] == "ro"
    with pytest.raises(errors.VFolderPermissionError):
        resolve(member, project, ["shared"], mount_options={"shared": {"permission": "rw"}})


def test_asking_for_read_only_always_gives_read_only(owner, project, make_folder):
    make_folder(owner, "data")
    [mount] = resolve(owner, project, ["data"], mount_options={"data": {"permission": "ro"}})
    assert mount["mode"] == "ro"
    with pytest.raises(errors.InvalidAPIParameters):
        resolve(owner, project, ["data"], mount_options={"data": {"permission": "xx"}})


def test_a_folder_with_permission_ro_mounts_read_only_for_project_members(member, domain_admin, project, host):
    from vfolders import services

    services.create_folder(domain_admin, name="readonly", group=str(project.pk), permission="ro")
    [mount] = resolve(member, project, ["readonly"])
    assert mount["mode"] == "ro"


def test_dot_folders_are_mounted_automatically(owner, member, project, make_folder):
    make_folder(owner, "data")
    dot = make_folder(owner, ".local")
    make_folder(member, ".linuxbrew")  # someone else's
    mounts = resolve(owner, project, ["data"])
    assert [(m["name"], m["container_path"], m["mode"]) for m in mounts] == [
        ("data", "/home/work/data", "rw"), (".local", "/home/work/.local", "rw")]
    assert mounts[1]["host_path"] == str(dot.path)
    assert [m["name"] for m in resolve(owner, project, [".local"])] == [".local"]  # not twice


def test_a_project_dot_local_is_mounted_per_user(member, domain_admin, project, host):
    from vfolders import services

    folder = services.create_folder(domain_admin, name=".local", group=str(project.pk))
    [mount] = resolve(member, project, [])
    assert mount["host_path"] == str(folder.path / member.pk.hex)
    assert (folder.path / member.pk.hex).is_dir()


def test_a_subpath_mounts_a_directory_inside_the_folder(owner, project, make_folder):
    folder = make_folder(owner, "data")
    (folder.path / "models" / "v1").mkdir(parents=True)
    [mount] = resolve(owner, project, ["data/models/v1"], {"data/models/v1": "/models"})
    assert mount["host_path"] == str(folder.path / "models" / "v1") and mount["container_path"] == "/models"
    with pytest.raises(errors.BackendAIError) as missing:
        resolve(owner, project, ["data/nope"], {"data/nope": "/nope"})
    assert missing.value.status_code == 404
    with pytest.raises(errors.InvalidAPIParameters):
        resolve(owner, project, ["data/../../etc"])


def test_overlapping_mounts_are_refused(owner, project, make_folder):
    folder = make_folder(owner, "data")
    make_folder(owner, "other")
    (folder.path / "sub").mkdir()
    with pytest.raises(errors.InvalidAPIParameters):
        resolve(owner, project, ["data", "other"], {"data": "/x", "other": "/x/inner"})
    with pytest.raises(errors.InvalidAPIParameters):
        resolve(owner, project, ["data", "data/sub"], {"data": "/a", "data/sub": "/b"})


def test_unknown_foreign_and_trashed_folders_are_not_found(owner, outsider, project, make_folder):
    from vfolders import services

    foreign = make_folder(outsider, "theirs")
    make_folder(owner, "old")
    services.move_to_trash(owner, "old")
    for ref in ("nothing", foreign.id.hex, "theirs", "old"):
        with pytest.raises(errors.BackendAIError) as exc:
            resolve(owner, project, [ref])
        assert exc.value.status_code == 404, ref


def test_mounting_needs_the_mount_in_session_host_permission(owner, project, make_folder, host, defaults):
    from accounts.models import Domain, KeypairResourcePolicy

    make_folder(owner, "data")
    make_folder(owner, ".local")
    limited = ["create-vfolder", "upload-file", "download-file"]
    Domain.objects.filter(pk="default").update(allowed_vfolder_hosts={host.name: limited})
    KeypairResourcePolicy.objects.filter(pk="default").update(allowed_vfolder_hosts={host.name: limited})
    owner.refresh_from_db()
    with pytest.raises(errors.VFolderPermissionError):
        resolve(owner, project, ["data"])
    assert resolve(owner, project, []) == []  # dot-folders are skipped quietly
