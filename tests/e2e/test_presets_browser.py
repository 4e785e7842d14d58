"""The session create form in a real browser: choosing a preset fills the amount fields
with its slots (static/sessions/presets.js), typing an amount switches back to Custom,
and the session created with a preset gets the preset's slots."""
from __future__ import annotations

import re

import pytest
from django.urls import reverse
from django.utils import timezone

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

try:
    from playwright.sync_api import expect
except ImportError:  # the ``browser`` fixture reports it through require()
    expect = None

IMAGE = "cr.example.com/stable/python:3.11"
GIB = 2**30


@pytest.fixture
def form_world(make_user):
    from agents import services as agent_services
    from agents.models import Agent, Image
    from sessions.models import ResourcePreset

    group = agent_services.ensure_default_scaling_group()
    Image.objects.create(name=IMAGE, registry_name="cr.example.com", repository="stable/python", tag="3.11",
                         architecture="x86_64",
                         resources={"cpu": {"min": "1", "max": None}, "mem": {"min": str(256 * 2**20), "max": None}})
    Agent.objects.create(id="node-1", scaling_group=group, available_slots={"cpu": "8", "mem": str(16 * GIB)},
                         last_heartbeat=timezone.now())
    ResourcePreset.objects.create(name="small", resource_slots={"cpu": "1", "mem": str(GIB)})
    ResourcePreset.objects.create(name="medium", resource_slots={"cpu": "2", "mem": str(4 * GIB)},
                                  shared_memory=64 * 2**20)
    return make_user("form-user@example.com")


def test_choosing_a_preset_fills_the_amounts_and_typing_one_switches_to_custom(page, login, form_world):
    from sessions.models import Session

    login(form_world)
    page.goto(reverse("ui-sessions:create"))
    cpu, mem = page.locator('input[name="slot_cpu"]'), page.locator('input[name="slot_mem"]')

    page.click('label[data-preset="medium"]')
    expect(cpu).to_have_value("2")
    expect(mem).to_have_value("4g")
    page.click('label[data-preset="small"]')
    expect(cpu).to_have_value("1")
    expect(mem).to_have_value("1g")

    cpu.fill("3")
    expect(page.locator("#preset-custom")).to_be_checked()
    page.click('label[data-preset="medium"]')
    expect(cpu).to_have_value("2")

    page.select_option('select[name="image"]', IMAGE)
    page.fill('input[name="name"]', "from-preset")
    page.click("#create-submit")
    page.wait_for_url(re.compile(r".*/ui/sessions/[0-9a-f-]{36}/$"))
    session = Session.objects.get(name="from-preset")
    assert session.requested_slots == {"cpu": "2", "mem": str(4 * GIB)}
