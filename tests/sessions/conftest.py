"""Shared by the session tests: a scaling group with one agent and one image, and
the official client's ``POST /session`` body."""
import pytest
from django.utils import timezone

from agents import services as agent_services
from agents.models import Agent, Image, ImageAlias
from helpers import client_body


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
