"""The session page's "Run code" card and its console view (``sessions.execute_ui``): shown for
images with a Python runtime only, POSTed with the login cookie and the CSRF token, the same
checks as ``POST /session/{s}``; the code runs in the agent's real runner in a local kernel, reached
through ``InProcessKernelIO`` (``kernel_io_support``, as in ``test_execute.py``; the link end to
end: ``tests/e2e/test_execute_client.py``)."""
from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from agents.models import Image
from sessions.models import Session

from .kernel_io_support import backend, kernel_io  # noqa: F401 - fixtures
from .test_execute import _in_memory_layer, live  # noqa: F401 - fixtures
from .test_terminal_consumers import node, running_session  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


def page(session):
    return reverse("ui-sessions:detail", kwargs={"session_id": session.pk})


def console(session):
    return reverse("ui-sessions:execute", kwargs={"session_id": session.pk})


def browser(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def csrf_of(client, session) -> str:
    client.get(reverse("ui-sessions:list"))  # a page with a form sets the cookie
    return client.cookies["csrftoken"].value


def with_runtime(session, runtime="python"):
    Image.objects.update_or_create(name=session.image, defaults={
        "repository": session.image.split(":")[0], "tag": session.image.split(":")[-1],
        "labels": {"ai.backend.runtime-type": runtime, "ai.backend.runtime-path": "/usr/local/bin/python3"}})


def test_the_card_shows_only_for_an_image_with_a_python_runtime(owner, node):
    session = running_session(owner, "uiexec")
    client = browser(owner)
    assert 'id="execute"' not in client.get(page(session)).content.decode()
    with_runtime(session, "app")
    assert 'id="execute"' not in client.get(page(session)).content.decode()
    with_runtime(session)
    html = client.get(page(session)).content.decode()
    assert 'id="execute"' in html and console(session) in html and "sessions/execute.js" in html


def test_the_console_runs_code_with_the_cookie_and_csrf_token(owner, node, live):  # noqa: F811
    session = live(owner, "uiexec2")
    client = browser(owner)
    token = csrf_of(client, session)
    body = json.dumps({"mode": "query", "runId": None,
                       "code": 'import os\nprint("ran in", os.environ["BACKENDAI_KERNEL_ID"])'})
    response = client.post(console(session), body, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200, response.content
    result = response.json()["result"]
    assert result["status"] == "finished" and result["console"] == [["stdout", f"ran in {session.kernels.get().pk}\n"]]
    assert Session.objects.get(pk=session.pk).num_queries == 1


def test_the_console_refuses_no_csrf_token_a_bad_mode_and_someone_elses_session(owner, outsider, node,  # noqa: F811
                                                                                  kernel_io):  # noqa: F811
    session = running_session(owner, "uiexec3")
    body = json.dumps({"mode": "query", "runId": "r1", "code": "print(1)"})
    assert browser(owner).post(console(session), body, content_type="application/json").status_code == 403
    client = browser(owner)
    token = csrf_of(client, session)
    bad = client.post(console(session), json.dumps({"mode": "shell", "code": "ls"}),
                      content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert bad.status_code == 400 and bad["Content-Type"].startswith("application/problem+json")
    stranger = browser(outsider)
    stranger_token = csrf_of(stranger, session)
    foreign = stranger.post(console(session), body, content_type="application/json", HTTP_X_CSRFTOKEN=stranger_token)
    assert foreign.status_code == 404
    assert kernel_io == [] and Session.objects.get(pk=session.pk).num_queries == 0  # no stream was opened
