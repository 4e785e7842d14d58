"""The sessions list and session page of the web UI (issue 16, item 3): live usage from the agents' reports,
search and filters per role, per-row actions, the session page's usage, mounts and idle countdowns, no stale
status text, and a constant number of queries for 10 or 1000 sessions."""
from __future__ import annotations

import re
import uuid

import pytest
import sessions_ui_support
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from sessions_ui_support import IMAGE, seed_python_image_and_agent, start

from agents import services as agent_services
from agents.models import Agent, ScalingGroup
from sessions import agent_sync, live_usage
from sessions.models import Kernel, Session

pytestmark = pytest.mark.django_db

LIST = reverse("ui-sessions:list")
ROWS = reverse("ui-sessions:list-rows")
FRAGMENT = {"HTTP_X_LIVE_FRAGMENT": "1"}
GiB = 2**30
JUPYTER = {"name": "jupyter", "protocol": "http", "container_ports": [8888], "host_ports": [30001]}


@pytest.fixture
def cluster(defaults):
    group = agent_services.ensure_default_scaling_group()
    image = seed_python_image_and_agent(
        group, service_ports=[{"name": "jupyter", "protocol": "http", "container_ports": [8888]}])
    return group, image


def running(user, name, stats=None, **fields) -> Session:
    """A session placed by the real scheduler and reported RUNNING (with ``stats``) by its agent."""
    report = {"service_ports": [JUPYTER], **({"stats": stats} if stats else {})}
    return sessions_ui_support.running(user, name, report=report, **fields)


def as_user(client, user):
    client.force_login(user)
    return client


def page_of(client, url=LIST, **params) -> str:
    response = client.get(url, params)
    assert response.status_code == 200
    return response.content.decode()


def names(page: str) -> set[str]:
    return set(re.findall(r"<strong>([\w.-]+)</strong></a>", page))


def detail(session, name="detail"):
    return reverse(f"ui-sessions:{name}", kwargs={"session_id": session.pk})


# --- live usage ---------------------------------------------------------------------------------

def test_usage_sums_the_running_kernels_reports_against_their_allocation(owner, cluster):
    session = running(owner, "busy", stats={"cpu_util": "150.0", "mem_used": str(GiB)},
                      resources={"cpu": "2", "mem": "4g"})
    usage = live_usage.session_usage([session.pk])[session.pk]
    assert usage.cpu_util == 150.0 and usage.cpu_cores == 2.0 and usage.cpu_percent == 75.0
    assert usage.mem_used == GiB and usage.mem_limit == 4 * GiB and usage.mem_percent == 25.0
    assert usage.gpu_util is None and not usage.has_gpu
    assert usage.measured_at is not None
    assert usage.cpu_text == "1.5 of 2 cores (75 %)" and usage.mem_text == "1 GiB of 4 GiB (25 %)"


def test_a_session_without_a_report_or_not_running_has_no_usage(owner, cluster):
    quiet = running(owner, "quiet")
    waiting = start(owner, "waiting")
    usage = live_usage.session_usage([quiet.pk, waiting.pk, str(uuid.uuid4()), "not-an-id"])
    assert usage[quiet.pk] == live_usage.LiveUsage() and usage[waiting.pk] == live_usage.LiveUsage()
    assert not usage[quiet.pk].reported and usage[quiet.pk].mem_percent is None
    ended = running(owner, "ended", stats={"cpu_util": "5", "mem_used": "10"})
    ended.kernels.update(status="TERMINATED")
    assert not live_usage.usage_of(ended.pk).reported  # a stopped kernel's last report is not "now"


