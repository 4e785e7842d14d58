"""The sessions pages' live fragments on htmx (vendored from npm) and the list's filters (django-filter)."""
from __future__ import annotations

import json
import re

import pytest
from django.contrib.staticfiles import finders
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from agents import services as agent_services
from agents.models import Agent
from sessions import services as session_services
from sessions.filters import SessionListFilter
from sessions.models import Session

pytestmark = pytest.mark.django_db

LIST = reverse("ui-sessions:list")
ROWS = reverse("ui-sessions:list-rows")
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def agent(defaults):
    group = agent_services.ensure_default_scaling_group()
    return Agent.objects.create(id="live-node", scaling_group=group, available_slots={"cpu": "4"},
                                last_heartbeat=timezone.now())


def make_session(user, agent, name, status="RUNNING") -> Session:
    created = session_services.create_session_on_agent(user=user, image="bai-test/http:1.0", agent=agent,
                                                       slots={"cpu": "1"}, name=name)
    Session.objects.filter(pk=created.pk).update(status=status, agent_ids=[agent.pk])
    return Session.objects.get(pk=created.pk)


def status_url(session) -> str:
    return reverse("ui-sessions:detail-status", kwargs={"session_id": session.pk})


def test_the_pages_load_the_vendored_htmx_told_to_need_no_eval_and_no_inline_style(client, owner):
    client.force_login(owner)
    page = client.get(LIST).content.decode()
    assert '/static/vendor/htmx/htmx.min.js' in page and "/static/sessions/live.js" in page
    assert finders.find("vendor/htmx/htmx.min.js"), "scripts/lib/node.sh copies htmx from node_modules"
    config = json.loads(re.search(r"<meta name=\"htmx-config\" content='([^']*)'>", page).group(1))
    assert config["allowEval"] is False and config["includeIndicatorStyles"] is False
    assert config["allowScriptTags"] is False
    assert page.index('name="htmx-config"') < page.index("htmx.min.js") < page.index("</head>")
    rows = re.search(r'<tbody id="session-rows"[^>]*>', page).group(0)
    assert f'hx-get="{ROWS}?scope=mine&amp;state=all"' in rows and 'hx-trigger="every 2s"' in rows


def test_htmx_polls_the_status_fragment_until_the_session_is_over(client, owner, agent):
    session = make_session(owner, agent, "watched")
    client.force_login(owner)
    page = client.get(reverse("ui-sessions:detail", kwargs={"session_id": session.pk})).content.decode()
    assert f'hx-get="{status_url(session)}" hx-trigger="every 2s"' in page
    response = client.get(status_url(session), **HTMX)
    assert response.status_code == 200 and response["X-Live-Fragment"] == "1"
    assert "<html" not in response.content.decode()
    Session.objects.filter(pk=session.pk).update(status="TERMINATED", terminated_at=timezone.now())
    final = client.get(status_url(session), **HTMX)
    assert final.status_code == 286  # htmx swaps this last fragment in, then stops polling
    assert 'data-live-final="1"' in final.content.decode() and final["X-Live-Fragment"] == "1"
    assert client.get(status_url(session)).status_code == 200  # for anything but htmx, a plain 200


def test_the_logs_answer_varies_on_who_asks(client, owner, agent):
    session = make_session(owner, agent, "logged", status="TERMINATED")
    client.force_login(owner)
    logs = reverse("ui-sessions:logs", kwargs={"session_id": session.pk})
    fragment = client.get(logs, **HTMX)
    assert fragment["X-Live-Fragment"] == "1" and "<html" not in fragment.content.decode()
    assert "HX-Request" in fragment["Vary"]
    assert "<html" in client.get(logs).content.decode()


def test_unknown_or_forbidden_filter_values_fall_back_to_the_defaults(client, owner, domain_admin, agent):
    mine = make_session(owner, agent, "mine-one")
    over = make_session(owner, agent, "over-one", status="TERMINATED")
    client.force_login(owner)
    for query in ({"state": "bogus"}, {"scope": "all", "state": ""}, {"scope": "domain"}, {"state": ["x", "y"]}):
        response = client.get(LIST, query)
        assert response.status_code == 200, query
        page = response.content.decode()
        assert f'data-session="{mine.pk}"' in page and f'data-session="{over.pk}"' in page, query
        assert f'data-live-url="{ROWS}?scope=mine&amp;state=all"' in page, query
    finished = client.get(ROWS, {"state": "finished"}).content.decode()
    assert str(over.pk) in finished and str(mine.pk) not in finished
    client.force_login(domain_admin)
    assert str(mine.pk) in client.get(ROWS, {"scope": "domain", "state": "active"}).content.decode()
    assert str(mine.pk) not in client.get(ROWS, {"scope": "all"}).content.decode()  # not a superadmin's scope


