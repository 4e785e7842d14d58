"""The sessions web UI (list, create form, detail, fragments, destroy/restart)
through Django's test client: owner checks, errors beside fields, bounded queries."""
from __future__ import annotations

import re

import pytest
from django.urls import reverse
from django.utils import timezone
from sessions_ui_support import IMAGE, running, seed_python_image_and_agent, start

from agents import services as agent_services
from agents.models import Image, ImageAlias
from sessions import agent_sync
from sessions.models import ResourcePreset, Session

pytestmark = pytest.mark.django_db

LIST = reverse("ui-sessions:list")
ROWS = reverse("ui-sessions:list-rows")
CREATE = reverse("ui-sessions:create")
FRAGMENT = {"HTTP_X_LIVE_FRAGMENT": "1"}


@pytest.fixture
def cluster(defaults):
    group = agent_services.ensure_default_scaling_group()
    image = seed_python_image_and_agent(
        group, service_ports=[{"name": "jupyter", "protocol": "http", "container_ports": [8888]}])
    ImageAlias.objects.create(alias="python", image=image)
    ResourcePreset.objects.create(name="small", resource_slots={"cpu": "1", "mem": str(2**30)})
    ResourcePreset.objects.create(name="huge", resource_slots={"cpu": "64", "mem": str(512 * 2**30)})
    return group, image


def logged_in(client, user):
    client.force_login(user)
    return client


def form_data(**overrides) -> dict:
    data = {"image": IMAGE, "architecture": "", "session_type": "interactive", "scaling_group": "", "preset": "",
            "project": "default", "name": "", "startup_command": "", "environ": "", "batch_timeout": "",
            "slot_cpu": "", "slot_mem": ""}
    data.update(overrides)
    return data


def field_error(response, field: str) -> str:
    """The error rendered beside ``field`` (the element with id error-<field>)."""
    match = re.search(rf'id="error-{re.escape(field)}"[^>]*>(.*?)</div>', response.content.decode(), re.S)
    return match.group(1).strip() if match else ""


# --- the list ---------------------------------------------------------------------------------

def test_anonymous_users_are_sent_to_the_login_page(client, cluster):
    for url in (LIST, ROWS, CREATE):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/ui/login/")


def test_the_list_shows_only_the_users_own_sessions(client, owner, member, cluster):
    mine = start(owner, "owner-sess")
    start(member, "member-sess")
    response = logged_in(client, owner).get(LIST)
    assert response.status_code == 200
    page = response.content.decode()
    assert "owner-sess" in page and "member-sess" not in page
    assert f'data-session="{mine.pk}"' in page and 'data-status="PENDING"' in page
    assert "status-pending" in page and IMAGE in page and "cpu 1" in page  # badge, image, |slots
    assert reverse("ui-sessions:detail", kwargs={"session_id": mine.pk}) in page
    # the live rows: polled by live.js, the same content as a fragment
    assert f'data-live-url="{ROWS}?scope=mine&amp;state=all"' in page and "sessions/live.js" in page
    assert 'id="scope-tabs"' not in page  # no admin toggle for a user


def test_the_rows_fragment_is_marked_and_follows_the_filters(client, owner, cluster):
    pending = start(owner, "waiting-one")
    gone = start(owner, "gone-one")
    Session.objects.filter(pk=gone.pk).update(status="CANCELLED")
    api = logged_in(client, owner)
    response = api.get(ROWS, {"state": "active"}, **FRAGMENT)
    assert response.status_code == 200 and response["X-Live-Fragment"] == "1"
    body = response.content.decode()
    assert "<html" not in body and str(pending.pk) in body and str(gone.pk) not in body
    finished = api.get(ROWS, {"state": "finished"}).content.decode()
    assert str(gone.pk) in finished and str(pending.pk) not in finished


