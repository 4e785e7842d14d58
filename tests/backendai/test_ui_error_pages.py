"""Styled 400/403/404/500 and CSRF pages with a way back on the web UI, problem+json on the API,
and the Swagger split: the user API at /spec/, the daemons' endpoints at /spec/internal/."""
import pytest
from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.template.loader import render_to_string
from django.test import Client
from django.urls import include, path

from helpers import slug

pytestmark = pytest.mark.django_db


def _boom(request):
    raise RuntimeError("a bug in a view")


def _denied(request):
    raise PermissionDenied("not yours")


def _suspicious(request):
    raise SuspiciousOperation("a malformed request")


# A urlconf for these tests only: the project's routes plus views that fail on purpose, with the
# project's own handlers (what Django calls when a view raises).
urlpatterns = [
    path("ui/test-errors/boom/", _boom),
    path("ui/test-errors/denied/", _denied),
    path("ui/test-errors/suspicious/", _suspicious),
    path("test-errors/denied", _denied),  # an API path (not under /ui/)
    path("", include("backendai.urls")),
]
handler400 = "backendai.urls.handler400"
handler403 = "backendai.urls.handler403"
handler404 = "backendai.urls.handler404"
handler500 = "backendai.urls.handler500"

def way_back(html: str) -> bool:
    return 'href="/ui/" id="error-way-back"' in html


def styled_page(response, status: int, title: str) -> str:
    """The HTML of a styled error page, checked: its status, its ``title`` and the way back to /ui/."""
    assert response.status_code == status
    html = response.content.decode()
    assert title in html and way_back(html)
    return html


def test_an_unknown_ui_page_answers_a_styled_404_with_a_way_back(client, owner):
    client.force_login(owner)
    response = client.get("/ui/no-such-page/")
    html = styled_page(response, 404, "Page not found")
    assert "/ui/no-such-page/" in html, "it names the path it could not find"
    assert 'href="/static/css/app.css"' in html or "css/app." in html
    assert 'aria-label="Main"' in html and owner.email in html, "the page keeps the navigation of base.html"


def test_an_unknown_ui_page_answers_404_to_an_anonymous_visitor_too(client):
    response = client.get("/ui/sessions/not-a-session-id/nothing/")
    assert response.status_code == 404
    assert way_back(response.content.decode())


def test_an_unknown_api_path_still_answers_problem_json(client):
    response = client.get("/no-such-api-path")
    assert response.status_code == 404 and slug(response) == "url-not-found"


@pytest.mark.urls(__name__)
def test_a_permission_denied_on_the_ui_answers_the_styled_403(client, owner):
    client.force_login(owner)
    response = client.get("/ui/test-errors/denied/")
    html = styled_page(response, 403, "You may not open this page")
    assert owner.email in html


@pytest.mark.urls(__name__)
def test_a_permission_denied_on_the_api_answers_problem_json(client):
    response = client.get("/test-errors/denied")
    assert response.status_code == 403 and slug(response) == "generic-forbidden"


@pytest.mark.urls(__name__)
def test_a_bug_answers_the_standalone_500_page(client, owner):
    client.force_login(owner)
    client.raise_request_exception = False
    response = client.get("/ui/test-errors/boom/")
    html = styled_page(response, 500, "Something went wrong on our side")
    assert "a bug in a view" not in html, "no internals leak"
    assert "css/app." in html and "<main" in html


def test_the_500_page_renders_without_a_request_or_the_database(django_assert_num_queries):
    with django_assert_num_queries(0):
        html = render_to_string("500.html")
    assert "Something went wrong on our side" in html and way_back(html)
    assert "css/app." in html and "<script" not in html


@pytest.mark.urls(__name__)
def test_a_suspicious_request_on_the_ui_answers_the_styled_400(client):
    response = client.get("/ui/test-errors/suspicious/")
    styled_page(response, 400, "This request could not be understood")