def test_the_filterset_says_which_values_are_in_force(owner, superadmin, agent):
    request = RequestFactory().get(LIST, {"scope": "all", "state": "active"})
    request.user = superadmin
    filters = SessionListFilter(request.GET, session_services.visible_sessions(superadmin), request=request)
    unset = {"q": "", "status": "", "type": "", "group": "", "owner": ""}  # search and filters not given
    assert filters.values == {"scope": "all", "state": "active", **unset}
    request.user = owner
    filters = SessionListFilter(request.GET, session_services.visible_sessions(owner), request=request)
    assert filters.values == {"scope": "mine", "state": "active", **unset}
    assert "scope" in filters.form.errors  # a choice this user is not offered


# --- the rows are a Jinja2 template (backendai/jinja.py) -----------------------------------------------

def test_the_rows_escape_what_a_user_wrote_as_the_django_templates_do():
    from types import SimpleNamespace

    from django.template.loader import render_to_string

    row = SimpleNamespace(
        pk="0123456789abcdef", status="RUNNING", name='<img src=x onerror="alert(1)">', image="img:1",
        architecture="x86_64", requested_slots={"cpu": "1"}, note="<b>note</b>", session_type="interactive",
        result="undefined", get_session_type_display=lambda: "Interactive", scaling_group_id=None,
        user=SimpleNamespace(email="a&b@example.com"), usage=None, is_live=True, created_at=timezone.now(),
        age_shown="1 min", can_destroy=True,
        links=SimpleNamespace(detail="/d/", logs="/l/", destroy="/x/", apps=[("jupyter", "/o/?a=1&b=2")]))
    html = render_to_string("sessions/_rows.html", {"sessions": [row], "show_owner": True, "csrf_input": "",
                                                     "list_path": "/ui/sessions/", "query": "a=1&b=<2>"},
                            using="jinja2")
    assert "<img" not in html and "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html
    assert "&lt;b&gt;note&lt;/b&gt;" in html and "a&amp;b@example.com" in html
    assert 'action="/o/?a=1&amp;b=2"' in html and 'value="/ui/sessions/?a=1&amp;b=&lt;2&gt;"' in html
    assert "<td>—</td>" in html  # no resource group


def test_the_rows_date_is_the_django_date_filter_in_the_current_time_zone():
    from datetime import datetime
    from datetime import timezone as dt_timezone

    from django.template.defaultfilters import date as django_date
    from django.template.loader import render_to_string

    from backendai.jinja import local_date

    moment = datetime(2026, 12, 31, 23, 30, 5, tzinfo=dt_timezone.utc)
    with timezone.override("Asia/Seoul"):
        dtl = render_to_string("sessions/_status_badge.html", {"status": "X"})  # the Django engine still serves
        assert local_date(moment, "Y-m-d H:i:s") == "2027-01-01 08:30:05"
        assert local_date(moment, "Y-m-d H:i:s") == django_date(timezone.localtime(moment), "Y-m-d H:i:s")
    assert local_date(None, "Y") == "" and 'data-status="X"' in dtl


def test_every_form_of_the_rows_carries_one_csrf_token_the_server_accepts(owner, agent):
    from django.test import Client

    first = make_session(owner, agent, "first-one")
    make_session(owner, agent, "second-one")
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    for url in (LIST, ROWS):
        page = client.get(url, {"state": "active"}).content.decode()
        rows = page.split('id="session-rows"', 1)[-1].split("</tbody>", 1)[0]
        tokens = re.findall(r'name="csrfmiddlewaretoken" value="([^"]+)"', rows)
        assert len(tokens) >= 2 and len(set(tokens)) == 1, url  # one masked token for the page's forms
    destroy = reverse("ui-sessions:destroy", kwargs={"session_id": first.pk})
    assert client.post(destroy, {"next": LIST}).status_code == 403  # no token: refused, nothing done
    assert Session.objects.get(pk=first.pk).status == "RUNNING"
    response = client.post(destroy, {"csrfmiddlewaretoken": tokens[0], "next": LIST})
    assert response.status_code == 302 and Session.objects.get(pk=first.pk).status != "RUNNING"