def test_admins_toggle_between_their_own_the_domain_and_all(client, owner, outsider, domain_admin, superadmin,
                                                            cluster):
    start(owner, "owner-sess")
    other = logged_in(client, domain_admin)
    assert "owner-sess" not in other.get(LIST).content.decode()
    page = other.get(LIST, {"scope": "domain"}).content.decode()
    assert "owner-sess" in page and "owner@example.com" in page and 'id="scope-tabs"' in page
    assert "All domains" not in page  # a domain admin has no "all"
    root = logged_in(client, superadmin)
    assert "All domains" in root.get(LIST).content.decode()
    assert "owner-sess" in root.get(LIST, {"scope": "all"}).content.decode()
    # a plain user asking for the domain gets their own sessions
    plain = logged_in(client, outsider).get(LIST, {"scope": "domain"}).content.decode()
    assert "owner-sess" not in plain


@pytest.mark.parametrize("url", [LIST, ROWS])
def test_the_list_costs_a_bounded_number_of_queries(client, owner, superadmin, cluster, url,
                                                    django_assert_max_num_queries):
    first = start(owner, "sess-0000")
    api = logged_in(client, superadmin)
    # auth (2), count, rows, usage of the running ones, the group menu, the app proxy's form targets
    with django_assert_max_num_queries(8):
        assert api.get(url, {"scope": "all"}).status_code == 200
    Session.objects.bulk_create([
        Session(name=f"sess-{i:04d}", domain_id=first.domain_id, project_id=first.project_id, user=owner,
                access_key=first.access_key, image=IMAGE, scaling_group=first.scaling_group,
                requested_slots=first.requested_slots, status="RUNNING" if i % 2 else "PENDING")
        for i in range(1, 60)])
    with django_assert_max_num_queries(8):
        page = api.get(url, {"scope": "all"}).content.decode()
    assert page.count("data-session=") == 50  # one page
    logged_in(client, owner)
    with django_assert_max_num_queries(9):  # a user's group menu also reads their projects
        assert client.get(url).status_code == 200


# --- the create form --------------------------------------------------------------------------

def test_the_form_offers_images_aliases_groups_presets_and_the_quota(client, owner, cluster):
    page = logged_in(client, owner).get(CREATE).content.decode()
    assert f'value="{IMAGE}"' in page and 'value="python"' in page and "python → " in page
    assert '<option value="x86_64">' in page
    assert '<option value="default">default</option>' in page
    assert 'data-preset="small"' in page and 'data-preset="huge"' in page
    huge = page[page.index('data-preset="huge"'):page.index('data-preset="small"')]  # presets by name
    small = page[page.index('data-preset="small"'):page.index('data-preset=""')]
    assert "not available now" in huge and "fits now" not in huge
    assert "fits now" in small and "cpu 1 · mem 1 GiB" in small
    assert 'id="quota"' in page and "unlimited" in page
    for value in ("interactive", "batch", "inference"):
        assert f'value="{value}"' in page


def test_a_valid_form_enqueues_a_pending_session_and_shows_it(client, owner, cluster):
    api = logged_in(client, owner)
    response = api.post(CREATE, form_data(name="my-first", slot_cpu="2", slot_mem="2g",
                                          environ="FOO=bar\n# a comment\n\nLANG = C.UTF-8"))
    session = Session.objects.get(name="my-first")
    assert response.status_code == 302
    assert response["Location"] == reverse("ui-sessions:detail", kwargs={"session_id": session.pk})
    assert session.status == "PENDING" and session.user == owner and session.access_key == owner.main_keypair
    assert session.requested_slots == {"cpu": "2", "mem": str(2 * 2**30)}
    assert session.environ == {"FOO": "bar", "LANG": "C.UTF-8"}
    assert session.scaling_group_id == "default" and session.session_type == "interactive"
    assert session.kernels.get().status == "PENDING"
    page = api.get(response["Location"]).content.decode()
    assert "Session my-first is queued." in page and "Why it waits" in page


def test_a_preset_an_alias_and_a_batch_command_reach_the_session(client, owner, cluster):
    api = logged_in(client, owner)
    response = api.post(CREATE, form_data(image="python", preset="small", session_type="batch",
                                          startup_command="python -c 'print(1)'", batch_timeout="60",
                                          name="batch-job"))
    assert response.status_code == 302, field_error(response, "resources")
    session = Session.objects.get(name="batch-job")
    assert session.image == IMAGE and session.session_type == "batch" and session.batch_timeout == 60
    assert session.startup_command == "python -c 'print(1)'"
    assert session.requested_slots == {"cpu": "1", "mem": str(2**30)}


