"""The web UI's dashboard (``/ui/``) and its live fragment (``/ui/live/``): the user's running
sessions with their live usage, quota gauges, the resource groups' capacity and recent
session events; only the user's own sessions; a fixed number of queries whatever they own."""
from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import KeypairResourcePolicy, UserResourcePolicy
from agents import services as agent_services
from agents.models import Agent, ScalingGroup
from sessions import services as session_services
from sessions.lifecycle import KernelStatus, SessionStatus, history_entry
from sessions.models import Kernel, Session
from vfolders.models import StorageHost, VFolder

pytestmark = pytest.mark.django_db

GIB = 2**30


@pytest.fixture
def agent(defaults):
    group = agent_services.ensure_default_scaling_group()
    return Agent.objects.create(id="node-1", scaling_group=group, last_heartbeat=timezone.now(),
                                available_slots={"cpu": "8", "mem": str(16 * GIB), "cuda.device": "2"},
                                occupied_slots={"cpu": "3", "mem": str(4 * GIB)})


def storage_host() -> StorageHost:
    return StorageHost.objects.get_or_create(name="local:volume1")[0]


def running(user, agent, name, *, cpu_util="150", mem_used=str(GIB), slots=None) -> Session:
    """A RUNNING session of ``user`` on ``agent`` whose kernel reported ``cpu_util`` and ``mem_used``
    (the way the agent's sync writes ``Kernel.last_stat``)."""
    session = session_services.create_session_on_agent(
        user=user, image="bai-test/http:1.0", agent=agent, name=name,
        slots=slots or {"cpu": "2", "mem": str(2 * GIB)})
    now = timezone.now()
    Session.objects.filter(pk=session.pk).update(
        status=SessionStatus.RUNNING, status_changed=now,
        status_history=[*session.status_history, history_entry(SessionStatus.RUNNING, now)])
    Kernel.objects.filter(session=session).update(
        status=KernelStatus.RUNNING, last_stat={"cpu_util": cpu_util, "mem_used": mem_used})
    return session


def live(client) -> str:
    response = client.get("/ui/live/")
    assert response.status_code == 200 and response["X-Live-Fragment"] == "1"
    return response.content.decode()


def gauge(page: str, key: str) -> str:
    """The text of the gauge ``key`` in ``page``."""
    match = re.search(rf'data-gauge="{re.escape(key)}".*?class="gauge-text"[^>]*>([^<]*)<', page, re.S)
    assert match, f"no gauge {key}"
    return match.group(1).strip()