def test_gpu_usage_comes_from_the_kernels_own_report_before_the_agents_readings(owner, cluster):
    session = running(owner, "gpu-1", stats={"cpu_util": "10", "mem_used": "100", "cuda_util": "42",
                                             "cuda_mem": str(3 * GiB)})
    session.kernels.update(occupied_slots={"cpu": "1", "mem": str(GiB), "cuda.device": "2"})
    # the agent's readings of its two GPUs say otherwise: the kernel's own figures win
    Agent.objects.filter(pk="node-1").update(live_stat={"devices": {"cuda.device": [
        {"id": "0", "util": "5", "mem_used": "1"}, {"id": "1", "util": "7", "mem_used": "1"}]}})
    usage = live_usage.usage_of(session.pk)
    assert usage.gpu_util == 42.0 and usage.gpu_mem_used == 3 * GiB and usage.gpu_devices == 2.0
    assert usage.gpu_max == 100.0 and usage.gpu_text == "42 % of 2 GPUs · 3 GiB memory"
    kernel = Kernel.objects.get(session=session)
    assert live_usage.kernel_usage(kernel).gpu_text == "42 % of 2 GPUs · 3 GiB memory"
    from django.template.loader import render_to_string

    html = render_to_string("sessions/_usage.html", {"usage": usage})
    assert 'max="100.0" value="42.0"' in html and "42 % of 2 GPUs · 3 GiB memory" in html


def test_a_fractional_gpu_share_shows_the_use_of_the_device_it_is_bound_to(owner, cluster):
    session = running(owner, "gpu-share", stats={"cpu_util": "10", "mem_used": "100", "cuda_util": "60",
                                                 "cuda_mem": str(GiB)})
    session.kernels.update(occupied_slots={"cpu": "1", "mem": str(GiB), "cuda.shares": "0.5"})
    usage = live_usage.usage_of(session.pk)
    assert usage.gpu_util == 60.0 and usage.gpu_devices == 0.5 and usage.gpu_mem_used == GiB
    assert usage.gpu_text == "60 % of 0.5 GPUs · 1 GiB memory"


def test_the_gpu_use_of_several_kernels_is_their_mean_weighted_by_the_gpus_each_holds(owner, cluster):
    session = running(owner, "gpu-pair", stats={"cpu_util": "10", "mem_used": "100", "cuda_util": "90",
                                                "cuda_mem": "1000"})
    first = session.kernels.get()
    Kernel.objects.filter(pk=first.pk).update(occupied_slots={"cpu": "1", "mem": str(GiB), "cuda.device": "2"})
    second = Kernel.objects.get(pk=first.pk)
    second.pk, second.cluster_idx, second.cluster_role = uuid.uuid4(), 2, "sub"
    second.occupied_slots = {"cpu": "1", "mem": str(GiB), "cuda.device": "1"}
    second.last_stat = {"cpu_util": "5", "mem_used": "50", "cuda_util": "30", "cuda_mem": "24"}
    second.save(force_insert=True)
    usage = live_usage.usage_of(session.pk)
    assert usage.gpu_util == 70.0  # (90 x 2 + 30 x 1) / 3
    assert usage.gpu_devices == 3.0 and usage.gpu_mem_used == 1024 and usage.cpu_util == 15.0


def test_an_older_agent_without_kernel_gpu_figures_stands_in_when_the_kernel_holds_all_its_gpus(owner, cluster):
    other = running(owner, "gpu-2", stats={"cpu_util": "10", "mem_used": "100"})
    other.kernels.update(occupied_slots={"cpu": "1", "mem": str(GiB), "cuda.device": "1"})
    Agent.objects.filter(pk="node-1").update(live_stat={"devices": {"cuda.device": [
        {"id": "0", "util": "77", "mem_used": str(GiB)}]}})
    usage = live_usage.usage_of(other.pk)
    assert usage.gpu_util == 77.0 and usage.gpu_devices == 1.0 and usage.gpu_mem_used == GiB
    assert usage.gpu_text == "77 % of 1 GPU · 1 GiB memory"
    other.kernels.update(occupied_slots={"cpu": "1", "mem": str(GiB), "cuda.device": "2"})
    Agent.objects.filter(pk="node-1").update(live_stat={"devices": {"cuda.device": [
        {"id": "0", "util": "77"}, {"id": "1", "util": "3"}]}})
    usage = live_usage.usage_of(other.pk)
    assert usage.gpu_util == 40.0 and usage.gpu_mem_used is None and usage.gpu_text == "40 % of 2 GPUs"
    # two GPUs on the agent, one held: which one is unknown, so no guess
    other.kernels.update(occupied_slots={"cpu": "1", "mem": str(GiB), "cuda.device": "1"})
    usage = live_usage.usage_of(other.pk)
    assert usage.gpu_util is None and usage.has_gpu and usage.gpu_text == "not reported"


