"""Committing a session end to end: a real daphne, Celery worker and Docker agent daemon. The
official client 23.9.10 commits a running ``bai-test/shell:1.0`` session (``backend.ai session
commit``), its SDK follows the background task's events (``bgtask_updated`` ... ``bgtask_done``),
a new session starts from the committed image and finds the file written before the commit; the
24.9.14 client's ``session convert-to-image`` (``/imagify``) follows its own progress to the end and
the 26.9.6 client's ``session commit`` works too."""
from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from agents.models import Image
from backendai.models import BackgroundTask
from backendai.signing import signed_headers
from sessions.models import Session

from .conftest import _official_client
from .test_terminal_e2e import running_session

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]

FOLLOW = """
import asyncio, json
from ai.backend.client.session import AsyncSession

async def main():
    events = []
    async with AsyncSession() as api:
        async with api.BackgroundTask(%r).listen_events() as response:
            async for ev in response:
                events.append([ev.event, json.loads(ev.data)])
                if ev.event in ("bgtask_done", "bgtask_failed", "bgtask_cancelled"):
                    break
    print(json.dumps(events))

asyncio.run(main())
"""


@pytest.fixture
def committed_images(docker_client):
    names: list[str] = []
    yield names
    for name in reversed(names):  # the newest first: it may be built on an older one
        try:
            for container in docker_client.containers.list(all=True, filters={"ancestor": name}):
                container.remove(force=True, v=True)
            docker_client.images.remove(name, force=True)
        except Exception:  # noqa: BLE001 - never made
            pass


def signed_get(live_stack, user, path):
    keypair = user.main_keypair
    headers = signed_headers(keypair.access_key, keypair.secret_key, "GET", path, live_stack.host)
    return httpx.get(live_stack.url + path, headers=headers, timeout=30)


def test_the_official_client_commits_a_session_and_a_new_session_from_the_image_has_its_files(
        live_stack, docker_node, owner, stack_client, docker_client, committed_images, tmp_path):
    source = running_session(live_stack, owner, "commit-src")
    container = docker_client.containers.get(source.kernels.get().container_id)
    assert container.exec_run(["sh", "-c", "echo written-before-commit > /home/work/kept.txt"]).exit_code == 0

    done = stack_client.cli(owner.main_keypair, "session", "commit", "commit-src")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Request to commit" in done.stdout + done.stderr
    status = signed_get(live_stack, owner, "/session/commit-src/commit").json()
    assert status["status"] in ("ongoing", "done"), status
    task_id, image = status["task_id"], status["image"]
    committed_images.append(image)

    events = stack_client.script_json(owner.main_keypair, FOLLOW % task_id)
    names = [name for name, _ in events]
    assert names[-1] == "bgtask_done", events
    assert "bgtask_updated" in names
    assert image in events[-1][1]["message"]
    task = BackgroundTask.objects.get(pk=task_id)
    assert (task.status, task.current_progress, task.total_progress) == ("done", 4, 4)
    assert signed_get(live_stack, owner, f"/session/{source.pk}/commit").json()["status"] == "done"

    recorded = Image.objects.get(name=image)
    assert recorded.is_local and recorded.labels["ai.backend.customized-image.owner"] == f"user:{owner.pk}"
    assert recorded.agents.filter(pk=docker_node).exists()
    assert docker_client.images.get(image).id == recorded.config_digest

    copy = running_session(live_stack, owner, "from-commit", image=image)
    assert copy.image == image
    new_container = docker_client.containers.get(copy.kernels.get().container_id)
    out = new_container.exec_run(["cat", "/home/work/kept.txt"])
    assert (out.exit_code, out.output) == (0, b"written-before-commit\n")
    live_stack.wait_for(lambda: Image.objects.filter(name=image, agents__pk=docker_node).exists(),
                        what="the agent's sync to keep the committed image")
    assert Image.objects.filter(name=image).count() == 1

    client24 = ROOT / ".venv-client-24" / "bin" / "backend.ai"
    (tmp_path / "c24").mkdir()
    cli24 = _official_client(client24, lambda ok, what: None if ok else pytest.fail(what), live_stack.url,
                             tmp_path / "c24")
    done = cli24.cli(owner.main_keypair, "session", "convert-to-image", "from-commit", "my/env")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Session export process completed." in done.stdout + done.stderr
    status = signed_get(live_stack, owner, "/session/from-commit/commit").json()
    committed_images.append(status["image"])
    assert status["status"] == "done" and status["image"].startswith("my/env:"), status
    assert Image.objects.filter(name=status["image"]).exists()

    client26 = ROOT / ".venv-client-26" / "bin" / "backend.ai"
    (tmp_path / "c26").mkdir()
    cli26 = _official_client(client26, lambda ok, what: None if ok else pytest.fail(what), live_stack.url,
                             tmp_path / "c26")
    done = cli26.cli(owner.main_keypair, "session", "commit", "commit-src")
    assert done.returncode == 0 and "Request to commit" in done.stdout + done.stderr, done.stdout + done.stderr
    status = signed_get(live_stack, owner, "/session/commit-src/commit").json()
    committed_images.append(status["image"])
    assert status["image"] != image
    live_stack.wait_for(lambda: BackgroundTask.objects.filter(pk=status["task_id"], status="done").exists(),
                        what="the 26.09 client's commit")
    assert Session.objects.filter(name="commit-src", status="RUNNING").exists()  # a commit leaves it running