def test_the_dashboard_shows_each_running_session_with_its_live_usage(client, owner, agent):
    running(owner, agent, "first", cpu_util="150", mem_used=str(GIB))
    running(owner, agent, "second", cpu_util="50", mem_used=str(GIB // 2))
    client.force_login(owner)
    page = client.get("/ui/").content.decode()
    assert "first" in page and "second" in page
    assert "1.5 of 2 cores (75 %)" in page and "0.5 of 2 cores (25 %)" in page
    assert "1 GiB of 2 GiB (50 %)" in page and "512 MiB of 2 GiB (25 %)" in page
    assert 'hx-get="/ui/live/"' in page and 'hx-trigger="every 5s"' in page


def test_a_session_without_stats_yet_says_it_waits_for_the_first_report(client, owner, agent):
    session = running(owner, agent, "fresh")
    Kernel.objects.filter(session=session).update(last_stat=None)
    client.force_login(owner)
    assert "waiting for the first report" in live(client)


def test_the_dashboard_shows_no_session_of_another_user(client, owner, outsider, agent):
    running(owner, agent, "ownersession")
    client.force_login(outsider)
    page = live(client)
    assert "ownersession" not in page and "No session is running" in page
    assert gauge(page, "sessions").startswith("0 of")


def test_the_quota_gauges_show_sessions_slots_and_folders_against_the_limits(client, owner, agent):
    policy = KeypairResourcePolicy.objects.create(
        name="small", total_resource_slots={"cpu": "8", "mem": str(16 * GIB)}, max_concurrent_sessions=3,
        default_for_unspecified="LIMITED")
    owner.main_keypair.resource_policy = policy
    owner.main_keypair.save()
    user_policy = UserResourcePolicy.objects.create(name="fewfolders", max_vfolder_count=4)
    owner.resource_policy = user_policy
    owner.save()
    running(owner, agent, "one")
    running(owner, agent, "two", slots={"cpu": "1", "mem": str(GIB)})
    VFolder.objects.create(name="data", host=storage_host(), user=owner, domain=owner.domain, quota_scope_id=f"user:{owner.pk}")
    client.force_login(owner)
    page = live(client)
    assert gauge(page, "sessions") == "2 of 3"
    assert gauge(page, "cpu") == "3 of 8 cores"
    assert gauge(page, "mem") == "3 of 16 GiB"
    assert gauge(page, "folders") == "1 of 4"
    assert re.search(r'data-gauge="sessions".*?<meter min="0" max="3.000" value="2.000"', page, re.S)


def test_an_unlimited_slot_is_shown_without_a_meter(client, owner, agent):
    running(owner, agent, "one")
    client.force_login(owner)
    page = live(client)
    quota = page[page.index('id="quota"'):page.index('id="capacity-heading"')]
    assert gauge(quota, "cpu") == "2 cores · no limit"
    assert not re.search(r'data-gauge="cpu">\s*<span[^>]*>[^<]*</span>\s*<meter', quota)
    assert re.search(r'data-gauge="sessions">\s*<span[^>]*>[^<]*</span>\s*<meter', quota)


def test_the_capacity_shows_free_and_total_of_the_users_resource_groups(client, owner, agent):
    ScalingGroup.objects.create(name="hidden", is_public=False)  # not associated with the user: not theirs
    client.force_login(owner)
    page = live(client)
    assert 'data-group="default"' in page and 'data-group="hidden"' not in page
    assert "5 free of 8 cores" in page and "12 free of 16 GiB" in page and "2 free of 2 GPUs" in page


def test_a_superadmin_sees_the_whole_clusters_capacity(client, superadmin, agent):
    ScalingGroup.objects.create(name="hidden", is_public=False)
    client.force_login(superadmin)
    page = live(client)
    assert "Cluster capacity" in page and 'data-group="default"' in page and 'data-group="hidden"' in page


def test_recent_events_list_what_happened_to_the_users_sessions_newest_first(client, owner, member, agent):
    session = running(owner, agent, "evented")
    running(member, agent, "notmine")
    Session.objects.filter(pk=session.pk).update(status_info="user-requested", status=SessionStatus.TERMINATED,
                                                 status_history=[*Session.objects.get(pk=session.pk).status_history,
                                                                 history_entry(SessionStatus.TERMINATED,
                                                                               timezone.now())])
    client.force_login(owner)
    page = live(client)
    events = page[page.index('id="events"'):]
    rows = re.findall(r"<tr><td>.*?</tr>", events, re.S)
    assert [re.sub(r"<[^>]+>", "", r).split("evented")[-1] for r in rows] == [
        "ended: user-requested", "started", "scheduled on an agent", "queued"]
    assert "notmine" not in page


def test_the_live_fragment_needs_a_login(client):
    response = client.get("/ui/live/")
    assert response.status_code == 302 and response["Location"].startswith("/ui/login/")


def count_queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


def test_the_dashboard_reads_a_fixed_number_of_queries_whatever_the_user_owns(client, owner, agent,
                                                                             django_assert_num_queries):
    client.force_login(owner)
    running(owner, agent, "s0")
    few = (count_queries(client, "/ui/"), count_queries(client, "/ui/live/"))
    for index in range(1, 8):
        session = running(owner, agent, f"s{index}")
        Kernel.objects.create(session=session, agent=agent, image=session.image, status=KernelStatus.RUNNING,
                              cluster_role="sub", cluster_idx=2, last_stat={"cpu_util": "10", "mem_used": "10"})
        VFolder.objects.create(name=f"f{index}", host=storage_host(), user=owner, domain=owner.domain, quota_scope_id=f"user:{owner.pk}")
    many = (count_queries(client, "/ui/"), count_queries(client, "/ui/live/"))
    assert many == few
    # pinned: the login session and user, then the live part's reads (sessions, usage, quota, capacity, events)
    with django_assert_num_queries(15):
        client.get("/ui/live/")
