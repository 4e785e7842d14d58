"""Shared by the session tests: a scaling group with one agent and one image, and
the official client's ``POST /session`` body."""
import json

import pytest
from django.utils import timezone

from agents import services as agent_services
from agents.models import Agent, Image, ImageAlias

CLIENT_BODY = {
    "tag": "t1", "name": "mysess01",
    "config": {"mounts": [], "environ": {"FOO": "bar"}, "resources": {"cpu": "1", "mem": "1g"}, "resource_opts": {},
               "scalingGroup": None, "mount_map": {}, "preopen_ports": None},
    "dependencies": [], "callback_url": None, "architecture": "x86_64", "clusterSize": 1, "clusterMode": "single-node",
    "starts_at": None, "bootstrap_script": None, "owner_access_key": None, "domain": "default", "group": "default",
    "type": "interactive", "enqueueOnly": True, "maxWaitSeconds": 0, "reuseIfExists": True, "startupCommand": None,
    "image": "bai-test/http:1.0",
}


def client_body(**overrides) -> dict:
    """The client's body with ``overrides`` (``config.<key>`` for keys inside ``config``)."""
    data = json.loads(json.dumps(CLIENT_BODY))
    for key, value in overrides.items():
        if key.startswith("config.") and isinstance(data.get("config"), dict):
            data["config"][key[7:]] = value
        else:
            data[key] = value
    return data


@pytest.fixture
def create_body():
    return client_body


@pytest.fixture
def cluster(defaults):
    group = agent_services.ensure_default_scaling_group()
    image = Image.objects.create(
        name="bai-test/http:1.0", repository="bai-test/http", tag="1.0", architecture="x86_64", is_local=True,
        labels={"ai.backend.service-ports": "web:http:8080"},
        resources={"cpu": {"min": "0.1", "max": None}, "mem": {"min": str(32 * 2**20), "max": "4294967296"}},
        service_ports=[{"name": "web", "protocol": "http", "container_ports": [8080]}])
    ImageAlias.objects.create(alias="http", image=image)
    Agent.objects.create(id="node-1", scaling_group=group, available_slots={"cpu": "4", "mem": "8589934592"},
                         last_heartbeat=timezone.now())
    return group, image