def test_an_unknown_image_is_refused_beside_the_image_field(client, owner, cluster):
    response = logged_in(client, owner).post(CREATE, form_data(image="no/such:image", name="nope-1"))
    assert response.status_code == 200
    assert "Unknown image" in field_error(response, "image")
    assert not Session.objects.exists()


def test_an_image_missing_for_the_architecture_is_refused_by_the_service_beside_the_image(client, owner, cluster):
    Image.objects.create(name="other/arm:1", repository="other/arm", tag="1", architecture="aarch64")
    response = logged_in(client, owner).post(CREATE, form_data(architecture="aarch64", name="nope-2"))
    assert response.status_code == 200
    assert "not available for aarch64" in field_error(response, "image")
    assert not Session.objects.exists()


def test_a_request_over_the_remaining_quota_is_refused_beside_the_resources(client, owner, cluster):
    policy = owner.main_keypair.resource_policy
    policy.total_resource_slots = {"cpu": "1"}
    policy.default_for_unspecified = "LIMITED"
    policy.save()
    api = logged_in(client, owner)
    page = api.get(CREATE).content.decode()
    quota = page[page.index('id="quota"'):]
    assert '<tr data-slot="cpu">' in quota
    response = api.post(CREATE, form_data(slot_cpu="2", name="too-big"))
    assert response.status_code == 200
    assert "remaining quota" in field_error(response, "resources")
    assert "cpu 2 asked, 1 left" in response.content.decode()
    # within the form's check, but the policy has no memory at all: the service refuses it
    response = api.post(CREATE, form_data(slot_cpu="1", name="too-big"))
    assert response.status_code == 200
    assert "exceeds the keypair resource policy" in field_error(response, "resources")
    assert not Session.objects.exists()


def test_a_batch_session_without_a_command_is_refused_beside_the_command(client, owner, cluster):
    response = logged_in(client, owner).post(CREATE, form_data(session_type="batch", name="batch-1"))
    assert response.status_code == 200
    assert "startup command" in field_error(response, "startup_command")
    assert not Session.objects.exists()


@pytest.mark.parametrize("name", ["ab", "-leading-dash", "has space", "from-template"])
def test_a_bad_name_is_refused_by_the_service_beside_the_name(client, owner, cluster, name):
    response = logged_in(client, owner).post(CREATE, form_data(name=name))
    assert response.status_code == 200
    assert field_error(response, "name"), response.content.decode()
    assert not Session.objects.exists()


def test_a_name_in_use_is_refused_beside_the_name(client, owner, cluster):
    start(owner, "taken")
    response = logged_in(client, owner).post(CREATE, form_data(name="taken"))
    assert "already exists" in field_error(response, "name")
    assert Session.objects.count() == 1


@pytest.mark.parametrize("fields,field,words", [
    ({"environ": "FOO=1\nnot a pair"}, "environ", "KEY=VALUE"),
    ({"environ": "1BAD=x"}, "environ", "KEY=VALUE"),
    ({"slot_mem": "lots"}, "slot_mem", "invalid binary size"),
    ({"slot_cpu": "-1"}, "slot_cpu", "invalid number"),
    ({"scaling_group": "secret-group"}, "scaling_group", "Select a valid choice"),
    ({"preset": "nope"}, "resources", "Select a valid choice"),
    ({"batch_timeout": "30"}, "batch_timeout", "only to batch"),
    ({"slot_cpu": "0.5"}, "resources", "needs at least 1 of cpu"),
])
def test_bad_input_is_shown_beside_its_field_and_creates_nothing(client, owner, cluster, fields, field, words):
    response = logged_in(client, owner).post(CREATE, form_data(name="bad-input", **fields))
    assert response.status_code == 200
    assert words in field_error(response, field), response.content.decode()
    assert not Session.objects.exists()


