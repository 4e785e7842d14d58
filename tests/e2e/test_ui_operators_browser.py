"""An operator in a real browser: the agents page (gauges, live status, drain), the image
catalogue, maintenance and usage pages, and a keypair policy edited in the admin's human
form (CPU cores as a number, not JSON) whose new limit the next session create meets."""
from __future__ import annotations

import re

import pytest
from django.urls import reverse
from django.utils import timezone
from ui_support import audit, expect

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

GIB = 2**30
IMAGE = "bai/shell:1.0"


@pytest.fixture
def operator_world(make_user):
    from accounts.models import UserRole
    from agents import services as agent_services
    from agents.models import Agent, Image

    group = agent_services.ensure_default_scaling_group()
    Image.objects.create(name=IMAGE, repository="bai/shell", tag="1.0", is_local=True,
                         resources={"cpu": {"min": "1", "max": "16"}, "mem": {"min": str(256 * 2**20), "max": None}})
    Agent.objects.create(id="node-1", scaling_group=group, available_slots={"cpu": "16", "mem": str(64 * GIB)},
                         occupied_slots={"cpu": "4", "mem": str(8 * GIB)}, last_heartbeat=timezone.now(),
                         addr="10.0.0.5")
    operator = make_user("operator@example.com", role=UserRole.SUPERADMIN)
    scientist = make_user("scientist@example.com")
    return operator, scientist


def test_an_operator_edits_a_keypair_policy_in_the_human_form_and_the_limit_is_enforced(page, login, operator_world):
    from accounts.models import Keypair, KeypairResourcePolicy
    from agents.models import Agent
    from backendai.api import errors
    from sessions.enqueue import EnqueueRequest, enqueue

    operator, scientist = operator_world
    login(operator)

    page.goto(reverse("ui-operators:agents"))
    row = page.locator('tr[data-agent="node-1"]')
    expect(row).to_contain_text("4 of 16")
    expect(row).to_contain_text("8 GiB of 64 GiB")
    audit(page, "operators-agents")
    row.get_by_role("checkbox").check()
    page.wait_for_timeout(5500)  # one live refresh of the rows: the selection survives it
    expect(row.get_by_role("checkbox")).to_be_checked()
    page.select_option("#id_action", "drain")
    page.get_by_role("button", name="Apply to the selected agents").click()
    expect(page.locator(".messages")).to_contain_text("Draining 1 agent(s)")
    expect(page.locator('tr[data-agent="node-1"]')).to_contain_text("draining")
    assert not Agent.objects.get(pk="node-1").schedulable
    page.select_option("#id_action", "schedulable")
    page.locator('tr[data-agent="node-1"]').get_by_role("checkbox").check()
    page.get_by_role("button", name="Apply to the selected agents").click()
    expect(page.locator(".messages")).to_contain_text("1 agent(s) schedulable")
    assert Agent.objects.get(pk="node-1").schedulable

    page.locator("header").get_by_role("link", name="Images", exact=True).click()
    expect(page.locator('tr[data-image="bai/shell:1.0"]')).to_contain_text("cpu 1 – 16")
    audit(page, "operators-images")
    page.locator("header").get_by_role("link", name="Maintenance", exact=True).click()
    expect(page.locator("#stuck-table")).to_contain_text("Nothing is stuck.")
    audit(page, "operators-maintenance")
    page.get_by_role("button", name="Recalculate usage").click()
    expect(page.locator(".messages")).to_contain_text("Usage recalculated")
    page.locator("header").get_by_role("link", name="Usage", exact=True).click()
    expect(page.locator("#usage-table")).to_be_visible()
    audit(page, "operators-usage")

    # the scientist's keypair policy ("default"): at most 2 CPU cores in the human form
    page.goto("/admin/accounts/keypairresourcepolicy/default/change/")
    audit(page, "operators-policy-form")
    page.get_by_label("Total resource slots: CPU cores").fill("2")
    page.locator("#id_total_resource_slots_other").fill("rocm.device=lots")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".field-total_resource_slots_other .errorlist")).to_contain_text("rocm.device")  # beside it
    audit(page, "operators-policy-form-error")
    assert "cpu" not in KeypairResourcePolicy.objects.get(name="default").total_resource_slots  # nothing saved
    page.get_by_label("Total resource slots: CPU cores").fill("2")
    page.locator("#id_total_resource_slots_other").fill("")
    page.get_by_role("button", name="Save", exact=True).click()
    page.wait_for_url(re.compile(r".*/admin/accounts/keypairresourcepolicy/$"))
    expect(page.locator("#result_list")).to_contain_text("cpu 2")
    audit(page, "operators-policy-list")
    assert KeypairResourcePolicy.objects.get(name="default").total_resource_slots == {"cpu": "2"}

    keypair = Keypair.objects.select_related("resource_policy").get(pk=scientist.main_keypair_id)  # as saved now
    assert keypair.resource_policy_id == "default"
    with pytest.raises(errors.QuotaExceeded, match="keypair resource policy default"):
        enqueue(scientist, keypair, EnqueueRequest(image=IMAGE, name="too-big", enqueue_only=True,
                                                   resources={"cpu": "4", "mem": "1g"}))
    fits = enqueue(scientist, keypair, EnqueueRequest(image=IMAGE, name="fits", enqueue_only=True,
                                                      resources={"cpu": "2", "mem": "1g"})).session
    assert fits.requested_slots["cpu"] == "2"
