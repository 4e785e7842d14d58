"""The "Serving" page in a real browser against the whole stack as processes (daphne, the
Celery worker and beat with the serving reconciler, a local agent, an app-proxy worker):
a new user serves a model folder, watches the replica become healthy without reloading,
scales to two, generates a token (shown once) and calls the endpoint with it, sees the
request rate and reads the event log; the pages fit a phone's width.

Set ``SERVING_UI_SCREENSHOTS=<dir>`` to keep screenshots."""
from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from proxy_worker_support import LiveProxyWorker

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

try:
    from playwright.sync_api import expect
except ImportError:  # the ``browser`` fixture reports it through require()
    expect = None

IMAGE = "local/inference:1.0"
AGENT_ID = "e2e-serving-ui-agent"
SCREENSHOTS = os.environ.get("SERVING_UI_SCREENSHOTS")
HEALTHY_TIMEOUT_MS = 120_000  # a replica: scheduled, started, then its first passing health check
DEFINITION = """models:
  - name: echo
    model_path: /models
    service:
      port: 8000
      health_check: {path: /health, interval: 1, max_wait_time: 2, max_retries: 2, initial_delay: 0}
"""
PHONE = {"width": 375, "height": 740}


def shot(page, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


def fits_the_width(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def overflowing(page) -> list:
    """What sticks out to the right (for the failure message)."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('body *'))
        .filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5)
        .slice(0, 8)
        .map(e => e.tagName + '#' + e.id + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))""")


@pytest.fixture
def proxy(live_stack, cluster):
    """An app-proxy worker (port mode) registered with the stack's coordinator."""
    from appproxy import services as proxy_services

    token = proxy_services.issue_token("e2e serving ui", authority="e2e-serving-proxy")[1]
    return LiveProxyWorker(live_stack, token, "e2e-serving-proxy").start().row()


@pytest.fixture(autouse=True)
def _fast_password_hashing():
    """The stack's web process checks the password with the project's own hashers (the suite's
    fast MD5 hasher is only in this process): keep the real ones here."""
    yield


@pytest.fixture
def stack_page(browser, live_stack):
    context = browser.new_context(base_url=live_stack.url)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_stack.url)
    context.set_default_timeout(20_000)
    tab = context.new_page()
    try:
        yield tab
    finally:
        context.close()


def model_folder(user, storage_root, name="echo-model"):
    """A model folder holding the definition, written on the proxy's volume where an upload puts it."""
    from vfolders import services as vfolder_services

    vfolder_services.ensure_default_storage_host()
    folder = vfolder_services.create_folder(user, name=name, usage_mode="model")
    path = Path(storage_root) / folder.host_id.split(":", 1)[1] / folder.relative_path
    path.mkdir(parents=True, exist_ok=True)
    (path / "model-definition.yaml").write_text(DEFINITION)
    (path / "model.txt").write_text("echo model v1\n")
    return folder


