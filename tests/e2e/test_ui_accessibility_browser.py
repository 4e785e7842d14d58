"""Accessibility of the shared chrome and of the pages no other area owns, in a real browser
(Debian's Chromium through Playwright): axe-core finds no critical or serious violation on any of them
(tests/ui_support.audit(serious=True), screenshots in var/screenshots/; on the Swagger pages only Swagger
UI's own markup may have known serious findings, SWAGGER_UI below), the keyboard reaches everything
(a skip link first, then the navigation), focus is visible, and an open box closes with Escape.
Also: the audit itself really fails on a critical violation, under our Content-Security-Policy."""
from __future__ import annotations

import pytest
from ui_support import audit, axe_violations, expect

from helpers import running_on_a_local_agent

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def world(make_user, defaults):
    """A user with a running session (its agent lost), a model service and a finished background task; a superadmin."""
    from accounts.models import UserRole
    from agents.models import Agent
    from backendai.models import BackgroundTask
    from serving.models import Endpoint

    user = make_user("a11y-user@example.com")
    root = make_user("a11y-root@example.com", role=UserRole.SUPERADMIN)
    session, agent = running_on_a_local_agent(user, "a11y-node", "a11y-session")
    # no agent daemon runs here: marked lost, the logs and files pages say so at once instead of waiting for it
    Agent.objects.filter(pk=agent.pk).update(status="LOST")
    endpoint = Endpoint.objects.create(name="a11y-svc", created_user=user, session_owner=user,
                                       owner_keypair=user.main_keypair, domain_id=user.domain_id,
                                       project=defaults.project, image="bai-test/inference:1.0", replicas=1,
                                       token_secret="t" * 40)
    task = BackgroundTask.objects.create(name="rescan_images", func_path="bgtask_samples.with_problems",
                                         owner_id=str(user.pk), status="done", current_progress=3, total_progress=3,
                                         message="done, with issues", errors=["repo/a:1: manifest unknown"])
    return {"user": user, "root": root, "session": session, "endpoint": endpoint, "task": task}


def visit(page, path: str, name: str, status: int = 200):
    response = page.goto(path)
    assert response.status == status, (path, response.status)
    page.wait_for_load_state("load")
    return audit(page, f"a11y-{name}", serious=True)  # our own markup: serious findings fail too


# Swagger UI's own markup (third party; our chrome around it is audited strictly): its method badges'
# contrast and its clickable summaries holding buttons are known and waived inside .swagger-ui only
SWAGGER_UI = {"color-contrast": ".swagger-ui", "nested-interactive": ".swagger-ui"}


def test_every_page_without_another_owner_passes_axe_for_a_user_and_a_superadmin(page, login, world):
    session, endpoint, task = world["session"], world["endpoint"], world["task"]
    visit(page, "/ui/login/", "login")
    visit(page, "/admin/login/", "admin-login")
    expect(page.locator("h1")).to_have_text("Log in")  # Django's admin login has none of its own
    assert page.evaluate("() => document.documentElement.lang") == "en-us", "the server's language for a visitor"

    login(world["user"])
    expect(page.locator("main#main")).to_be_visible()
    for name, path in {
        "api-keys": "/ui/keys/",
        "tasks": "/ui/tasks/",
        "task": f"/ui/tasks/{task.pk}/",
        "resource-groups": "/ui/resource-groups/",
        "serving-list": "/ui/serving/",
        "serving-create": "/ui/serving/new/",
        "serving-detail": f"/ui/serving/{endpoint.pk}/",
        "session-logs": f"/ui/sessions/{session.pk}/logs/",
        "session-files": f"/ui/sessions/{session.pk}/files/",
    }.items():
        visit(page, path, name)
    visit(page, "/ui/no-such-page/", "404", status=404)
    expect(page.locator("#error-way-back")).to_be_visible()
    page.click("#error-way-back")
    expect(page).to_have_url(page.url.split("/ui/")[0] + "/ui/")

    page.goto("/spec/docs")
    expect(page.locator(".swagger-ui .info")).to_be_visible()
    audit(page, "a11y-swagger", serious=True, allow=SWAGGER_UI)
    page.goto("/spec/internal/docs")
    expect(page.locator(".swagger-ui .info")).to_contain_text("internal")
    audit(page, "a11y-swagger-internal", serious=True, allow=SWAGGER_UI)

    page.context.clear_cookies()
    login(world["root"])
    visit(page, "/admin/", "admin-index")
    visit(page, "/admin/accounts/keypairresourcepolicy/", "admin-changelist")  # breadcrumbs told apart by more than colour
    visit(page, "/admin/accounts/keypairresourcepolicy/default/change/", "admin-change-form")
    page.goto("/ui/tasks/")
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth"), \
        "the superadmin's longer navigation fits the bar"
    expect(page.get_by_role("button", name="Log out")).to_be_in_viewport()
    visit(page, "/ui/tasks/", "tasks-superadmin")
    visit(page, f"/ui/sessions/{session.pk}/logs/", "session-logs-superadmin")


def tab_to(page, predicate: str, limit: int = 40) -> int:
    """Press Tab until ``predicate`` (a function of the focused element) holds; how many presses."""
    for presses in range(1, limit + 1):
        page.keyboard.press("Tab")
        if page.evaluate(f"() => {{ const el = document.activeElement; return !!el && ({predicate})(el); }}"):
            return presses
    raise AssertionError(f"Tab never reached {predicate} in {limit} presses")