def test_malformed_reports_count_as_no_report(owner, cluster):
    session = running(owner, "odd-one", stats={"cpu_util": "NaN", "mem_used": "-5"})
    assert not live_usage.usage_of(session.pk).reported
    Kernel.objects.filter(session=session).update(last_stat={"cpu_util": "12.5", "mem_used": "lots"})
    usage = live_usage.usage_of(session.pk)
    assert usage.cpu_util == 12.5 and usage.mem_used is None


def test_usage_of_many_sessions_is_one_query(owner, cluster, django_assert_num_queries):
    sessions = [running(owner, f"many-{i}", stats={"cpu_util": str(i), "mem_used": "1"}) for i in range(3)]
    with django_assert_num_queries(1):
        usage = live_usage.session_usage([s.pk for s in sessions])
    assert [usage[s.pk].cpu_util for s in sessions] == [0.0, 1.0, 2.0]


def test_the_usage_fragment_renders_meters_or_waits_for_the_first_report():
    from django.template.loader import render_to_string

    usage = live_usage.LiveUsage(cpu_util=50.0, mem_used=GiB, mem_limit=2 * GiB, cpu_cores=1.0)
    html = render_to_string("sessions/_usage.html", {"usage": usage})
    assert html.count("<meter") == 2 and 'value="50.0"' in html and "1 GiB of 2 GiB (50 %)" in html
    assert "GPU" not in html
    assert "waiting for the first report" in render_to_string("sessions/_usage.html", {"usage": live_usage.LiveUsage()})


# --- the list: who sees what ----------------------------------------------------------------------

@pytest.fixture
def population(owner, member, outsider, cluster):
    """owner: two sessions, member: one (same domain), outsider: one (domain "other")."""
    return {
        "mine-run": running(owner, "mine-run", stats={"cpu_util": "50", "mem_used": str(GiB)}),
        "mine-wait": start(owner, "mine-wait"),
        "member-one": start(member, "member-one"),
        "outsider-one": foreign_session(outsider, "outsider-one"),
    }


def foreign_session(user, name) -> Session:
    """A waiting session of a user of another domain (written directly: that domain has no image or group)."""
    from accounts.models import Project, ProjectResourcePolicy

    policy, _ = ProjectResourcePolicy.objects.get_or_create(name="default")
    project, _ = Project.objects.get_or_create(name="other-project", domain_id=user.domain_id,
                                               defaults={"resource_policy": policy})
    session = Session.objects.create(name=name, domain_id=user.domain_id, project=project, user=user,
                                     access_key=user.main_keypair, image=IMAGE, requested_slots={"cpu": "1"})
    Kernel.objects.create(session=session, image=IMAGE)
    return session


def test_a_user_lists_only_their_own_sessions_whatever_they_ask(client, owner, population):
    api = as_user(client, owner)
    assert names(page_of(api)) == {"mine-run", "mine-wait"}
    for params in ({"scope": "all"}, {"scope": "domain"}, {"owner": "member"}, {"q": "member"}):
        assert names(page_of(api, **params)) <= {"mine-run", "mine-wait"}, params
    page = page_of(api, owner="member")
    assert 'id="filter-owner"' not in page and "Ignored" in page and "Owner" in page


def test_a_member_of_the_same_domain_does_not_see_anothers_sessions(client, member, population):
    assert names(page_of(as_user(client, member), scope="domain")) == {"member-one"}


def test_a_domain_admin_sees_the_domain_and_filters_by_owner(client, domain_admin, population):
    api = as_user(client, domain_admin)
    page = page_of(api, scope="domain")
    assert names(page) == {"mine-run", "mine-wait", "member-one"}  # never the other domain's
    assert 'id="filter-owner"' in page and "<th scope=\"col\">Owner</th>" in page
    assert names(page_of(api, scope="domain", owner="member@")) == {"member-one"}
    assert names(page_of(api, scope="all", owner="outsider")) == set()  # no "all" for a domain admin


