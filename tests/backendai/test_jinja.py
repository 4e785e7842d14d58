"""The web UI's Jinja2 engine (backendai/jinja.py): Django's backend, but the CSRF field made once
per render, only when a form asks for it."""
from __future__ import annotations

import re

from django.template import engines
from django.template.backends import jinja2 as django_jinja2
from django.test import RequestFactory

TWO_FORMS = "{{ csrf_input }}|{{ csrf_input }}|{{ csrf_token }}|{{ request.path }}"


def tokens(html: str) -> list[str]:
    return re.findall(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)


def test_every_form_of_one_render_prints_the_same_csrf_token():
    request = RequestFactory().get("/ui/sessions/")
    html = engines["jinja2"].from_string(TWO_FORMS).render({}, request)
    first, second = tokens(html)
    assert first == second and html.split("|")[2] == first and html.endswith("|/ui/sessions/")


def test_djangos_own_backend_masks_a_new_token_per_form_which_is_why_ours_exists():
    request = RequestFactory().get("/ui/sessions/")
    engine = engines["jinja2"]
    plain = django_jinja2.Template(engine.env.from_string(TWO_FORMS), engine)
    first, second = tokens(plain.render({}, request))
    assert first != second  # the cost the sessions list paid 50 times a page


def test_a_render_without_a_form_leaves_the_csrf_cookie_alone():
    request = RequestFactory().get("/ui/sessions/")
    assert engines["jinja2"].from_string("{{ request.path }}").render({}, request) == "/ui/sessions/"
    assert "CSRF_COOKIE_NEEDS_UPDATE" not in request.META and "CSRF_COOKIE" not in request.META


def test_a_render_without_a_request_has_no_csrf_field():
    assert engines["jinja2"].from_string("[{{ csrf_input }}]").render({}) == "[]"
