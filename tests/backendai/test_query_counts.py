"""Query-count baselines for the hot paths (NetBox's habit): the agent sync and
events, one poll of the session events stream, ``compute_session_list``,
``vfolder_list`` and the sessions page.

Each path is driven through its URL (the daemon's, the official client's, the
browser's) with one row and with many.  The test fails when the count grows with
the rows (an N+1) or differs from the baseline pinned below; the failure prints
every SQL statement the request ran, so the new one is easy to spot.

To re-pin a baseline after a deliberate change: run this file, read the count and
the statements in the failure message, check that each new statement is wanted,
and set the constant to the new count (saying why in the commit).  A lower count
is welcome but must be pinned too, so that the saving is kept."""
from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from helpers import CLIENT_PS_DOCUMENT, seed_http_image_and_agent

from agents import services as agent_services
from sessions import services as session_services
from sessions.models import Kernel, Session

pytestmark = pytest.mark.django_db

# --- the pinned baselines: SQL statements per request, SAVEPOINTs included ----------------------------
# The agent sync: the token, the scaling group, the slot types, the agent's row (locked, then saved),
# the token's last use, the images and their links, the reported kernels (ids, then their sessions and
# kernels locked), the occupancy and the desired state; moving kernels adds one bulk write of kernels
# and one of sessions.  The occupancy is one statement on PostgreSQL and three on SQLite (the agents,
# their kernels, the slots to compare), hence a baseline per database.
AGENT_SYNC_REPLAY = {"postgresql": 18, "sqlite": 20}
AGENT_SYNC_TRANSITIONS = {"postgresql": 20, "sqlite": 22}
# The agent events: the token, the agent's row (locked), the reported kernels as in a sync, the bulk
# writes of kernels and sessions, the occupancy.
AGENT_EVENTS = {"postgresql": 10, "sqlite": 12}
# One poll of /events/session: the sessions that changed, then their kernels.
SSE_POLL = 2
# compute_session_list: the signature (keypair, last use), the count, the page with its project and
# user, its kernels and its dependencies.  The idle checks of each item read the item's keypair and
# its resource policy: they must come joined with the page, never as two statements per item.
COMPUTE_SESSION_LIST = 6
# vfolder_list: the signature, the count, the folders, memberships and grants.
VFOLDER_LIST = 6
# GET /session/<id> (the official client's REST read of a session): the signature (keypair with its
# user and policy, then its last use), the session with its keypair and policy, project, user and
# scaling group, and its kernels with their agents (the idle checks, the service ports and the agents'
# state all read those).
SESSION_INFO = 4
# The sessions page: the login session, the user (with its preferences), the page's count and its
# sessions, the user's projects and resource groups (the filter menus) and the live app proxy workers
# (the "Open <app>" form targets).  The live usage of running rows comes with them in one more.
SESSIONS_PAGE = 7

MANY = 10  # rows on the "many" side of each comparison
SUBS = 2  # extra (sub) kernels per session on the "many" side

PS = CLIENT_PS_DOCUMENT
PS_VARIABLES = {"status": "PENDING,SCHEDULED,PULLING,PREPARING,RUNNING,RUNNING_DEGRADED,TERMINATING,ERROR",
                "access_key": None, "filter": None, "order": None, "limit": 20, "offset": 0}
VFOLDERS = """query($limit:Int!, $offset:Int!, $group_id: UUID, $filter: String, $order: String) {
  vfolder_list(
      limit:$limit, offset:$offset, group_id:$group_id, filter:$filter, order:$order) {
    items { host name created_at creator group permission ownership_type status }
    total_count
  }
}"""
VFOLDER_VARIABLES = {"limit": 20, "offset": 0, "group_id": None, "filter": None, "order": None}
FOLDER_BODY = {"host": "local:volume1", "unmanaged_path": None, "group": None, "usage_mode": "general",
               "permission": "rw", "quota": "0", "cloneable": False}
SLOTS = {"cpu": "0.1", "mem": "33554432"}


# --- counting ----------------------------------------------------------------------------------------

def listing(captured: CaptureQueriesContext) -> str:
    return "\n".join(f"  {i:2d}. {q['sql']}" for i, q in enumerate(captured.captured_queries, 1))


