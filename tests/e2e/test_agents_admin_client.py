"""The official client 23.9.10's ``admin scaling-group``, ``admin image`` and
``admin agent`` commands against a live server (``--output json``): the
scaling-group round trip, image list/alias/dealias, agent info; and ``admin image
rescan`` against the real-process stack, whose worker runs the background task
while the CLI follows ``/events/background-task`` to "Finished registry scanning"."""
from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def cli_json(client, keypair, *args):
    done = client.cli(keypair, "--output", "json", *args)
    assert done.returncode == 0, f"{args}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    start = done.stdout.find("{")  # the CLI's JSON (indented), after anything printed before it
    assert start >= 0, f"{args}: no JSON\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return json.JSONDecoder().raw_decode(done.stdout[start:])[0]


@pytest.fixture
def root(make_user):
    from accounts.models import UserRole
    from agents import services

    services.ensure_default_scaling_group()
    return make_user("root@example.com", role=UserRole.SUPERADMIN).main_keypair


def test_the_scaling_group_commands_round_trip(root, official_client):
    added = cli_json(official_client, root, "admin", "scaling-group", "add", "gpu", "--desc", "GPUs",
                     "--scheduler", "drf", "--wsproxy-api-token", "tok-secret-123")
    assert added["ok"] is True and added["scaling_group"] == {"name": "gpu"}
    info = cli_json(official_client, root, "admin", "scaling-group", "info", "gpu")
    (item,) = info["items"]
    assert item["description"] == "GPUs" and item["scheduler"] == "drf" and item["wsproxy_api_token"] == "********"
    updated = cli_json(official_client, root, "admin", "scaling-group", "update", "gpu", "--private", "true")
    assert updated["ok"] is True
    listed = cli_json(official_client, root, "admin", "scaling-group", "list")
    assert {i["name"]: i["is_public"] for i in listed["items"]}["gpu"] is False
    associated = cli_json(official_client, root, "admin", "scaling-group", "associate-scaling-group", "gpu",
                          "default")
    assert associated["ok"] is True
    dissociated = cli_json(official_client, root, "admin", "scaling-group", "dissociate-scaling-group", "gpu",
                           "default")
    assert dissociated["ok"] is True
    deleted = cli_json(official_client, root, "admin", "scaling-group", "delete", "gpu")
    assert deleted["ok"] is True
    from agents.models import ScalingGroup

    assert not ScalingGroup.objects.filter(pk="gpu").exists()


def test_a_user_is_refused_scaling_group_add_with_the_reason(make_user, official_client):
    user = make_user("plain@example.com").main_keypair
    done = official_client.cli(user, "--output", "json", "admin", "scaling-group", "add", "mine")
    assert done.returncode != 0
    assert "Only superadmins" in done.stdout + done.stderr


def test_image_list_alias_dealias_and_agent_info(root, official_client):
    from agents.models import Agent, Image, ScalingGroup

    Image.objects.create(name="bai-test/http:1.0", repository="bai-test/http", tag="1.0", is_local=True)
    Agent.objects.create(id="node-9", scaling_group=ScalingGroup.objects.get(pk="default"),
                         available_slots={"cpu": "4", "mem": "8589934592"},
                         live_stat={"cpu_util": "50.0", "mem_used": "1073741824"})
    done = official_client.cli(root, "admin", "image", "alias", "web", "bai-test/http:1.0")
    assert done.returncode == 0 and "An alias has created" in done.stdout + done.stderr, done.stderr
    listed = cli_json(official_client, root, "admin", "image", "list")
    assert [i["aliases"] for i in listed["items"] if i["name"] == "bai-test/http"] == [["web"]]
    done = official_client.cli(root, "admin", "image", "dealias", "web")
    assert done.returncode == 0 and "The alias has been removed" in done.stdout + done.stderr, done.stderr
    info = cli_json(official_client, root, "admin", "agent", "info", "node-9")
    (item,) = info["items"]
    assert item["id"] == "node-9" and item["available_slots"] == {"cpu": "4", "mem": "8589934592"}
    assert "cpu_util: 12.50 %" in item["live_stat"]


def test_admin_image_rescan_follows_the_background_task_to_its_end(live_stack, cluster, stack_client, make_user):
    """With none configured the task finishes at once with nothing to scan (as the real
    manager's); when no registry answers at the configured address the worker's task
    fails, and the CLI prints the reason it read from ``bgtask_failed``."""
    from accounts.models import UserRole
    from agents.models import ContainerRegistry

    root = make_user("rescan@example.com", role=UserRole.SUPERADMIN).main_keypair
    done = stack_client.cli(root, "admin", "image", "rescan")
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "Finished registry scanning" in output, output
    ContainerRegistry.objects.create(registry_name="127.0.0.1:9", url="http://127.0.0.1:9")
    done = stack_client.cli(root, "admin", "image", "rescan", "-r", "127.0.0.1:9")
    output = done.stdout + done.stderr
    assert "Started updating the image metadata" in output, output
    assert "Error occurred: Cannot scan 127.0.0.1:9" in output, output
    from backendai.models import BackgroundTask

    assert BackgroundTask.objects.filter(name="rescan_images", status="failed").count() == 1