def test_a_domain_admin_of_another_domain_sees_none_of_this_domain(client, foreign_admin, population):
    api = as_user(client, foreign_admin)
    assert names(page_of(api, scope="domain")) == {"outsider-one"}
    assert names(page_of(api, scope="domain", owner="owner@example.com")) == set()


def test_a_superadmin_sees_every_domain_and_filters_by_owner(client, superadmin, population):
    api = as_user(client, superadmin)
    assert names(page_of(api, scope="all")) == {"mine-run", "mine-wait", "member-one", "outsider-one"}
    assert names(page_of(api, scope="all", owner="OUTSIDER")) == {"outsider-one"}


# --- the list: search and filters -----------------------------------------------------------------

def test_the_search_matches_a_part_of_the_name_or_the_start_of_the_id(client, owner, population):
    api = as_user(client, owner)
    assert names(page_of(api, q="WAIT")) == {"mine-wait"}
    target = population["mine-run"]
    assert names(page_of(api, q=str(target.pk)[:8])) == {"mine-run"}
    assert names(page_of(api, q=target.pk.hex[:12])) == {"mine-run"}  # undashed, across the first dash
    assert names(page_of(api, q=str(target.pk))) == {"mine-run"}
    page = page_of(api, q="nothing-like-it")
    assert names(page) == set() and "No session matches these filters" in page and 'id="clear-filters"' in page


def test_status_type_and_group_filters_narrow_the_list(client, owner, population, cluster):
    api = as_user(client, owner)
    assert names(page_of(api, status="RUNNING")) == {"mine-run"}
    assert names(page_of(api, status="PENDING")) == {"mine-wait"}
    Session.objects.filter(pk=population["mine-wait"].pk).update(session_type="batch")
    assert names(page_of(api, type="batch")) == {"mine-wait"}
    ScalingGroup.objects.create(name="gpu-group")
    Session.objects.filter(pk=population["mine-wait"].pk).update(scaling_group_id="gpu-group")
    assert names(page_of(api, group="default")) == {"mine-run"}
    assert names(page_of(api, group="gpu-group")) == {"mine-wait"}


def test_the_filters_are_kept_by_the_tabs_the_pager_and_the_live_rows(client, owner, population):
    page = page_of(as_user(client, owner), q="mine", status="RUNNING", state="active")
    assert f'data-live-url="{ROWS}?scope=mine&amp;state=active&amp;q=mine&amp;status=RUNNING"' in page
    assert 'href="?scope=mine&amp;state=finished&amp;q=mine&amp;status=RUNNING"' in page
    assert '<option value="RUNNING" selected>' in page and 'value="mine"' in page


@pytest.mark.parametrize("params", [
    {"status": "SLEEPING"}, {"type": "gpu"}, {"group": "no such/../group"}, {"q": "x" * 500},
    {"owner": "y" * 500}, {"page": "-3"}, {"page": "lots"}, {"scope": "galaxy"}, {"state": "1"},
])
def test_malformed_filters_are_ignored_not_errors(client, owner, population, params):
    response = as_user(client, owner).get(LIST, params)
    assert response.status_code == 200
    assert names(response.content.decode()) == {"mine-run", "mine-wait"}
    assert as_user(client, owner).get(ROWS, params, **FRAGMENT).status_code == 200


# --- the list: live usage columns and row actions -----------------------------------------------

def test_a_running_row_shows_its_usage_and_every_action(client, owner, population):
    session = population["mine-run"]
    rows = page_of(as_user(client, owner), ROWS)
    row = rows[rows.index(f'data-session="{session.pk}"'):]
    row = row[:row.index("</tr>")]
    assert 'data-usage="cpu"' in row and "0.5 of 1 cores (50 %)" in row and "<meter" in row
    assert "1 GiB of" in row
    open_url = reverse("ui-appproxy:open-app", args=[session.pk, "jupyter"])
    assert f'action="{open_url}"' in row and 'data-row-action="open"' in row and "Open jupyter" in row
    assert f'href="{detail(session)}#terminal"' in row and f'href="{detail(session, "logs")}"' in row
    assert f'action="{detail(session, "destroy")}"' in row and 'data-confirm="Destroy mine-run?' in row
    assert f'name="next" value="{LIST}?scope=mine&amp;state=all"' in row