def assert_flat_and_pinned(what: str, one: CaptureQueriesContext, many: CaptureQueriesContext,
                           baseline: int | dict[str, int]):
    """The same number of statements for one row as for many, and exactly ``baseline`` (a count, or
    a count per database vendor)."""
    if isinstance(baseline, dict):
        baseline = baseline[connection.vendor]
    assert len(many) == len(one), (
        f"{what}: {len(one)} statements for one row but {len(many)} for {MANY} (a query per row?)\n"
        f"for one row:\n{listing(one)}\nfor {MANY} rows:\n{listing(many)}")
    assert len(one) == baseline, (
        f"{what}: {len(one)} statements, the pinned baseline is {baseline} "
        f"(re-pin at the top of {__name__} if the change is deliberate):\n{listing(one)}")


# --- the world: an agent with sessions placed on it --------------------------------------------------

@pytest.fixture
def group(defaults):
    return agent_services.ensure_default_scaling_group()


@pytest.fixture
def token(group):
    return agent_services.issue_token("nodes", scaling_group=group)[1]


@pytest.fixture
def image_and_agent(group):
    return seed_http_image_and_agent(group)


def place(user, agent, sessions: int, subs: int = 0) -> list[Session]:
    """``sessions`` single-kernel sessions placed on ``agent``, each with ``subs`` extra sub kernels."""
    placed = []
    for _ in range(sessions):
        session = session_services.create_session_on_agent(
            user=user, image="bai-test/http:1.0", agent=agent, slots=SLOTS,
            service_ports=[{"name": "web", "protocol": "http", "container_ports": [8080]}])
        main = session.kernels.get()
        for idx in range(2, subs + 2):
            Kernel.objects.create(
                session=session, agent=agent, agent_addr=agent.addr, image=main.image, cluster_role="sub",
                cluster_idx=idx, cluster_hostname=f"sub{idx - 1}", requested_slots=SLOTS, occupied_slots=SLOTS,
                service_ports=main.service_ports, status=main.status, status_changed=main.status_changed,
                status_history=main.status_history)
        placed.append(session)
    return placed


def kernels_of(sessions) -> list[Kernel]:
    return list(Kernel.objects.filter(session__in=sessions).order_by("session_id", "cluster_idx"))


def sync_body(agent_id: str, reports: list[dict]) -> dict:
    return {
        "agent_id": agent_id, "scaling_group": "default", "region": "local", "address": "127.0.0.1",
        "version": "0.1.0", "architecture": "x86_64", "backend": "docker",
        "capacity": {"cpu": "4", "mem": "8589934592"}, "slot_types": {"cpu": "count", "mem": "bytes"},
        "devices": [], "images": [{"name": "bai-test/http:1.0", "digest": "sha256:abc", "size": 1000,
                                   "labels": {"ai.backend.service-ports": "web:http:8080"}}],
        "stats": {"cpu_util": "3.5", "mem_used": "1048576"}, "kernels": reports,
    }


def report(kernel: Kernel, status: str) -> dict:
    return {"kernel_id": str(kernel.pk), "session_id": str(kernel.session_id), "status": status,
            "container_id": f"c-{kernel.pk.hex[:12]}", "host": "127.0.0.1",
            "service_ports": [{"name": "web", "protocol": "http", "container_ports": [8080],
                               "host_ports": [30000 + kernel.cluster_idx]}],
            "stats": {"cpu_util": "1.5", "mem_used": "1048576"}}


