"""``POST /folders/{x}/clone``: the target folder at once, its files copied by a
background task (``backendai.bgtasks``) exactly and atomically; refusals (not
cloneable, no access, over quota, bad input) create nothing; a clone that fails
midway leaves no partial copy; the reconciler gives up clones whose worker died."""
from __future__ import annotations

import hashlib
import os
import stat
from datetime import timedelta

import pytest
from django.utils import timezone
from helpers import slug, tree_snapshot

pytestmark = pytest.mark.django_db

BODY = {"target_name": "copy", "target_host": "local:volume1", "usage_mode": "general", "permission": "rw"}


def tree(root) -> dict:
    """Every entry under ``root`` by relative path: kind, mode, size, mtime and content (links: their text)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            info = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat.S_ISLNK(info.st_mode):
                found[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                found[rel] = ("dir", stat.S_IMODE(info.st_mode), info.st_mtime_ns)
            elif not stat.S_ISREG(info.st_mode):
                found[rel] = ("other", stat.S_IFMT(info.st_mode))  # never opened: a pipe would block
            else:
                with open(path, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
                found[rel] = ("file", stat.S_IMODE(info.st_mode), info.st_size, info.st_mtime_ns, digest)
    return found


def fill(folder) -> None:
    root = folder.path
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "empty.txt").write_bytes(b"")
    (root / "a" / "big.bin").write_bytes(os.urandom(3 * 2**20 + 17))
    (root / "a" / "b" / "c" / "deep.txt").write_text("deep")
    script = root / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    (root / "readonly.txt").write_text("ro")
    (root / "readonly.txt").chmod(0o444)
    os.utime(root / "a" / "b" / "c" / "deep.txt", ns=(1_500_000_000_000_000_000, 1_500_000_000_000_000_000))
    (root / "host-file").symlink_to("/etc/passwd")
    (root / "relative").symlink_to("a/b/c/deep.txt")
    os.mkfifo(root / "pipe")


def cloneable(make_folder, user, name="src"):
    folder = make_folder(user, name, cloneable=True)
    fill(folder)
    return folder


def test_a_clone_copies_every_file_exactly_through_a_background_task(signed, owner, make_folder):
    from backendai import bgtasks
    from backendai.models import BackgroundTask
    from vfolders.models import VFolder

    source = cloneable(make_folder, owner)
    expected = {rel: entry for rel, entry in tree(source.path).items() if rel != "pipe"}
    response = signed(owner).post("/folders/src/clone", {**BODY, "usage_mode": "data", "permission": "ro"})
    assert response.status_code == 201, response.content
    body = response.json()
    target = VFolder.objects.get(name="copy")
    assert body == {"id": target.id.hex, "name": "copy", "host": "local:volume1", "usage_mode": "data",
                    "permission": "ro", "creator": owner.email, "ownership_type": "user", "user": str(owner.pk),
                    "group": None, "cloneable": False, "status": "cloning", "bgtask_id": body["bgtask_id"]}
    task = BackgroundTask.objects.get(pk=body["bgtask_id"])
    assert task.status == "pending" and task.owner_id == str(owner.pk)
    source.refresh_from_db()
    assert source.status == "cloning" and target.status == "cloning" and os.listdir(target.path) == []
    assert signed(owner).post("/folders/copy/request-upload", {"path": "x", "size": 1}).status_code == 400

    assert bgtasks.run(body["bgtask_id"]) == "done"
    task.refresh_from_db()
    assert task.message.startswith("Cloned 5 file(s)") and task.total_progress == task.current_progress > 3 * 2**20
    source.refresh_from_db()
    target.refresh_from_db()
    assert source.status == "ready" and target.status == "ready"
    assert [h["status"] for h in target.status_history] == ["cloning", "ready"]
    assert [h["status"] for h in source.status_history] == ["ready", "cloning", "ready"]
    assert tree(target.path) == expected  # the link to /etc/passwd stays a link; the pipe is left out
    assert not os.path.lexists(target.path.parent / f".{target.path.name}.cloning")
    listing = signed(owner).get("/folders/copy/files?path=.").json()
    assert "big.bin" not in str(listing) and "run.sh" in str(listing)


def test_an_invited_reader_clones_into_their_own_scope(signed, owner, member, make_folder):
    from backendai import bgtasks
    from vfolders import services
    from vfolders.models import VFolder

    source = cloneable(make_folder, owner)
    services.invite(owner, "src", "ro", [member.email])
    services.accept_invitation(member, services.invitations_received(member)[0].id)
    response = signed(member).post(f"/folders/{source.id.hex}/clone", {"target_name": "mine"})
    assert response.status_code == 201, response.content
    assert bgtasks.run(response.json()["bgtask_id"]) == "done"
    target = VFolder.objects.get(name="mine")
    assert target.user_id == member.pk and target.quota_scope_id == f"user:{member.pk}"
    assert (target.path / "a" / "b" / "c" / "deep.txt").read_text() == "deep"


@pytest.mark.parametrize("setup, body, status, error", [
    ("not-cloneable", {}, 403, "generic-forbidden"),
    ("trashed", {}, 404, "object-not-found"),
    (None, {"target_name": "src"}, 400, "vfolder-already-exists"),
    (None, {"target_name": ".bashrc"}, 400, "invalid-api-params"),
    (None, {"target_name": "bad/name"}, 400, "invalid-api-params"),
    (None, {"target_name": 7}, 400, "invalid-api-params"),
    (None, {"permission": "owner"}, 400, "invalid-api-params"),
    (None, {"target_host": "nope:none"}, 400, "invalid-api-params"),
    ("over-quota", {}, 412, "quota-exceeded"),
    ("folder-limit", {}, 412, "quota-exceeded"),
    ("already-cloning", {}, 400, "vfolder-operation-failed"),
])
def test_a_refused_clone_creates_nothing(signed, owner, superadmin, make_folder, vfroot, host, setup, body, status,
                                         error):
    from backendai.models import BackgroundTask
    from vfolders import services
    from vfolders.models import VFolder

    source = cloneable(make_folder, owner)
    if setup == "not-cloneable":
        services.update_options(owner, "src", cloneable=False)
    elif setup == "trashed":
        services.move_to_trash(owner, "src")
    elif setup == "over-quota":
        services.set_quota_scope(superadmin, host.name, f"user:{owner.pk}", 3 * 2**20)
    elif setup == "folder-limit":
        owner.resource_policy.max_vfolder_count = 1
        owner.resource_policy.save()
    elif setup == "already-cloning":
        services.start_clone(owner, "src", target_name="first")
    rows = sorted(VFolder.objects.values_list("id", "name", "status"))
    files = tree_snapshot(vfroot)
    tasks = BackgroundTask.objects.count()
    response = signed(owner).post(f"/folders/{source.id.hex}/clone", {**BODY, **body})
    assert response.status_code == status, response.content
    assert slug(response) == error
    assert sorted(VFolder.objects.values_list("id", "name", "status")) == rows
    assert tree_snapshot(vfroot) == files and BackgroundTask.objects.count() == tasks


def test_a_clone_out_of_quota_midway_fails_and_leaves_no_partial_copy(signed, owner, superadmin, make_folder, host):
    from backendai import bgtasks
    from backendai.models import BackgroundTask
    from vfolders import services

    source = cloneable(make_folder, owner)
    before = tree(source.path)
    target, _, task_id = services.start_clone(owner, "src", target_name="copy")
    services.set_quota_scope(superadmin, host.name, f"user:{owner.pk}", 4 * 2**20)  # room for 1 MiB more
    assert bgtasks.run(task_id) == "failed"
    task = BackgroundTask.objects.get(pk=task_id)
    assert "quota" in task.message
    source.refresh_from_db()
    target.refresh_from_db()
    assert source.status == "ready" and target.status == "error"
    assert os.listdir(target.path) == []
    assert not os.path.lexists(target.path.parent / f".{target.path.name}.cloning")
    assert tree(source.path) == before
    services.move_to_trash(owner, "copy")  # a failed target is deleted like any folder


def test_a_clone_cancelled_before_it_started_is_given_up_at_the_next_reconcile(owner, make_folder):
    from backendai import bgtasks
    from vfolders import services

    source = cloneable(make_folder, owner)
    target, _, task_id = services.start_clone(owner, "src", target_name="copy")
    assert bgtasks.cancel(task_id)
    assert bgtasks.run(task_id) is None  # cancelled before it started: the worker does nothing
    assert services.reconcile_clones() == 2  # without waiting for VFOLDER_CLONE_TIMEOUT
    source.refresh_from_db()
    target.refresh_from_db()
    assert source.status == "ready" and target.status == "error"


def test_a_clone_no_worker_took_is_given_up_once_the_task_reconciler_fails_it(owner, make_folder):
    from backendai import bgtasks
    from vfolders import services

    source = cloneable(make_folder, owner)
    target, _, _ = services.start_clone(owner, "src", target_name="copy")
    assert services.reconcile_clones() == 0
    assert bgtasks.reconcile(timezone.now() + timedelta(hours=1))["unclaimed"] == 1
    assert services.reconcile_clones() == 2
    source.refresh_from_db()
    target.refresh_from_db()
    assert source.status == "ready" and target.status == "error"


def test_an_old_failed_clone_does_not_touch_a_new_clone_of_the_same_source(owner, make_folder):
    from backendai import bgtasks
    from vfolders import services

    source = cloneable(make_folder, owner)
    _, _, first = services.start_clone(owner, "src", target_name="copy1")
    bgtasks.cancel(first)
    assert services.reconcile_clones() == 2
    target, _, _ = services.start_clone(owner, "src", target_name="copy2")
    assert services.reconcile_clones() == 0
    source.refresh_from_db()
    target.refresh_from_db()
    assert source.status == "cloning" and target.status == "cloning"


def test_the_reconciler_gives_up_clones_whose_worker_died(owner, make_folder):
    from vfolders import services
    from vfolders.models import VFolder

    source = cloneable(make_folder, owner)
    target, _, _ = services.start_clone(owner, "src", target_name="copy")
    assert services.reconcile_clones() == 0  # not stuck yet
    VFolder.objects.filter(pk__in=[source.pk, target.pk]).update(
        status_changed=timezone.now() - timedelta(days=1))
    assert services.reconcile_clones() == 2
    source.refresh_from_db()
    target.refresh_from_db()
    assert source.status == "ready" and target.status == "error"
    assert not any(target.path.iterdir())  # the proxy publishes a copy only whole
    assert services.run_clone(target.pk, source.pk) == {"bytes": 0, "files": 0}  # a late worker does nothing