def test_a_waiting_row_offers_only_to_cancel_and_an_ended_one_nothing(client, owner, population):
    waiting = population["mine-wait"]
    rows = page_of(as_user(client, owner), ROWS)
    row = rows[rows.index(f'data-session="{waiting.pk}"'):]
    row = row[:row.index("</tr>")]
    assert 'data-row-action="destroy"' in row and "The request is cancelled." in row
    for action in ("open", "terminal", "logs"):
        assert f'data-row-action="{action}"' not in row
    Session.objects.filter(pk=waiting.pk).update(status="CANCELLED")
    rows = page_of(client, ROWS)
    row = rows[rows.index(f'data-session="{waiting.pk}"'):]
    assert 'data-row-action' not in row[:row.index("</tr>")]


def test_a_running_row_without_a_report_says_it_waits_for_one(client, owner, cluster):
    session = running(owner, "silent")
    rows = page_of(as_user(client, owner), ROWS)
    row = rows[rows.index(f'data-session="{session.pk}"'):]
    assert "waiting for the first report" in row[:row.index("</tr>")]


def test_destroy_from_a_row_returns_to_the_list(client, owner, population):
    session = population["mine-wait"]
    back = f"{LIST}?scope=mine&state=active&q=mine"
    response = as_user(client, owner).post(detail(session, "destroy"), {"next": back})
    assert response.status_code == 302 and response["Location"] == back
    assert Session.objects.get(pk=session.pk).status == "CANCELLED"
    assert "Session mine-wait is cancelled." in page_of(client)


def test_destroying_a_running_session_says_what_stays_true(client, owner, population):
    session = population["mine-run"]
    api = as_user(client, owner)
    page = api.post(detail(session, "destroy"), follow=True).content.decode()
    assert Session.objects.get(pk=session.pk).status == "TERMINATING"
    assert "Session mine-run: destroy requested." in page and "is terminating" not in page


@pytest.mark.parametrize("target", ["https://evil.example.com/ui/sessions/", "//evil.example.com/x", "/admin/"])
def test_destroy_never_follows_a_foreign_next(client, owner, population, target):
    session = population["mine-wait"]
    response = as_user(client, owner).post(detail(session, "destroy"), {"next": target})
    assert response["Location"] == detail(session)


def test_others_cannot_destroy_a_session_from_the_list(client, population, member, outsider, foreign_admin):
    session = population["mine-run"]
    for user in (member, outsider, foreign_admin):
        response = as_user(client, user).post(detail(session, "destroy"), {"next": LIST})
        assert response.status_code == 404
    assert Session.objects.get(pk=session.pk).status == "RUNNING"


@pytest.mark.parametrize("who,scope", [("domain_admin", "domain"), ("superadmin", "all")])
def test_an_admin_destroys_a_session_they_oversee_from_the_list(client, population, request, who, scope):
    session = population["mine-wait"]
    api = as_user(client, request.getfixturevalue(who))
    rows = page_of(api, ROWS, scope=scope)
    assert f'action="{detail(session, "destroy")}"' in rows
    back = f"{LIST}?scope={scope}"
    response = api.post(detail(session, "destroy"), {"next": back})
    assert response.status_code == 302 and response["Location"] == back
    assert Session.objects.get(pk=session.pk).status == "CANCELLED"


# --- the list: a constant number of queries -------------------------------------------------------