def test_a_group_that_refuses_the_type_is_shown_beside_the_group(client, owner, cluster):
    group, _ = cluster
    group.scheduler_opts = {"allowed_session_types": ["interactive"]}
    group.save()
    response = logged_in(client, owner).post(CREATE, form_data(
        session_type="inference", scaling_group="default", name="infer-1"))
    assert "does not accept inference" in field_error(response, "scaling_group")
    assert not Session.objects.exists()


def test_an_error_about_nothing_in_particular_is_shown_above_the_form():
    from backendai.api import errors
    from sessions.forms import error_field

    refusal = errors.InstanceNotAvailable("The manager is being upgraded")
    assert error_field(refusal, refusal.msg) is None  # None: the form shows it above the fields


# --- the detail page --------------------------------------------------------------------------

def detail(session, name="detail"):
    return reverse(f"ui-sessions:{name}", kwargs={"session_id": session.pk})


def test_the_owner_sees_status_timeline_kernels_ports_and_why_it_waits(client, owner, cluster):
    session = start(owner, "waiting")
    Session.objects.filter(pk=session.pk).update(status_info="no-available-instances", status_data={"scheduler": {
        "retries": 3, "last_try": timezone.now().isoformat(), "msg": "No agent has 64 CPU cores free",
        "failed_predicates": [{"name": "keypair_resource_limit", "msg": "Your keypair is using all its CPU"}],
        "passed_predicates": [{"name": "concurrency"}]}})
    page = logged_in(client, owner).get(detail(session)).content.decode()
    assert 'id="why-waiting"' in page and "No agent has 64 CPU cores free" in page
    assert "keypair_resource_limit" in page and "Your keypair is using all its CPU" in page
    assert "Tried 3 times" in page and "Passed: concurrency" in page and "no-available-instances" in page
    assert 'id="timeline"' in page and 'data-status="PENDING"' in page
    kernel = session.kernels.get()
    assert f'data-kernel="{kernel.pk}"' in page
    assert 'data-app="jupyter"' in page and 'data-app-actions="jupyter"' in page
    assert f'data-live-url="{detail(session, "detail-status")}"' in page
    assert 'id="confirm-destroy"' in page and 'id="restart-session"' not in page  # pending: no restart
    assert 'id="destroy-forced"' not in page  # forced is for admins


def test_a_session_not_yet_tried_says_so(client, owner, cluster):
    session = start(owner, "fresh")
    page = logged_in(client, owner).get(detail(session)).content.decode()
    assert "the scheduler has not looked at it yet" in page


def test_a_running_session_shows_its_ports_through_the_proxy_exit_codes_and_idle_checks(client, owner, cluster):
    session = start(owner, "running")
    session.kernels.update(status="RUNNING", agent_id="node-1", container_id="c0ffee1234567890", kernel_host="10.0.0.5",
                           service_ports=[{"name": "jupyter", "protocol": "http", "container_ports": [8888],
                                           "host_ports": [30001]}])
    Session.objects.filter(pk=session.pk).update(status="RUNNING", agent_ids=["node-1"])
    policy = owner.main_keypair.resource_policy
    policy.max_session_lifetime = 3600
    policy.save()
    page = logged_in(client, owner).get(detail(session)).content.decode()
    assert 'id="why-waiting"' not in page and "status-running" in page
    assert "c0ffee1234567" in page and "ready (through the app proxy)" in page
    assert "10.0.0.5" not in page and "30001" not in page  # no raw host port that skips the app proxy
    assert 'data-check="session_lifetime"' in page and re.search(r"ends in (60 min|1 h 00 min), idle or not", page)
    assert 'id="restart-session"' in page


def test_the_status_fragment_is_marked_and_final_once_the_session_is_over(client, owner, cluster):
    session = start(owner, "frag")
    api = logged_in(client, owner)
    response = api.get(detail(session, "detail-status"), **FRAGMENT)
    assert response.status_code == 200 and response["X-Live-Fragment"] == "1"
    body = response.content.decode()
    assert "<html" not in body and "data-live-final" not in body and "status-pending" in body
    Session.objects.filter(pk=session.pk).update(status="CANCELLED", terminated_at=timezone.now())
    body = api.get(detail(session, "detail-status"), **FRAGMENT).content.decode()
    assert 'data-live-final="1"' in body and 'id="confirm-destroy"' not in body
    assert "data-live-url" not in api.get(detail(session)).content.decode()  # nothing left to watch


