"""``rescan_images`` runs as a background task: the mutation answers a task id at
once, the worker (``bgtasks.run``, as the Celery task calls it) reads the registry
one repository at a time, and ``/events/background-task`` shows its progress and
outcome.  Against Debian's ``docker-registry`` on 127.0.0.1, filled over the
Registry HTTP API (no Docker engine needed)."""
from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import socket
import subprocess
import time

import httpx
import pytest

from agents_gql_support import RESCAN, RESCAN_26, data_of
from backendai import bgtasks
from helpers import require

pytestmark = pytest.mark.django_db
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _upload_blob(url: str, repository: str, data: bytes) -> dict:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    start = httpx.post(f"{url}/v2/{repository}/blobs/uploads/", timeout=10)
    assert start.status_code == 202, start.text
    location = httpx.URL(url).join(start.headers["Location"])
    done = httpx.put(location.copy_merge_params({"digest": digest}), content=data, timeout=10,
                     headers={"Content-Type": "application/octet-stream"})
    assert done.status_code == 201, done.text
    return {"digest": digest, "size": len(data)}


def push_kernel_image(url: str, repository: str, tag: str) -> None:
    """A one-layer OCI image with the kernel labels, uploaded blob by blob."""
    layer = _upload_blob(url, repository, f"{repository}:{tag}".encode())
    config = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
              "config": {"Labels": {"ai.backend.kernelspec": "1", "ai.backend.service-ports": "web:http:8080"}}}
    config_desc = _upload_blob(url, repository, json.dumps(config).encode())
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "config": {"mediaType": CONFIG_TYPE, **config_desc},
                "layers": [{"mediaType": LAYER_TYPE, **layer}]}
    put = httpx.put(f"{url}/v2/{repository}/manifests/{tag}", content=json.dumps(manifest).encode(),
                    headers={"Content-Type": MANIFEST_TYPE}, timeout=10)
    assert put.status_code == 201, put.text


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """``docker-registry serve`` with two kernel images in two repositories."""
    require(shutil.which("docker-registry") is not None, "Debian's docker-registry (apt-get install docker-registry)")
    workdir = tmp_path_factory.mktemp("rescan-registry")
    host = f"127.0.0.1:{_free_port()}"
    config = {"version": 0.1, "log": {"level": "error", "accesslog": {"disabled": True}},
              "storage": {"filesystem": {"rootdirectory": str(workdir / "storage")}},
              "http": {"addr": host, "secret": secrets.token_hex(16)},
              "health": {"storagedriver": {"enabled": False}}}
    (workdir / "config.yml").write_text(json.dumps(config))
    log = open(workdir / "registry.log", "wb")
    process = subprocess.Popen(["docker-registry", "serve", str(workdir / "config.yml")], stdout=log,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://{host}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(url + "/v2/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, (workdir / "registry.log").read_text()
            time.sleep(0.1)
        push_kernel_image(url, "team/python", "3.12")
        push_kernel_image(url, "team/shell", "1.0")
        yield host, url
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def blocks_of(response) -> list[tuple[str, dict]]:
    from asgiref.sync import async_to_sync

    async def read(chunks):
        return [chunk async for chunk in chunks]

    text = b"".join(async_to_sync(read)(response.streaming_content)).decode()
    found = []
    for block in text.split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if lines:
            found.append((lines[0][7:], json.loads(lines[1][6:])))
    return found


def test_a_rescan_answers_a_task_id_and_its_stream_shows_each_repository(registry, superadmin, signed):
    from agents.models import ContainerRegistry, Image

    host, url = registry
    ContainerRegistry.objects.create(registry_name=host, url=url)
    api = signed(superadmin)
    answer = data_of(api.post("/admin/gql", {"query": RESCAN, "variables": {"registry": host}}))["rescan_images"]
    assert answer["ok"] is True and answer["task_id"]
    assert not Image.objects.exists()  # nothing ran yet: the worker does it
    assert bgtasks.run(answer["task_id"]) == "done"
    assert set(Image.objects.values_list("name", flat=True)) == {f"{host}/team/python:3.12", f"{host}/team/shell:1.0"}
    found = blocks_of(api.get(f"/events/background-task?task_id={answer['task_id']}"))
    assert [name for name, _ in found] == ["bgtask_updated", "bgtask_done", "server_close"]
    assert found[0][1]["current_progress"] == found[0][1]["total_progress"] == 2.0
    assert found[1][1] == {"task_id": answer["task_id"], "message": "2 image(s) from 1 registr(ies)"}
    assert ContainerRegistry.objects.get().last_scan_result.startswith("2 image(s)")


def test_a_project_narrows_the_rescan_to_its_repositories(registry, superadmin, signed):
    from agents.models import ContainerRegistry, Image

    host, url = registry
    ContainerRegistry.objects.create(registry_name=host, url=url, project="nothing-here")
    answer = data_of(signed(superadmin).post("/admin/gql", {
        "query": RESCAN.replace("$registry: String)", "$registry: String, $project: String)").replace(
            "registry:$registry)", "registry:$registry, project: $project)"),
        "variables": {"registry": host, "project": "team"}}))["rescan_images"]
    assert bgtasks.run(answer["task_id"]) == "done"
    assert Image.objects.count() == 2


def test_an_unreachable_registry_fails_the_task_with_the_reason(superadmin, signed):
    from agents.models import ContainerRegistry

    port = _free_port()  # nothing listens there
    ContainerRegistry.objects.create(registry_name=f"127.0.0.1:{port}", url=f"http://127.0.0.1:{port}")
    api = signed(superadmin)
    answer = data_of(api.post("/admin/gql", {"query": RESCAN, "variables": {"registry": None}}))["rescan_images"]
    assert bgtasks.run(answer["task_id"]) == "failed"
    found = blocks_of(api.get(f"/events/background-task?task_id={answer['task_id']}"))
    assert found[-2][0] == "bgtask_failed" and f"Cannot scan 127.0.0.1:{port}" in found[-2][1]["message"]


@pytest.mark.parametrize("document, variables", [(RESCAN, {"registry": None}),
                                                 (RESCAN_26, {"registry": None, "project": None})])
def test_with_no_registry_configured_the_rescan_finishes_with_nothing_to_scan(document, variables, superadmin,
                                                                              signed):
    from agents.models import Image

    api = signed(superadmin)
    response = api.post("/admin/gql", {"query": document, "variables": variables})
    assert response.status_code == 200 and "errors" not in response.json(), response.content
    answer = response.json()["data"]["rescan_images"]
    assert answer["ok"] is True and answer["task_id"]
    assert bgtasks.run(answer["task_id"]) == "done"
    found = blocks_of(api.get(f"/events/background-task?task_id={answer['task_id']}"))
    assert [name for name, _ in found][-2:] == ["bgtask_done", "server_close"]
    assert found[-2][1] == {"task_id": answer["task_id"],
                            "message": "No container registry is configured: nothing to scan"}
    assert not Image.objects.exists()


def test_with_no_registry_configured_the_rescan_is_still_the_superadmins_alone(domain_admin, owner, signed):
    from backendai.models import BackgroundTask

    for user in (domain_admin, owner):
        answer = signed(user).post("/admin/gql", {"query": RESCAN, "variables": {"registry": None}})
        assert answer.status_code == 403, answer.content
    assert not BackgroundTask.objects.exists()