def test_the_keyboard_reaches_the_skip_link_first_then_main_then_every_nav_link(page, login, world):
    login(world["user"])
    page.goto("/ui/keys/")
    page.keyboard.press("Tab")
    focused = page.evaluate("() => [document.activeElement.className, document.activeElement.textContent.trim()]")
    assert focused == ["skip-link", "Skip to main content"], focused
    expect(page.locator(".skip-link")).to_be_in_viewport()
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none"), "the focused skip link shows where the focus is"
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.id") == "main"
    assert page.url.endswith("#main")

    page.goto("/ui/keys/")
    nav = page.evaluate("() => [...document.querySelectorAll('nav[aria-label=\"Main\"] a')].map(a => a.href)")
    assert len(nav) >= 6, nav
    reached = []
    for _ in range(len(nav) + 3):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("() => document.activeElement.href || ''"))
    assert [href for href in nav if href not in reached] == [], "every nav link is reachable with Tab, in order"
    for href in nav:
        assert page.evaluate("(h) => { const a = [...document.querySelectorAll('nav a')].find(x => x.href === h);"
                             " a.focus(); return getComputedStyle(a).outlineStyle; }", href) != "none"


def test_an_open_confirm_box_closes_with_escape_and_the_focus_returns_to_it(page, login, world):
    login(world["user"])
    page.goto(f"/ui/serving/{world['endpoint'].pk}/")
    summary = page.locator("#destroy-endpoint")
    summary.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#destroy-box")).to_have_attribute("open", "")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.id") == "confirm-destroy"
    page.keyboard.press("Escape")
    expect(page.locator("#destroy-box")).not_to_have_attribute("open", "")
    assert page.evaluate("() => document.activeElement.id") == "destroy-endpoint"
    assert page.url.endswith(f"/ui/serving/{world['endpoint'].pk}/"), "Escape submitted nothing"


def test_the_audit_fails_on_a_critical_violation_under_our_csp(page, login, world):
    response = page.goto("/ui/login/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    audit(page, "a11y-audit-clean", serious=True)
    # an image without alt text and a nameless button: axe's critical "image-alt" and "button-name"
    page.evaluate("() => { const main = document.querySelector('main');"
                  " const img = document.createElement('img'); img.src = '/static/missing.png'; main.append(img);"
                  " main.append(document.createElement('button')); }")
    with pytest.raises(AssertionError) as refused:
        audit(page, "a11y-audit-bad")
    assert "image-alt" in str(refused.value) and "button-name" in str(refused.value)


def test_the_audit_fails_on_a_bad_page_with_no_csp_too(page):
    page.set_content('<!doctype html><html lang="en"><title>bad</title><main><img src="x.png"></main></html>')
    found = {v["id"]: v["impact"] for v in axe_violations(page)}
    assert found.get("image-alt") == "critical"
    with pytest.raises(AssertionError, match="image-alt"):
        audit(page, "a11y-audit-bad-blank")


def test_the_app_proxys_error_page_passes_axe(page):
    from appproxy.worker.http1 import error_page

    raw = error_page(404, "No app is served at 127.0.0.1:30001 (its session may have ended): open the app again "
                          "from the session page.", back="http://127.0.0.1:8091")
    page.set_content(raw.split(b"\r\n\r\n", 1)[1].decode())
    expect(page.locator("#way-back")).to_have_attribute("href", "http://127.0.0.1:8091/ui/sessions/")
    audit(page, "a11y-appproxy-404", serious=True)


def test_the_strict_audit_fails_on_a_serious_violation_and_waives_it_only_inside_the_allowed_markup(page):
    page.goto("/ui/login/")
    # grey on white (about 2.3:1): axe's serious "color-contrast"; CSSOM styles, which our CSP allows
    page.evaluate("() => { const p = document.createElement('p'); p.id = 'faint'; p.textContent = 'Faint text';"
                  " p.style.color = '#aaaaaa'; p.style.background = '#ffffff';"
                  " document.querySelector('main .card').append(p); }")
    found = audit(page, "a11y-audit-serious-lenient", serious=False)  # the lenient audit only reports it
    assert any(v["id"] == "color-contrast" and ["#faint"] in v["nodes"] for v in found), found
    with pytest.raises(AssertionError, match="color-contrast") as refused:
        audit(page, "a11y-audit-serious", serious=True)
    assert "#faint" in str(refused.value)
    with pytest.raises(AssertionError, match="color-contrast"):
        audit(page, "a11y-audit-serious-other-markup", serious=True, allow={"color-contrast": ".swagger-ui"})
    audit(page, "a11y-audit-serious-waived", serious=True, allow={"color-contrast": "main .card"})


def test_the_allow_list_never_waives_a_critical_violation(page):
    page.goto("/ui/login/")
    page.evaluate("() => { const img = document.createElement('img'); img.src = '/static/missing.png';"
                  " document.querySelector('main').append(img); }")
    with pytest.raises(AssertionError, match="image-alt"):
        audit(page, "a11y-audit-critical-not-waived", serious=True, allow={"image-alt": "main"})