@pytest.mark.parametrize("name", ["detail", "detail-status", "logs"])
def test_other_users_get_404_for_a_session(client, owner, member, outsider, cluster, name):
    session = start(owner, "private")
    for other in (member, outsider):
        assert logged_in(client, other).get(detail(session, name)).status_code == 404
    assert logged_in(client, owner).get(reverse(f"ui-sessions:{name}", kwargs={
        "session_id": "00000000-0000-0000-0000-000000000000"})).status_code == 404


@pytest.mark.parametrize("name", ["destroy", "restart"])
def test_other_users_cannot_destroy_or_restart(client, owner, outsider, cluster, name):
    session = start(owner, "private")
    assert logged_in(client, outsider).post(detail(session, name)).status_code == 404
    assert Session.objects.get(pk=session.pk).status == "PENDING"


def test_a_domain_admin_sees_a_session_of_the_domain(client, owner, domain_admin, cluster):
    session = start(owner, "visible")
    page = logged_in(client, domain_admin).get(detail(session)).content.decode()
    assert "visible" in page and 'id="destroy-forced"' in page


def test_the_logs_fragment_and_page_come_from_the_service(client, owner, cluster):
    session = running(owner, "logged")
    kernel = session.kernels.get()
    agent_sync.apply_kernel_reports(kernel.agent, [{"kernel_id": str(kernel.pk), "status": "TERMINATED",
                                                        "exit_code": 0,
                                                        "last_logs": "hello from the container\n<b>not html</b>"}])
    api = logged_in(client, owner)
    response = api.get(detail(session, "logs"), **FRAGMENT)
    assert response["X-Live-Fragment"] == "1"
    body = response.content.decode()
    assert "hello from the container" in body and "&lt;b&gt;not html&lt;/b&gt;" in body and "<html" not in body
    page = api.get(detail(session, "logs")).content.decode()  # without JavaScript: a whole page
    assert "<html" in page and "hello from the container" in page


def test_destroy_cancels_a_pending_session_through_the_service(client, owner, cluster):
    session = start(owner, "to-cancel")
    response = logged_in(client, owner).post(detail(session, "destroy"))
    assert response.status_code == 302 and response["Location"] == detail(session)
    session.refresh_from_db()
    assert session.status == "CANCELLED" and session.kernels.get().status == "CANCELLED"
    assert "Session to-cancel is cancelled." in client.get(detail(session)).content.decode()


def test_forced_destroy_is_honoured_for_admins_only(client, owner, domain_admin, cluster):
    session = running(owner, "forced")
    logged_in(client, owner).post(detail(session, "destroy"), {"forced": "on"})
    assert Session.objects.get(pk=session.pk).status == "TERMINATING"  # the agent is asked to stop it
    session2 = running(owner, "forced-2")
    logged_in(client, domain_admin).post(detail(session2, "destroy"), {"forced": "on"})
    assert Session.objects.get(pk=session2.pk).status == "TERMINATED"  # forced: ended at once


def test_destroy_and_restart_get_only_post(client, owner, cluster):
    session = start(owner, "get-only")
    api = logged_in(client, owner)
    assert api.get(detail(session, "destroy")).status_code == 405
    assert api.get(detail(session, "restart")).status_code == 405


def test_restart_goes_through_the_service_and_reports_refusals(client, owner, cluster):
    session = start(owner, "restart-me")
    api = logged_in(client, owner)
    response = api.post(detail(session, "restart"), follow=True)
    assert "Only running sessions can be restarted" in response.content.decode()
    session = running(owner, "restart-too")
    response = api.post(detail(session, "restart"), follow=True)
    assert "Session restart-too is restarting." in response.content.decode()
    assert session.kernels.get().status == "RESTARTING"