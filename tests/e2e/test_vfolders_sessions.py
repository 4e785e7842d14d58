"""Folders inside sessions, with real processes (daphne, a Celery worker, a Docker
agent): a batch session writes into a mounted folder and the owner downloads the
file; a colleague who accepted a read-only invitation mounts it read-only and
cannot write; dot-folders come along by themselves."""
from __future__ import annotations

import json

import httpx
import pytest

from backendai.signing import signed_headers

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

BATCH = {"image": "bai-test/batch:1.0", "type": "batch", "enqueueOnly": True,
         "config": {"resources": {"cpu": "0.25", "mem": "128m"}}}


@pytest.fixture
def storage(live_stack):
    """The default host on the run's storage proxy: agents mount the volume path it reports."""
    from vfolders import services

    return services.ensure_default_storage_host().root



def api(live_stack, keypair, method, target, body=None):
    headers = signed_headers(keypair.access_key, keypair.secret_key, method, target, live_stack.host,
                             content_type="application/json" if body is not None else "text/plain")
    return httpx.request(method, live_stack.url + target, headers=headers,
                         content=json.dumps(body) if body is not None else None, timeout=90)


def run_batch(live_stack, keypair, name, command, mounts, **config):
    from sessions.models import Session

    body = {**BATCH, "name": name, "startupCommand": command,
            "config": {**BATCH["config"], "mounts": mounts, **config}}
    created = api(live_stack, keypair, "POST", "/session", body)
    assert created.status_code == 201, created.text
    return live_stack.wait_for(lambda: Session.objects.filter(name=name, status="TERMINATED").first(),
                               timeout=90, what=f"the batch session {name}")


def test_a_batch_session_writes_into_a_mounted_folder_and_the_owner_downloads_it(
        live_stack, storage, docker_node, owner, member, settings):
    from vfolders import services

    folder = services.create_folder(owner, name="results")
    services.create_folder(owner, name=".local")
    done = run_batch(live_stack, owner.main_keypair, "writer",
                     "/bin/sh -c 'echo written-by-a-session > /home/work/results/out.txt "
                     "&& test -d /home/work/.local'", ["results"])
    assert done.result == "success", (done.status_info, done.status_data, live_stack.log(docker_node))
    assert [m["container_path"] for m in done.vfolder_mounts] == ["/home/work/results", "/home/work/.local"]
    assert (folder.path / "out.txt").read_text() == "written-by-a-session\n"

    ticket = api(live_stack, owner.main_keypair, "POST", "/folders/results/request-download", {"path": "out.txt"})
    assert ticket.status_code == 200, ticket.text
    url = ticket.json()["url"]
    assert url == settings.STORAGE_PROXY_CLIENT_URL + "/download"  # the bytes come from the storage proxy
    downloaded = httpx.get(url, params={"token": ticket.json()["token"]}, timeout=30)
    assert downloaded.status_code == 200 and downloaded.headers["Content-Length"] == "21"
    assert downloaded.content == b"written-by-a-session\n"


def test_a_read_only_mount_cannot_be_written(live_stack, storage, docker_node, owner, member):
    from vfolders import services

    folder = services.create_folder(owner, name="reference")
    (folder.path / "readme.txt").write_text("read me\n")
    services.invite(owner, "reference", "ro", [member.email])
    services.accept_invitation(member, services.invitations_received(member)[0].id)

    reader = run_batch(live_stack, member.main_keypair, "reader", "/bin/sh -c 'cat /home/work/reference/readme.txt'",
                       ["reference"])
    assert reader.result == "success", (reader.status_info, reader.status_data)
    assert reader.vfolder_mounts[0]["mode"] == "ro"

    writer = run_batch(live_stack, member.main_keypair, "ro-writer",
                       "/bin/sh -c 'echo nope > /home/work/reference/evil.txt'", ["reference"])
    assert writer.result == "failure"
    assert not (folder.path / "evil.txt").exists()

    refused = api(live_stack, member.main_keypair, "POST", "/session",
                  {**BATCH, "name": "wants-rw", "startupCommand": "/bin/true",
                   "config": {**BATCH["config"], "mounts": ["reference"],
                              "mount_options": {"reference": {"permission": "rw"}}}})
    assert refused.status_code == 400 and refused.json()["type"].endswith("/vfolder-permission-error")
