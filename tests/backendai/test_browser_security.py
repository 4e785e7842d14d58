"""Browser hardening: a strict Content-Security-Policy and the other security
headers on every kind of response, Secure cookies when asked for or over TLS,
templates with no inline script or style, and the session page's honesty about
isolation and about the app proxy (no raw host ports)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from agents import services as agent_services
from agents.models import Agent
from appproxy.models import Worker
from sessions import services as session_services
from sessions.models import Session

pytestmark = pytest.mark.django_db

TEMPLATES = Path(settings.BASE_DIR) / "templates"
STATIC = Path(settings.BASE_DIR) / "static"


def directives(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    parsed = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            parsed[words[0]] = words[1:]
    return parsed


def assert_hardened(response):
    policy = directives(response)
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"][0] == "'self'" and all(s == "'self'" or s.startswith("'nonce-") for s in policy["style-src"])
    assert policy["img-src"] == ["'self'", "data:"]
    assert policy["connect-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["form-action"][0] == "'self'"
    assert policy["base-uri"] == ["'none'"] and policy["object-src"] == ["'none'"]
    header = response["Content-Security-Policy"]
    assert "unsafe-inline" not in header and "unsafe-eval" not in header
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"


@pytest.fixture
def admin_client(client, superadmin):
    client.force_login(superadmin)
    return client


def test_web_ui_pages_carry_the_security_headers(client, owner):
    assert_hardened(client.get("/ui/login/"))
    client.force_login(owner)
    for path in ("/ui/", "/ui/keys/", "/ui/sessions/", "/ui/folders/", "/ui/resource-groups/", "/ui/tasks/"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert_hardened(response)


def test_api_answers_carry_the_security_headers_refusals_included(client, signed, owner):
    assert_hardened(client.get("/healthz"))
    assert_hardened(signed(owner).get("/auth/test?echo=1"))
    assert_hardened(client.get("/auth/test"))  # 401 problem
    refused = client.get("/auth/test", HTTP_X_BACKENDAI_VERSION="v99.20990101")  # refused before any view
    assert refused.status_code == 400
    assert_hardened(refused)
    assert_hardened(client.get("/no/such/path"))


def test_admin_pages_and_static_files_carry_the_security_headers(client, admin_client):
    assert_hardened(client.get("/admin/login/"))
    assert_hardened(admin_client.get("/admin/"))
    assert_hardened(admin_client.get("/admin/accounts/user/"))
    static = client.get("/static/css/app.css")
    assert static.status_code == 200
    assert_hardened(static)


def test_the_swagger_page_loads_its_start_up_script_from_a_file(client):
    page = client.get("/spec/docs")
    assert page.status_code == 200
    assert_hardened(page)
    html = page.content.decode()
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts and all("src=" in tag for tag in scripts), scripts
    assert "<style" not in html
    init = re.search(r'<script src="([^"]*script=[^"]*)"', html).group(1).replace("&amp;", "&")
    script = client.get(init)
    assert script.status_code == 200 and script["Content-Type"].startswith("application/javascript")
    assert b"SwaggerUIBundle" in script.content


# --- cookies --------------------------------------------------------------------------------------

def login_cookies(client, user, **extra):
    client.get("/ui/login/", **extra)
    response = client.post("/ui/login/", {"username": user.email, "password": "correct-horse-battery-9"}, **extra)
    assert response.status_code == 302
    return response.cookies


def test_cookies_are_not_marked_secure_over_plain_http_by_default(client, owner, settings):
    settings.SECURE_COOKIES = False
    cookies = login_cookies(client, owner)
    assert not cookies[settings.SESSION_COOKIE_NAME]["secure"]
    assert not cookies[settings.CSRF_COOKIE_NAME]["secure"]
    assert cookies[settings.SESSION_COOKIE_NAME]["httponly"]


def test_cookies_are_secure_when_the_request_came_over_tls(client, owner, settings):
    settings.SECURE_COOKIES = False
    cookies = login_cookies(client, owner, secure=True)
    assert cookies[settings.SESSION_COOKIE_NAME]["secure"] is True
    assert cookies[settings.CSRF_COOKIE_NAME]["secure"] is True


def test_cookies_are_secure_everywhere_when_secure_cookies_is_on(client, owner, settings):
    settings.SECURE_COOKIES = True
    cookies = login_cookies(client, owner)
    assert cookies[settings.SESSION_COOKIE_NAME]["secure"] is True
    assert cookies[settings.CSRF_COOKIE_NAME]["secure"] is True


def test_a_forwarded_proto_header_from_an_untrusted_peer_does_not_count_as_tls(client, owner, settings):
    settings.SECURE_COOKIES = False
    settings.TRUSTED_PROXIES = []
    response = client.get("/ui/login/", HTTP_X_FORWARDED_PROTO="https", REMOTE_ADDR="203.0.113.9")
    assert not response.cookies[settings.CSRF_COOKIE_NAME]["secure"]


# --- templates and static scripts -----------------------------------------------------------------

INLINE_SCRIPT = re.compile(r"<script\b(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.I)
EVENT_HANDLER = re.compile(r"<[^>]*\son[a-z]+\s*=", re.I | re.S)
JS_URL = re.compile(r"javascript:", re.I)
STYLE_ATTR = re.compile(r"<[^>]*\sstyle\s*=", re.I | re.S)
STYLE_BLOCK = re.compile(r"<style\b", re.I)


def template_files():
    files = sorted(TEMPLATES.rglob("*.html"))
    assert len(files) > 20
    return files


@pytest.mark.parametrize("name,pattern", [
    ("inline <script> without src", INLINE_SCRIPT), ("on*= event handler", EVENT_HANDLER),
    ("javascript: URL", JS_URL), ("style= attribute", STYLE_ATTR), ("<style> block", STYLE_BLOCK),
])
def test_no_template_has_inline_script_or_style(name, pattern):
    offenders = []
    for path in template_files():
        text = re.sub(r"{#.*?#}", "", path.read_text(), flags=re.S)  # template comments render nothing
        text = re.sub(r"{%\s*comment\s*%}.*?{%\s*endcomment\s*%}", "", text, flags=re.S)
        for match in pattern.finditer(text):
            offenders.append(f"{path.relative_to(TEMPLATES)}: {match.group(0)[:80]!r}")
    assert not offenders, f"{name} in templates:\n" + "\n".join(offenders)


def test_the_static_check_itself_catches_what_it_looks_for():
    assert INLINE_SCRIPT.search('<script>alert(1)</script>') and not INLINE_SCRIPT.search('<script src="/a.js">')
    assert EVENT_HANDLER.search('<form method="post" onsubmit="return confirm()">')
    assert not EVENT_HANDLER.search('<form data-confirm="on=1">')
    assert STYLE_ATTR.search('<span style="width: 3%">') and STYLE_BLOCK.search("<style>a{}</style>")


def test_our_scripts_set_no_inline_handlers_or_eval():
    for path in sorted((STATIC / "js").glob("*.js")) + sorted(STATIC.glob("*/*.js")):
        if "vendor" in path.parts:
            continue
        text = path.read_text()
        assert "eval(" not in text and "new Function" not in text, path
        assert not re.search(r"setAttribute\(\s*[\"']on", text), path


# --- the session page: isolation and the app proxy --------------------------------------------------

@pytest.fixture
def running_session(defaults, owner):
    def make(backend="docker", name="s1"):
        group = agent_services.ensure_default_scaling_group()
        agent = Agent.objects.create(id=f"node-{backend}", scaling_group=group, available_slots={"cpu": "4"},
                                     backend=backend, last_heartbeat=timezone.now())
        created = session_services.create_session_on_agent(user=owner, image="bai-test/http:1.0", agent=agent,
                                                           slots={"cpu": "1"}, name=name)
        Session.objects.filter(pk=created.pk).update(status="RUNNING", agent_ids=[agent.pk])
        created.kernels.update(status="RUNNING", kernel_host="10.1.2.3", agent_addr="10.1.2.3", service_ports=[
            {"name": "web", "protocol": "http", "container_ports": [8080], "host_ports": [31001]},
            {"name": "echo", "protocol": "tcp", "container_ports": [9000], "host_ports": [31002]}])
        return Session.objects.get(pk=created.pk)
    return make


def test_the_session_page_never_shows_a_raw_host_port(client, owner, running_session):
    session = running_session()
    client.force_login(owner)
    for path in (f"/ui/sessions/{session.pk}/", f"/ui/sessions/{session.pk}/status/"):
        response = client.get(path, HTTP_X_LIVE_FRAGMENT="1")
        html = response.content.decode()
        assert response.status_code == 200, path
        assert "31001" not in html and "31002" not in html and "10.1.2.3" not in html, path
    assert 'data-app-open="web"' in client.get(f"/ui/sessions/{session.pk}/").content.decode()


def test_the_session_page_lets_the_open_button_reach_the_app_proxy_and_nothing_else(client, owner, running_session):
    session = running_session()
    Worker.objects.create(authority="w1", advertised_host="127.0.0.1", api_endpoint="http://proxy.example.com:6130",
                          secret="s" * 40, protocols=["http"], port_range_start=40000, port_range_end=40009,
                          last_heartbeat=timezone.now())
    client.force_login(owner)
    response = client.get(f"/ui/sessions/{session.pk}/")
    policy = directives(response)
    assert policy["form-action"] == ["'self'", "http://127.0.0.1:*", "http://proxy.example.com:6130"]
    assert policy["script-src"] == ["'self'"]
    nonce = re.search(r'nonce="([^"]+)"', response.content.decode()).group(1)  # terminal.js carries it
    assert f"'nonce-{nonce}'" in policy["style-src"]
    assert_hardened(response)
    # pages without the terminal carry no nonce at all
    assert directives(client.get("/ui/sessions/"))["style-src"] == ["'self'"]
    assert directives(client.get("/ui/"))["form-action"] == ["'self'"]


def test_the_session_page_warns_when_the_local_process_backend_runs_it(client, owner, running_session):
    local = running_session(backend="local", name="on-laptop")
    isolated = running_session(backend="docker", name="in-docker")
    client.force_login(owner)
    warned = client.get(f"/ui/sessions/{local.pk}/").content.decode()
    assert 'id="no-isolation"' in warned and "local-process backend" in warned and "node-local" in warned
    assert 'id="no-isolation"' not in client.get(f"/ui/sessions/{isolated.pk}/").content.decode()


def test_the_resource_groups_page_warns_about_local_process_agents(client, owner, defaults):
    group = agent_services.ensure_default_scaling_group()
    client.force_login(owner)
    Agent.objects.create(id="node-docker", scaling_group=group, available_slots={"cpu": "4"}, backend="docker")
    assert "data-no-isolation" not in client.get("/ui/resource-groups/").content.decode()
    Agent.objects.create(id="node-local", scaling_group=group, available_slots={"cpu": "4"}, backend="local")
    html = client.get("/ui/resource-groups/").content.decode()
    assert f'data-no-isolation="{group.name}"' in html and "local-process backend" in html
    assert "1 not isolated" in html