def agent_post(client, path: str, token: str, payload: dict):
    response = client.post(path, json.dumps(payload), content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200, response.content
    return response


def two_agents(owner, image_and_agent):
    """``node-1`` with one session of one kernel, ``node-2`` with MANY sessions of 1 + SUBS kernels."""
    _, one = image_and_agent
    many = type(one).objects.create(id="node-2", scaling_group=one.scaling_group, available_slots=one.available_slots,
                                    last_heartbeat=timezone.now())
    return (one, kernels_of(place(owner, one, 1))), (many, kernels_of(place(owner, many, MANY, SUBS)))


# --- the agent protocol ------------------------------------------------------------------------------

def test_agent_sync_costs_the_same_statements_for_one_or_many_kernels(client, token, owner, image_and_agent):
    """The steady state: every kernel reported as the manager already knows it."""
    counted = []
    for agent, kernels in two_agents(owner, image_and_agent):
        reports = [report(k, "RUNNING") for k in kernels]
        agent_post(client, "/agent-api/v1/sync", token, sync_body(agent.pk, reports))  # now RUNNING
        with CaptureQueriesContext(connection) as captured:
            answer = agent_post(client, "/agent-api/v1/sync", token, sync_body(agent.pk, reports)).json()
        assert len(answer["desired"]) == len(kernels) and answer["stop"] == []
        counted.append(captured)
    assert_flat_and_pinned("agent sync (replayed reports)", *counted, AGENT_SYNC_REPLAY)


def test_an_agent_sync_moving_every_kernel_costs_the_same_statements_for_one_or_many(client, token, owner,
                                                                                     image_and_agent):
    counted = []
    for agent, kernels in two_agents(owner, image_and_agent):
        agent_post(client, "/agent-api/v1/sync", token, sync_body(agent.pk, []))  # registered, nothing moved
        with CaptureQueriesContext(connection) as captured:
            agent_post(client, "/agent-api/v1/sync", token, sync_body(agent.pk, [report(k, "RUNNING") for k in kernels]))
        assert set(Kernel.objects.filter(agent=agent).values_list("status", flat=True)) == {"RUNNING"}
        counted.append(captured)
    assert_flat_and_pinned("agent sync (every kernel moves to RUNNING)", *counted, AGENT_SYNC_TRANSITIONS)


def test_agent_events_cost_the_same_statements_for_one_or_many_events(client, token, owner, image_and_agent):
    counted = []
    for agent, kernels in two_agents(owner, image_and_agent):
        agent_post(client, "/agent-api/v1/sync", token, sync_body(agent.pk, []))
        events = [{**report(k, "PULLING"), "timestamp": timezone.now().isoformat()} for k in kernels]
        with CaptureQueriesContext(connection) as captured:
            answer = agent_post(client, "/agent-api/v1/events", token, {"agent_id": agent.pk, "events": events})
        assert answer.json() == {"accepted": len(kernels)}
        assert set(Kernel.objects.filter(agent=agent).values_list("status", flat=True)) == {"PULLING"}
        counted.append(captured)
    assert_flat_and_pinned("agent events", *counted, AGENT_EVENTS)


# --- the session events stream -----------------------------------------------------------------------

def restamp_now(sessions) -> None:
    """Date the last status change of ``sessions`` and their kernels now, so that the stream's first
    poll (which looks a second or two back) finds every one of them however slow the set-up was."""
    now = timezone.now()
    for model, rows in ((Session, list(Session.objects.filter(pk__in=[s.pk for s in sessions]))),
                        (Kernel, kernels_of(sessions))):
        for row in rows:
            row.status_changed = now
            row.status_history = [*row.status_history[:-1], {**row.status_history[-1], "timestamp": now.isoformat()}]
        model.objects.bulk_update(rows, ["status_changed", "status_history"])


def first_poll(response) -> tuple[CaptureQueriesContext, str]:
    """Read the stream's opening comment, then its first event: exactly one poll runs in between.
    Returns the statements of that poll and the event.  One event loop reads both (a loop that
    ends closes the stream); the stream's polls run in this thread (``sync_to_async`` under
    ``async_to_sync``), on the connection counted here, and the count starts and stops there too."""
    assert response.status_code == 200 and response["Content-Type"].startswith("text/event-stream")
    captured = CaptureQueriesContext(connection)

    async def read(chunks):
        opening = await asyncio.wait_for(anext(chunks), timeout=5)
        await sync_to_async(captured.__enter__)()
        try:
            event = await asyncio.wait_for(anext(chunks), timeout=10)
        finally:
            await sync_to_async(captured.__exit__)(None, None, None)
        return [chunk.decode() if isinstance(chunk, bytes) else chunk for chunk in (opening, event)]

    opening, event = async_to_sync(read)(aiter(response.streaming_content))
    assert opening == ": ok\n\n"
    return captured, event


def test_a_poll_of_the_session_events_stream_costs_the_same_for_one_or_many_sessions(signed, owner, member,
                                                                                     image_and_agent):
    _, agent = image_and_agent
    counted = []
    for user, sessions in ((owner, place(owner, agent, 1)), (member, place(member, agent, MANY, SUBS))):
        restamp_now(sessions)
        captured, event = first_poll(signed(user).get("/events/session"))
        assert event.startswith(("event: session_", "event: kernel_")), event  # the poll found the sessions
        counted.append(captured)
    assert_flat_and_pinned("one poll of /events/session", *counted, SSE_POLL)


# --- GraphQL -----------------------------------------------------------------------------------------

def gql(api, document: str, variables: dict) -> tuple[CaptureQueriesContext, dict]:
    with CaptureQueriesContext(connection) as captured:
        response = api.post("/admin/gql", {"query": document, "variables": variables})
    assert response.status_code == 200, response.content
    body = response.json()
    assert "errors" not in body, body
    return captured, body["data"]


def test_compute_session_list_costs_the_same_statements_for_few_or_many_sessions_and_kernels(
        signed, owner, member, image_and_agent):
    _, agent = image_and_agent
    counted = []
    for user, sessions in ((owner, place(owner, agent, 1)), (member, place(member, agent, MANY, SUBS))):
        api = signed(user)
        gql(api, PS, PS_VARIABLES)  # per-process caches warmed
        captured, data = gql(api, PS, PS_VARIABLES)
        listed = data["compute_session_list"]
        assert listed["total_count"] == len(sessions) == len(listed["items"])
        assert {i["main_kernel_id"] for i in listed["items"]} == {str(k.pk) for k in kernels_of(sessions)
                                                                   if k.cluster_role == "main"}
        counted.append(captured)
    assert_flat_and_pinned("GraphQL compute_session_list", *counted, COMPUTE_SESSION_LIST)


@pytest.fixture
def storage(settings, tmp_path, defaults):
    from vfolders import services as vfolder_services

    settings.VFOLDER_ROOT = tmp_path / "vfroot"
    return vfolder_services.ensure_default_storage_host()


def folders(api, names) -> None:
    for name in names:
        created = api.post("/folders", {**FOLDER_BODY, "name": name})
        assert created.status_code == 201, created.content


def share(owner_api, invitee_api, invitee, names) -> None:
    """Invite ``invitee`` to each folder and accept every invitation, all through the API."""
    for name in names:
        invited = owner_api.post(f"/folders/{name}/invite", {"perm": "ro", "emails": [invitee.email]})
        assert invited.status_code == 201, invited.content
    for invitation in invitee_api.get("/folders/invitations/list").json()["invitations"]:
        assert invitee_api.post("/folders/invitations/accept", {"inv_id": invitation["id"]}).status_code == 200


def test_vfolder_list_costs_the_same_statements_for_few_or_many_folders(signed, owner, member, make_user, storage):
    lender = make_user("lender@example.com")
    owner_api, member_api, lender_api = signed(owner), signed(member), signed(lender)
    folders(owner_api, ["solo"])
    folders(member_api, [f"own-{i}" for i in range(MANY // 2)])
    folders(lender_api, [f"lent-{i}" for i in range(MANY // 2)])
    share(lender_api, member_api, member, [f"lent-{i}" for i in range(MANY // 2)])
    counted = []
    for api, expected in ((owner_api, 1), (member_api, MANY)):
        gql(api, VFOLDERS, VFOLDER_VARIABLES)
        captured, data = gql(api, VFOLDERS, VFOLDER_VARIABLES)
        assert data["vfolder_list"]["total_count"] == expected == len(data["vfolder_list"]["items"])
        counted.append(captured)
    assert {i["permission"] for i in data["vfolder_list"]["items"]} == {"rw", "ro"}
    assert_flat_and_pinned("GraphQL vfolder_list", *counted, VFOLDER_LIST)


# --- the sessions page -------------------------------------------------------------------------------

def test_the_sessions_page_costs_the_same_statements_for_few_or_many_sessions(client, owner, member,
                                                                              image_and_agent):
    _, agent = image_and_agent
    url = reverse("ui-sessions:list")
    counted = []
    for user, sessions in ((owner, place(owner, agent, 1)), (member, place(member, agent, MANY, SUBS))):
        client.force_login(user)
        assert client.get(url).status_code == 200
        with CaptureQueriesContext(connection) as captured:
            page = client.get(url)
        assert page.status_code == 200
        assert page.content.decode().count("data-session=") == len(sessions)
        counted.append(captured)
    assert_flat_and_pinned("the sessions page", *counted, SESSIONS_PAGE)



# --- the REST read of a session ----------------------------------------------------------------------

def session_info(api, session) -> tuple[CaptureQueriesContext, dict]:
    api.get(f"/session/{session.pk}")  # per-process caches warmed
    with CaptureQueriesContext(connection) as captured:
        response = api.get(f"/session/{session.pk}")
    assert response.status_code == 200, response.content
    return captured, response.json()


def test_it_answers_a_session_info_in_the_same_statements_for_one_kernel_or_a_cluster_among_many(
        signed, owner, member, image_and_agent):
    _, agent = image_and_agent
    one, answer = session_info(signed(owner), place(owner, agent, 1)[0])
    assert answer["servicePorts"] and answer["agents"] == [{"id": agent.pk, "status": "ALIVE", "lostAt": None}]
    crowd = place(member, agent, MANY, SUBS)
    many, answer = session_info(signed(member), crowd[-1])
    assert answer["sessionId"] == str(crowd[-1].pk) and answer["servicePorts"]
    assert_flat_and_pinned("GET /session/<id>", one, many, SESSION_INFO)