def test_a_bad_host_answers_400_html_on_the_ui_and_problem_json_on_the_api(client, settings):
    settings.ALLOWED_HOSTS = ["panel.example.com"]
    ui = client.get("/ui/login/", HTTP_HOST="evil.example")
    assert ui.status_code == 400 and "This request could not be understood" in ui.content.decode()
    api = client.get("/config/resource-slots", HTTP_HOST="evil.example")
    assert api.status_code == 400 and api["Content-Type"].startswith("application/problem+json")


def test_a_form_without_its_csrf_token_answers_the_styled_csrf_page_and_changes_nothing(owner):
    client = Client(enforce_csrf_checks=True)
    response = client.post("/ui/login/", {"username": owner.email, "password": "secret-pass-1"})
    styled_page(response, 403, "This form could not be sent")
    assert "_auth_user_id" not in client.session, "refused: nobody was logged in"


def test_the_user_schema_leaves_out_the_daemons_endpoints(client):
    paths = client.get("/spec/openapi?format=json").json()["paths"]
    assert "/session/_/create" in paths and "/auth/authorize" in paths and "/folders" in paths
    for internal in ("/agent-api/v1/sync", "/agent-api/v1/events", "/appproxy-api/v1/workers/{authority}/heartbeat",
                     "/appproxy-api/v1/workers/{authority}/circuits", "/internal/hints"):
        assert internal not in paths, internal
    assert not [p for p in paths if p.startswith(("/agent-api/", "/appproxy-api/", "/internal/", "/func/"))]


def test_the_internal_schema_has_only_the_daemons_endpoints(client):
    response = client.get("/spec/internal/openapi?format=json")
    assert response.status_code == 200
    body = response.json()
    paths = body["paths"]
    for internal in ("/agent-api/v1/sync", "/agent-api/v1/events", "/appproxy-api/v1/workers/{authority}/heartbeat",
                     "/appproxy-api/v1/workers/{authority}/circuits", "/internal/hints"):
        assert internal in paths, internal
    assert "/session/_/create" not in paths and "/auth/authorize" not in paths
    assert "internal" in body["info"]["title"]


def test_the_internal_swagger_page_reads_the_internal_schema(client):
    page = client.get("/spec/internal/docs")
    assert page.status_code == 200
    html = page.content.decode()
    assert "swagger-ui" in html and "<script>" not in html
    assert '<html lang="en">' in html and 'aria-current="page">Internal API' in html
    assert 'href="/spec/docs"' in html, "a link back to the user API"
    script = client.get("/spec/internal/docs?script=")
    assert script.status_code == 200 and b"/spec/internal/openapi" in script.content


# <html lang> names the language the page is in: the one the user picked (accounts preferences,
# activated by accounts.middleware), the server's otherwise.
def html_lang(html: str) -> str:
    start = html.index("<html lang=\"") + len("<html lang=\"")
    return html[start:html.index('"', start)]


def test_a_ui_page_names_the_language_the_user_picked(client, owner):
    from accounts.models import UserPreferences

    UserPreferences.objects.create(user=owner, language="ja")
    client.force_login(owner)
    assert html_lang(client.get("/ui/keys/").content.decode()) == "ja"
    assert html_lang(client.get("/ui/no-such-page/").content.decode()) == "ja", "the styled 404 too"


def test_a_ui_page_names_the_servers_language_for_a_visitor_or_a_user_without_a_choice(client, owner, settings):
    assert html_lang(client.get("/ui/login/").content.decode()) == settings.LANGUAGE_CODE
    client.force_login(owner)
    assert html_lang(client.get("/ui/keys/").content.decode()) == "en"  # accounts.services.preferences' default


@pytest.mark.urls(__name__)
def test_the_standalone_500_page_names_the_language_of_the_user_it_answers(client, owner):
    from accounts.models import UserPreferences

    UserPreferences.objects.create(user=owner, language="de")
    client.force_login(owner)
    client.raise_request_exception = False
    response = client.get("/ui/test-errors/boom/")
    assert response.status_code == 500 and html_lang(response.content.decode()) == "de"


def test_the_standalone_500_page_without_a_request_names_the_servers_language(settings):
    assert html_lang(render_to_string("500.html")) == settings.LANGUAGE_CODE
