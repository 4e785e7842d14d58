"""The official ``backend.ai-client`` (23.9.10) drives folders end to end against
a live server: list-hosts, create, upload (tus PATCH), download (byte-identical,
into a clean directory), ls, mkdir, rm, info, delete, and ``vfolder list``
(GraphQL ``vfolder_list`` on /admin/gql)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TIMEOUT = 120


@pytest.fixture(autouse=True)
def storage_host(settings, tmp_path, db):
    from vfolders import services

    settings.VFOLDER_ROOT = tmp_path / "vfroot"
    return services.ensure_default_storage_host()


@pytest.fixture
def run_cli(official_client, client_bin, live_server, tmp_path):
    """The CLI in a directory of our choice and with stdin, in the same clean
    environment as the ``official_client`` fixture (which already checked it exists)."""
    home = tmp_path / "cli-home"
    home.mkdir()

    def run(keypair, *args, cwd, stdin=""):
        env = {
            "PATH": f"{client_bin.parent}{os.pathsep}/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "BACKEND_ENDPOINT": live_server.url.rstrip("/"),
            "BACKEND_ACCESS_KEY": keypair.access_key,
            "BACKEND_SECRET_KEY": keypair.secret_key,
            "BACKEND_ENDPOINT_TYPE": "api",
        }
        return subprocess.run([str(client_bin), *args], cwd=cwd, env=env, input=stdin, capture_output=True,
                              text=True, timeout=TIMEOUT)

    return run


def ok(done):
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout + done.stderr


def test_the_cli_creates_fills_lists_empties_and_deletes_a_folder(make_user, official_client, run_cli, tmp_path):
    from vfolders.models import VFolder

    user = make_user("cli-folders@example.com")
    keypair = user.main_keypair

    hosts = ok(official_client.cli(keypair, "vfolder", "list-hosts"))
    assert "Default vfolder host: local:volume1" in hosts and "Usable hosts: local:volume1" in hosts

    created = ok(official_client.cli(keypair, "vfolder", "create", "clidata", "local:volume1"))
    assert 'Virtual folder "clidata" is created.' in created
    folder = VFolder.objects.get(name="clidata")

    # more than one 16 MiB tus chunk, and an odd size
    source = tmp_path / "src"
    source.mkdir()
    payload = os.urandom(17 * 2**20 + 4321)
    (source / "payload.bin").write_bytes(payload)
    ok(run_cli(keypair, "vfolder", "upload", "clidata", "payload.bin", cwd=source))
    assert (folder.path / "payload.bin").read_bytes() == payload

    info = ok(official_client.cli(keypair, "vfolder", "info", "clidata"))
    assert f"(ID: {folder.id.hex})" in info and "- Number of files: 1" in info

    listing = ok(official_client.cli(keypair, "vfolder", "ls", "clidata"))
    assert "payload.bin" in listing and str(len(payload)) in listing

    made = ok(official_client.cli(keypair, "vfolder", "mkdir", "clidata", "results"))
    assert "Done." in made and (folder.path / "results").is_dir()

    target = tmp_path / "clean-download-dir"
    target.mkdir()
    ok(run_cli(keypair, "vfolder", "download", "clidata", "payload.bin", cwd=target))
    downloaded = (target / "payload.bin").read_bytes()
    assert hashlib.sha256(downloaded).hexdigest() == hashlib.sha256(payload).hexdigest()

    removed = ok(run_cli(keypair, "vfolder", "rm", "clidata", "payload.bin", cwd=target, stdin="y\n"))
    assert "Done." in removed and not (folder.path / "payload.bin").exists()
    assert "payload.bin" not in ok(official_client.cli(keypair, "vfolder", "ls", "clidata"))

    deleted = ok(official_client.cli(keypair, "vfolder", "delete", "clidata"))
    assert "Deleted." in deleted
    folder.refresh_from_db()
    assert folder.status == "delete-pending"


def test_the_cli_uploads_an_empty_file_and_reports_a_missing_folder(make_user, official_client, run_cli,
                                                                     tmp_path):
    from vfolders import services

    user = make_user("cli-empty@example.com")
    folder = services.create_folder(user, name="emptyfiles")
    source = tmp_path / "src"
    source.mkdir()
    (source / "empty.txt").write_bytes(b"")
    ok(run_cli(user.main_keypair, "vfolder", "upload", "emptyfiles", "empty.txt", cwd=source))
    assert (folder.path / "empty.txt").read_bytes() == b""
    missing = official_client.cli(user.main_keypair, "vfolder", "ls", "no-such-folder")
    assert "404" in missing.stdout + missing.stderr


def test_vfolder_list_through_graphql_admin_gql(make_user, official_client):
    """Needs ``vfolder_list`` on /admin/gql (backendai/api/graphql.py wires vfolders.gql)."""
    from vfolders import services

    user = make_user("cli-list@example.com")
    for name in ("alpha", "beta"):
        services.create_folder(user, name=name)
    done = official_client.cli(user.main_keypair, "--output", "json", "vfolder", "list")
    ok(done)
    body = json.loads(done.stdout[done.stdout.index("{"):])  # after the client's APIVersionWarning line
    assert body["total_count"] == 2
    assert sorted(item["name"] for item in body["items"]) == ["alpha", "beta"]
    assert {item["status"] for item in body["items"]} == {"ready"}
    assert {item["host"] for item in body["items"]} == {"local:volume1"}
    table = ok(official_client.cli(user.main_keypair, "vfolder", "list"))
    assert "alpha" in table and "beta" in table
