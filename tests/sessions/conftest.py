"""Shared by the session tests: a scaling group with one agent and one image, and
the official client's ``POST /session`` body."""
import pytest

from agents import services as agent_services
from agents.models import ImageAlias
from helpers import client_body, seed_http_image_and_agent


@pytest.fixture
def create_body():
    return client_body


@pytest.fixture
def cluster(defaults):
    group = agent_services.ensure_default_scaling_group()
    image, _ = seed_http_image_and_agent(group)
    ImageAlias.objects.create(alias="http", image=image)
    return group, image