def _many(owner, template: Session, count: int, start_at: int = 0) -> None:
    """``count`` more sessions like ``template``, half of them RUNNING with a kernel that reported."""
    sessions = Session.objects.bulk_create([
        Session(name=f"bulk-{i:05d}", domain_id=template.domain_id, project_id=template.project_id, user=owner,
                access_key=template.access_key, image=IMAGE, scaling_group=template.scaling_group,
                requested_slots={"cpu": "1", "mem": str(GiB)}, status="RUNNING" if i % 2 else "PENDING")
        for i in range(start_at, start_at + count)])
    Kernel.objects.bulk_create([
        Kernel(session=s, image=IMAGE, agent_id="node-1", status="RUNNING" if s.status == "RUNNING" else "PENDING",
               occupied_slots={"cpu": "1", "mem": str(GiB)}, service_ports=[JUPYTER],
               last_stat={"cpu_util": "25.0", "mem_used": str(GiB // 2)} if s.status == "RUNNING" else None)
        for s in sessions])


@pytest.mark.parametrize("url", [LIST, ROWS])
@pytest.mark.parametrize("who", ["owner", "superadmin"])
def test_the_list_costs_the_same_queries_for_10_and_1000_sessions(client, owner, superadmin, cluster, url, who,
                                                                   django_assert_num_queries):
    template = start(owner, "first-one")
    _many(owner, template, 9)
    api = as_user(client, owner if who == "owner" else superadmin)
    params = {"scope": "all"} if who == "superadmin" else {}
    with CaptureQueriesContext(connection) as small:
        assert api.get(url, params).status_code == 200
    _many(owner, template, 990, start_at=9)
    assert Session.objects.count() == 1000
    with django_assert_num_queries(len(small.captured_queries)):
        page = api.get(url, params).content.decode()
    assert page.count("data-session=") == 50 and page.count('data-row-action="open"') == 25
    assert page.count('<span class="small">0.2 of 1 cores (25 %)</span>') == 25


# --- the session page -----------------------------------------------------------------------------

def test_a_running_session_page_shows_live_usage_mounts_and_idle_countdowns(client, owner, cluster, settings):
    settings.IDLE_UTILIZATION_THRESHOLDS = {"cpu_util": 2}
    settings.IDLE_UTILIZATION_WINDOW = 600
    policy = owner.main_keypair.resource_policy
    policy.idle_timeout = 900
    policy.save()
    session = running(owner, "watched", stats={"cpu_util": "80.0", "mem_used": str(3 * GiB // 2)},
                      resources={"cpu": "2", "mem": "4g"})
    folder_id = uuid.uuid4()
    Session.objects.filter(pk=session.pk).update(vfolder_mounts=[
        {"vfolder_id": str(folder_id), "name": "data", "subpath": ".", "container_path": "/home/work/data",
         "mode": "ro", "host_path": "/srv/vfroot/secret/abc"},
        {"vfolder_id": "garbage", "name": "models", "subpath": "v2", "container_path": "/mnt/models", "mode": "rw"}])
    page = page_of(as_user(client, owner), detail(session))
    live = page[page.index('id="session-live"'):]
    assert 'id="live-usage"' in live and "0.8 of 2 cores (40 %)" in live and "1.5 GiB of 4 GiB (38 %)" in live
    mounts = live[live.index('id="mounts"'):]
    assert "<code>/home/work/data</code>" in mounts and "read only" in mounts and "/mnt/models" in mounts
    assert reverse("ui-vfolders:browse", kwargs={"folder_id": folder_id}) in mounts and "/v2" in mounts
    assert "/srv/vfroot" not in page  # the storage's host path stays out of the page
    assert re.search(r'data-check="network_timeout"[^>]*><strong[^>]*>terminates in 15 min if idle', live)
    assert re.search(r'data-check="utilization"[^>]*><strong[^>]*>terminates in 10 min if idle', live)
    assert "CPU below 2 %" in live
    kernel = session.kernels.get()
    assert f'data-kernel="{kernel.pk}"' in live and "0.8 of 2 cores (40 %) CPU" in live


def test_a_running_session_keeps_no_stale_text(client, owner, cluster):
    """The page of a session that was queued when the user arrived, polled once it runs."""
    api = as_user(client, owner)
    response = api.post(reverse("ui-sessions:create"), {
        "image": IMAGE, "architecture": "", "session_type": "batch", "scaling_group": "", "preset": "",
        "project": "default", "name": "stale-check", "startup_command": "sleep 60", "environ": "",
        "batch_timeout": "", "slot_cpu": "1", "slot_mem": "1g"})
    assert response.status_code == 302, response.content.decode()[:2000]
    session = Session.objects.get(name="stale-check")
    queued = api.get(response["Location"]).content.decode()
    assert "Session stale-check is queued." in queued and 'id="status-message"' in queued
    assert "result: undefined" not in queued and "the result is known when the command ends" in queued
    # it starts: the page polled (status fragment) and loaded again tells no tale of waiting
    from sessions import scheduler

    scheduler.run_pass("default")
    kernel = session.kernels.get()
    agent_sync.apply_kernel_reports(kernel.agent, [{"kernel_id": str(kernel.pk), "status": "RUNNING",
                                                    "stats": {"cpu_util": "1", "mem_used": "1"}}])
    assert Session.objects.get(pk=session.pk).status == "RUNNING"
    for url in (detail(session, "detail-status"), detail(session)):
        page = page_of(api, url)
        assert "status-running" in page
        for stale in ("queued", "Queued", "Why it waits", "opens once the session is running",
                      "once the session is running", "result: undefined", "Idle checks count while"):
            assert stale not in page, (url, stale)
    fragment = page_of(api, detail(session, "detail-status"))
    assert 'id="live-usage"' in fragment and 'id="session-result"' in fragment


def test_an_ended_batch_session_says_its_result_and_no_undefined(client, owner, cluster):
    session = start(owner, "batch-done", session_type="batch", startup_command="true")
    Session.objects.filter(pk=session.pk).update(status="TERMINATED", result="success")
    page = page_of(as_user(client, owner), detail(session, "detail-status"))
    assert "result: success" in page and "undefined" not in page and 'id="live-usage"' not in page
    Session.objects.filter(pk=session.pk).update(result="undefined")
    assert "result: none recorded" in page_of(client, detail(session, "detail-status"))


def test_the_restart_message_lasts_only_while_it_restarts(client, owner, cluster):
    session = running(owner, "again")
    api = as_user(client, owner)
    page = api.post(detail(session, "restart"), follow=True).content.decode()
    assert re.search(r'id="status-message"[^>]*>Session again is restarting\.', page)
    kernel = session.kernels.get()
    restart_id = kernel.status_data["restart_id"]
    agent_sync.apply_kernel_reports(kernel.agent, [{"kernel_id": str(kernel.pk), "status": "RUNNING",
                                                    "restart_id": restart_id}])
    assert Session.objects.get(pk=session.pk).status == "RUNNING"
    # a message not yet shown (say, another tab) is dropped once its status has passed
    api.post(detail(session, "restart"))
    agent_sync.apply_kernel_reports(kernel.agent, [{"kernel_id": str(kernel.pk), "status": "RUNNING",
                                                    "restart_id": session.kernels.get().status_data["restart_id"]}])
    assert "is restarting" not in page_of(api, detail(session))


@pytest.mark.parametrize("who", ["member", "outsider", "foreign_admin"])
def test_others_get_404_for_the_session_page_and_its_live_part(client, owner, cluster, request, who):
    session = running(owner, "private", stats={"cpu_util": "1", "mem_used": "1"})
    api = as_user(client, request.getfixturevalue(who))
    for url in (detail(session), detail(session, "detail-status")):
        assert api.get(url).status_code == 404


@pytest.mark.parametrize("who", ["domain_admin", "superadmin"])
def test_admins_see_the_live_usage_of_a_session_they_oversee(client, owner, cluster, request, who):
    session = running(owner, "overseen", stats={"cpu_util": "100", "mem_used": str(GiB)})
    page = page_of(as_user(client, request.getfixturevalue(who)), detail(session, "detail-status"))
    assert 'id="live-usage"' in page and "1 of 1 cores (100 %)" in page


def test_a_poll_leaves_the_users_messages_for_the_page(client, owner, cluster):
    session = start(owner, "polled")
    api = as_user(client, owner)
    api.post(detail(session, "restart"))  # refused: a message for the page it redirects to
    assert "can be restarted" not in page_of(api, detail(session, "detail-status"))
    assert "Only running sessions can be restarted" in page_of(api, detail(session))