def test_a_new_user_serves_a_model_scales_it_and_calls_it_with_a_token(
        make_user, live_stack, cluster, proxy, stack_page, storage_proxy, password):
    from serving.models import Endpoint

    page = stack_page
    refused = []  # what the Content-Security-Policy blocked (no inline script or style may be needed)
    page.on("console", lambda message: refused.append(message.text)
            if "Content Security Policy" in message.text else None)
    live_stack.start_local_agent(AGENT_ID, cluster[1])
    user = make_user("server-user@example.com")
    folder = model_folder(user, storage_proxy.root)

    page.goto("/ui/login/")
    page.fill("input[name=username]", user.email)
    page.fill("input[name=password]", password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state("domcontentloaded")

    page.get_by_role("link", name="Serving").click()
    expect(page.locator("#endpoint-table")).to_contain_text("No endpoints yet")
    page.click("#new-endpoint")
    page.fill("#id_name", "echo-web")
    page.select_option("#id_model", str(folder.pk))
    page.select_option("#id_image", IMAGE)
    page.select_option("#id_runtime_variant", "custom")
    page.fill("#id_replicas", "1")
    page.fill("#id_cpu", "0.25")
    page.fill("#id_mem", "128m")
    shot(page, "create-form")
    page.click("#create-submit")

    endpoint = Endpoint.objects.get(name="echo-web")
    expect(page).to_have_url(f"{live_stack.url}/ui/serving/{endpoint.pk}/")
    page.evaluate("window.__noReload = 'detail'")
    summary = page.locator("#endpoint-summary")
    expect(summary).to_have_text("1/1 healthy", timeout=HEALTHY_TIMEOUT_MS)
    expect(page.locator("#route-table tbody tr[data-status=healthy]")).to_have_count(1)
    assert page.evaluate("window.__noReload") == "detail"  # the live fragment brought it
    expect(page.locator('.live-state[data-live-for="endpoint-live"]')).to_have_text("live")
    shot(page, "detail-healthy")

    # two replicas, by the form; the second becomes healthy by itself
    page.fill("#id_replicas", "2")
    page.click("#scale-submit")
    expect(page.locator(".messages")).to_contain_text("2 replicas asked for")
    expect(summary).to_have_text("2/2 healthy", timeout=HEALTHY_TIMEOUT_MS)
    expect(page.locator("#route-table tbody tr[data-status=healthy]")).to_have_count(2)

    # one route takes no new requests (ratio 0): the form in its row
    from serving.models import Routing

    first = Routing.objects.filter(endpoint=endpoint, status="healthy").order_by("created_at").first()
    row = page.locator(f'#route-table tr[data-route="{first.pk}"]')
    row.get_by_label("Traffic ratio").fill("0")
    row.get_by_role("button", name="Set").click()
    expect(page.locator(".messages")).to_contain_text("traffic ratio is now 0")
    expect(page.locator(f"#id_route-{first.pk}-traffic_ratio")).to_have_value("0.0")
    assert Routing.objects.get(pk=first.pk).traffic_ratio == 0

    # a token, shown once, opens the endpoint
    page.select_option("#id_duration", "3600")
    page.click("#token-submit")
    token = page.locator("#token-value").input_value()
    assert len(token) > 20
    expect(page.locator("#token-expiry")).not_to_be_empty()
    url = Endpoint.objects.get(pk=endpoint.pk).url
    assert url and page.locator("#endpoint-url").input_value() == url
    page.click('button.copy[data-copy="endpoint-url"]')
    expect(page.locator('button.copy[data-copy="endpoint-url"]')).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == url
    with httpx.Client(timeout=10, trust_env=False) as http:
        assert http.get(url.rstrip("/") + "/v1/predict?x=1").status_code == 401
        answers = [http.get(url.rstrip("/") + f"/v1/predict?n={n}", headers={"Authorization": f"BackendAI {token}"})
                   for n in range(20)]
    assert [a.status_code for a in answers] == [200] * 20
    page.goto(f"/ui/serving/{endpoint.pk}/")
    assert token not in page.content()  # shown once only
    expect(page.locator("#token-list")).to_contain_text(token[-6:])

    # the proxy's numbers reach the page; the event log has the scaling decision
    expect(page.locator("#metric-request-rate")).not_to_have_text("0.00 req/s", timeout=30_000)
    expect(page.locator("#event-log")).to_contain_text(f"Scaled by {user.email} to 2 replica(s)")
    shot(page, "detail-traffic")

    # a phone's width: nothing overflows sideways
    page.set_viewport_size(PHONE)
    for target in ("/ui/serving/", "/ui/serving/new/", f"/ui/serving/{endpoint.pk}/"):
        page.goto(target)
        assert fits_the_width(page), (target, overflowing(page))
    shot(page, "detail-phone")

    # destroy, confirmed in place; the list no longer shows it
    page.set_viewport_size({"width": 1280, "height": 900})
    page.click("#destroy-endpoint")
    page.click("#confirm-destroy")
    expect(page.locator(".messages")).to_contain_text("Endpoint echo-web is being destroyed")
    live_stack.wait_for(lambda: Endpoint.objects.get(pk=endpoint.pk).lifecycle_stage == "destroyed", timeout=90,
                        what="the endpoint destroyed")
    page.goto("/ui/serving/")
    expect(page.locator("#endpoint-table")).to_contain_text("No endpoints yet")
    assert refused == []
