"""The official ``backend.ai-client`` (23.9.10) drives the folder and storage
commands that need GraphQL or a background task: ``vfolder clone`` (a real
Celery worker copies the files while the CLI follows ``/events/background-task``),
``vfolder list-own|list-invited|list-project`` and ``admin storage list|info``."""
from __future__ import annotations

import hashlib
import json
import os

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def vfroot(tmp_path):
    return tmp_path / "vfroot"


@pytest.fixture
def live_stack_env(vfroot):
    """The stack's processes (the worker copies the files) share this test's folder root."""
    return {"VFOLDER_ROOT": str(vfroot)}


@pytest.fixture
def storage_host(settings, vfroot, transactional_db):
    from vfolders import services

    settings.VFOLDER_ROOT = vfroot
    return services.ensure_default_storage_host()


def ok(done):
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout + done.stderr


def as_json(done) -> dict:
    out = ok(done)
    return json.loads(done.stdout[done.stdout.index("{"):]) if "{" in done.stdout else json.loads(out)


def digest_tree(root) -> dict:
    found = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, root)] = hashlib.sha256(handle.read()).hexdigest()
    return found


def test_the_cli_clones_a_folder_and_follows_the_background_task(live_stack, stack_client, storage_host,
                                                                 make_user):
    from vfolders import services
    from vfolders.models import VFolder

    user = make_user("cli-clone@example.com")
    source = services.create_folder(user, name="clonesrc", cloneable=True)
    (source.path / "nested" / "deeper").mkdir(parents=True)
    (source.path / "nested" / "deeper" / "data.bin").write_bytes(os.urandom(5 * 2**20 + 3))
    (source.path / "readme.txt").write_text("hello clone")
    services.create_folder(user, name="plain")

    output = ok(stack_client.cli(user.main_keypair, "vfolder", "clone", "clonesrc", "clonedst", "local:volume1"))
    assert "Cloning the vfolder is complete." in output and "Error during the operation" not in output
    target = VFolder.objects.get(name="clonedst")
    live_stack.wait_for(lambda: VFolder.objects.get(pk=target.pk).status == "ready", what="the clone to finish")
    assert digest_tree(target.path) == digest_tree(source.path) and len(digest_tree(target.path)) == 2
    assert VFolder.objects.get(pk=source.pk).status == "ready"

    refused = ok(stack_client.cli(user.main_keypair, "vfolder", "clone", "plain", "nope", "local:volume1"))
    assert "Clone is not allowed for this virtual folder." in refused
    assert not VFolder.objects.filter(name="nope").exists()


def test_the_cli_lists_folders_by_kind_and_storage_volumes(official_client, storage_host, make_user, defaults):
    from accounts.models import UserRole
    from vfolders import services

    owner = make_user("cli-owner@example.com")
    guest = make_user("cli-guest@example.com")
    root = make_user("cli-root@example.com", role=UserRole.SUPERADMIN)
    services.create_folder(owner, name="ownfolder")
    services.create_folder(owner, name="lentfolder")
    services.invite(owner, "lentfolder", "ro", [guest.email])
    services.accept_invitation(guest, services.invitations_received(guest)[0].id)
    services.create_folder(root, name="teamfolder", group=str(defaults.project.pk))

    invited = as_json(official_client.cli(guest.main_keypair, "--output", "json", "vfolder", "list-invited"))
    assert invited["total_count"] == 1 and [i["name"] for i in invited["items"]] == ["lentfolder"]
    assert invited["items"][0]["permission"] == "ro"
    own = as_json(official_client.cli(owner.main_keypair, "--output", "json", "vfolder", "list-own"))
    assert sorted(i["name"] for i in own["items"]) == ["lentfolder", "ownfolder"] and own["total_count"] == 2
    project = as_json(official_client.cli(guest.main_keypair, "--output", "json", "vfolder", "list-project"))
    assert [i["name"] for i in project["items"]] == ["teamfolder"]
    table = ok(official_client.cli(guest.main_keypair, "vfolder", "list-invited"))
    assert "lentfolder" in table

    volumes = as_json(official_client.cli(root.main_keypair, "--output", "json", "admin", "storage", "list"))
    assert volumes["total_count"] == 1
    assert volumes["items"][0]["id"] == "local:volume1" and volumes["items"][0]["backend"] == "vfs"
    info = as_json(official_client.cli(root.main_keypair, "--output", "json", "admin", "storage", "info",
                                       "local:volume1"))
    assert info["items"][0]["id"] == "local:volume1" and info["items"][0]["path"] == str(storage_host.root)
    table = ok(official_client.cli(root.main_keypair, "admin", "storage", "list"))
    assert "local:volume1" in table and "vfs" in table

    denied = official_client.cli(owner.main_keypair, "admin", "storage", "list")
    assert denied.returncode != 0 and "403" in denied.stdout + denied.stderr
