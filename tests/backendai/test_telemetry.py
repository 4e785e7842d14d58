"""The ``backendai_*`` metrics of the reference (§12), measured where the work happens
(``backendai.telemetry``): a scripted workload through the real API, then the families with the
labels and counts it must have produced.  Counters are process-global, so every check compares
the value before and after."""
import os
import subprocess
import sys
import textwrap
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.parser import text_string_to_metric_families

from backendai import bgtasks, telemetry
from helpers import client_body, slug
from sessions.models import Session

pytestmark = pytest.mark.django_db

OK = {"domain": "", "operation": "", "error_detail": ""}


def value(metric: str, **labels) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


class Deltas:
    """Sample values before a block, read again after it."""

    def __init__(self, **samples):
        self.samples = samples  # key -> (sample name, labels)
        self.before = {key: value(metric, **labels) for key, (metric, labels) in samples.items()}

    def __getitem__(self, key) -> float:
        metric, labels = self.samples[key]
        return value(metric, **labels) - self.before[key]


def api(method, endpoint, status, **errors):
    return ("backendai_api_request_count_total",
            {"method": method, "endpoint": endpoint, "status_code": str(status), **OK, **errors})


def families() -> dict:
    return {f.name: f for f in text_string_to_metric_families(generate_latest(REGISTRY).decode())}


@pytest.fixture
def cluster(defaults):
    from agents import services as agent_services
    from helpers import seed_http_image_and_agent

    group = agent_services.ensure_default_scaling_group()
    seed_http_image_and_agent(group)
    return group


@pytest.fixture
def host(db, storage_proxy):
    from vfolders import services

    return services.ensure_default_storage_host()


SESSION_LIST = """query { compute_session_list(limit: 10, offset: 0) { items { name status } total_count } }"""


def test_the_scripted_workload_shows_every_family_with_counts_that_match_it(
        signed, owner, cluster, host, django_capture_on_commit_callbacks):
    from sessions.scheduler import reconcile_stuck, run_pass

    d = Deltas(
        create=api("POST", "session", 201),
        get=api("GET", "session/<str:name>", 200),
        clash=api("POST", "session", 400, domain="session", operation="create", error_detail="already-exists"),
        missing=api("GET", "session/<str:name>", 404, domain="api", operation="read", error_detail="not-found"),
        unmatched=api("GET", "unmatched", 404, domain="api", operation="route", error_detail="not-found"),
        destroy=api("DELETE", "session/<str:name>", 200),
        gql=api("POST", "admin/gql", 200),
        folder=api("POST", "folders", 201),
        duration=("backendai_api_request_duration_sec_count", {"method": "POST", "endpoint": "session",
                                                              "status_code": "201", **OK}),
        gql_ok=("backendai_graphql_request_count_total", {"operation_type": "query",
                                                          "field_name": "compute_session_list",
                                                          "success": "true", "error_detail": ""}),
        gql_key=("backendai_graphql_request_count_total", {"operation_type": "query", "field_name": "keypair",
                                                           "success": "true", "error_detail": ""}),
        gql_bad=("backendai_graphql_request_count_total", {"operation_type": "query", "field_name": "",
                                                           "success": "false", "error_detail": "validation-error"}),
        gql_time=("backendai_graphql_request_duration_sec_count", {
            "operation_type": "query", "field_name": "compute_session_list", "success": "true", "error_detail": ""}),
        enqueued=("backendai_event_count_total", {"event_name": "session_enqueued"}),
        enqueued_time=("backendai_event_processing_time_sec_count", {"event_name": "session_enqueued"}),
        bg_started=("backendai_bgtask_count_total", {"name": "telemetry-count"}),
        bg_done=("backendai_bgtask_done_count_total", {"name": "telemetry-count", "status": "done"}),
        bg_failed=("backendai_bgtask_done_count_total", {"name": "telemetry-fail", "status": "failed"}),
        bg_time=("backendai_bgtask_processing_time_sec_count", {"name": "telemetry-count"}),
        db_select=("backendai_layer_operation_count_total", {"layer": "db", "operation": "select", "success": "true"}),
        db_update=("backendai_layer_operation_triggered_count_total", {"layer": "db", "operation": "update"}),
        redis=("backendai_layer_operation_count_total", {"layer": "redis", "operation": "rate_limit_hit",
                                                         "success": "true"}),
        proxy=("backendai_layer_operation_count_total", {"layer": "storage_proxy", "operation": "POST folder/create",
                                                         "success": "true"}),
        stage_decide=("backendai_stage_count_total", {"stage": "decide", "result": "success"}),
        stage_write=("backendai_stage_duration_sec_count", {"stage": "write"}),
        swept=("backendai_sweep_session_count_total", {"reason": "forced"}),
        swept_kernels=("backendai_sweep_kernel_count_total", {"reason": "reconcile"}),
        sse_open=("backendai_event_propagator_registration_count_total", {"kind": "session_sse"}),
        sse_closed=("backendai_event_propagator_unregistration_count_total", {"kind": "session_sse"}),
        relayed=("backendai_event_count_total", {"event_name": "session_terminating"}),
    )
    client = signed(owner)
    with django_capture_on_commit_callbacks(execute=True):
        created = client.post("/session", client_body())
    assert created.status_code == 201, created.content
    session_id = created.json()["sessionId"]
    assert run_pass(cluster.pk).scheduled == [uuid.UUID(session_id)]
    assert client.get("/session/mysess01").status_code == 200
    clash = client.post("/session", client_body(reuseIfExists=False))
    assert clash.status_code == 400 and slug(clash) == "session-already-exists"
    assert slug(client.get("/session/no-such-session")) == "object-not-found"
    assert slug(client.get("/no/such/route")) == "url-not-found"
    listed = client.post("/admin/gql", {"query": SESSION_LIST})
    assert listed.status_code == 200 and listed.json()["data"]["compute_session_list"]["total_count"] == 1
    assert client.post("/admin/gql", {"query": "query { keypair { access_key } }"}).status_code == 200
    assert slug(client.post("/admin/gql", {"query": "query { no_such_field }"})) == "graphql-error"
    assert client.post("/folders", {"name": "telemetry", "host": "local:volume1"}).status_code == 201
    assert client.delete("/session/mysess01").status_code == 200
    assert Session.objects.get(pk=session_id).status == "TERMINATING"
    with django_capture_on_commit_callbacks(execute=True):
        assert reconcile_stuck(terminating_timeout=600, now=timezone.now() + timedelta(hours=1)).forced == [
            uuid.UUID(session_id)]
    stream = client.get(f"/events/session?sessionId={session_id}")
    b"".join(_drain(stream))
    done = bgtasks.start("telemetry-count", "bgtask_samples.count_to", 2, owner=owner.pk)
    failed = bgtasks.start("telemetry-fail", "bgtask_samples.fail_cleanly", owner=owner.pk)
    assert bgtasks.run(done) == "done" and bgtasks.run(failed) == "failed"

    for key in ("create", "get", "clash", "missing", "unmatched", "destroy", "folder", "duration"):
        assert d[key] == 1, key
    assert d["gql"] == 2  # the failing document answered 400
    assert (d["gql_ok"], d["gql_key"], d["gql_bad"], d["gql_time"]) == (1, 1, 1, 1)
    assert (d["enqueued"], d["enqueued_time"]) == (2, 2)  # the signal, and the stream replaying the history
    assert (d["bg_started"], d["bg_done"], d["bg_failed"], d["bg_time"]) == (1, 1, 1, 1)
    assert d["db_select"] > 10 and d["db_update"] >= 3
    assert d["redis"] >= 10  # every signed request counts against the key's window
    assert d["proxy"] == 1
    assert (d["stage_decide"], d["stage_write"]) == (1, 1)
    assert (d["swept"], d["swept_kernels"]) == (1, 1)
    assert (d["sse_open"], d["sse_closed"]) == (1, 1)
    assert value("backendai_event_propagator_count", kind="session_sse") == 0
    assert value("backendai_async_task_count", kind="session_sse") == 0
    assert d["relayed"] == 1

    found = families()
    for family in REFERENCE_FAMILIES:
        assert family in found, family
    pid = {"pid": str(os.getpid())}
    assert value("backendai_memory_used_rss", **pid) > 1_000_000
    assert value("backendai_memory_used_vms", **pid) >= value("backendai_memory_used_rss", **pid)
    assert value("backendai_cpu_usage_percent", **pid) >= 0


def _drain(response):
    from asgiref.sync import async_to_sync

    async def read(chunks):
        return [chunk async for chunk in chunks]

    return async_to_sync(read)(response.streaming_content)


#: every family of reference §12 this manager measures (prometheus_client names counters without ``_total``)
REFERENCE_FAMILIES = (
    "backendai_api_request_count", "backendai_api_request_duration_sec",
    "backendai_graphql_request_count", "backendai_graphql_request_duration_sec",
    "backendai_event_count", "backendai_event_failure_count", "backendai_event_processing_time_sec",
    "backendai_event_propagator_count", "backendai_event_propagator_alias_count",
    "backendai_event_propagator_registration_count", "backendai_event_propagator_unregistration_count",
    "backendai_bgtask_count", "backendai_bgtask_done_count", "backendai_bgtask_processing_time_sec",
    "backendai_action_count", "backendai_action_duration_sec", "backendai_action_entity_count",
    "backendai_layer_operation_count", "backendai_layer_operation_duration_sec",
    "backendai_layer_operation_error_count", "backendai_layer_operation_triggered_count",
    "backendai_layer_retry_count", "backendai_async_task_count",
    "backendai_cpu_usage_percent", "backendai_memory_used_rss", "backendai_memory_used_vms",
    "backendai_sweep_session_count", "backendai_sweep_kernel_count",
    "backendai_stage_count", "backendai_stage_duration_sec",
    "backendai_scheduler_operation_count", "backendai_scheduler_operation_duration_sec",
)


def test_endpoint_labels_stay_route_patterns_however_many_sessions_are_named(signed, owner, cluster):
    client = signed(owner)
    def counts() -> dict:
        return {tuple(sorted(s.labels.items())): s.value for s in families()["backendai_api_request_count"].samples
                if s.name.endswith("_total")}

    before = counts()  # earlier tests' samples stay (some served their own URLconfs): only what grew is ours
    names = [f"probe-{uuid.uuid4().hex[:12]}" for _ in range(25)]
    ids = [str(uuid.uuid4()) for _ in range(10)]
    for name in names:
        assert client.get(f"/session/{name}").status_code == 404
        assert client.get(f"/session/{name}/logs").status_code == 404
    for session_id in ids:
        client.get(f"/func/session/{session_id}")  # session mode: the same routes under func/
        client.get(f"/nothing/{session_id}")
    endpoints = {dict(labels)["endpoint"] for labels, value in counts().items() if value > before.get(labels, 0)}
    text = generate_latest(REGISTRY).decode()
    for raw in names + ids:
        assert raw not in text, raw
    assert {"session/<str:name>", "session/<str:name>/logs", "unmatched"} <= endpoints
    from django.urls import get_resolver

    patterns = _all_routes(get_resolver())
    assert endpoints <= patterns | {"unmatched"}, endpoints - patterns


def _all_routes(resolver, prefix="") -> set[str]:
    routes = set()
    for entry in resolver.url_patterns:
        here = prefix + str(entry.pattern)
        if hasattr(entry, "url_patterns"):
            routes |= _all_routes(entry, here)
        else:
            routes.add(here)
    return routes


def test_a_problem_type_gives_bounded_error_labels():
    base = "https://api.backend.ai/probs/"
    assert telemetry.error_from_problem(base + "session-already-exists") == ("session", "create", "already-exists")
    assert telemetry.error_from_problem(base + "vfolder-permission-error") == ("vfolder", "access", "forbidden")
    assert telemetry.error_from_problem(base + "graphql-error") == ("graphql", "generic", "bad-request")
    assert telemetry.error_from_problem(base + "session-new-kind") == ("session", "generic", "session-new-kind")
    assert telemetry.error_from_problem(base + "Bad Slug <script>") == ("api", "generic", "unknown")
    assert telemetry.error_from_problem(base + "x" * 300) == ("api", "generic", "unknown")
    assert telemetry.error_from_problem("") == ("", "", "")


def test_a_layer_operation_that_raises_counts_an_error_and_the_exception_goes_on():
    from backendai.api import errors

    d = Deltas(started=("backendai_layer_operation_triggered_count_total", {"layer": "test", "operation": "op"}),
               failed=("backendai_layer_operation_count_total", {"layer": "test", "operation": "op",
                                                                  "success": "false"}),
               error=("backendai_layer_operation_error_count_total", {"layer": "test", "operation": "op",
                                                                       "error_detail": "object-not-found"}),
               retry=("backendai_layer_retry_count_total", {"layer": "test", "operation": "op"}))
    with pytest.raises(errors.ObjectNotFound):
        with telemetry.layer_operation("test", "op"):
            raise errors.ObjectNotFound("gone")
    telemetry.observe_retry("test", "op")
    assert (d["started"], d["failed"], d["error"], d["retry"]) == (1, 1, 1, 1)


def test_actions_are_counted_with_their_entities_and_outcome():
    d = Deltas(ok=("backendai_action_count_total", {"domain": "session", "operation": "telemetry_probe",
                                                    "success": "true", "error_detail": ""}),
               refused=("backendai_action_count_total", {"domain": "session", "operation": "telemetry_probe",
                                                         "success": "false", "error_detail": "forbidden"}),
               entities=("backendai_action_entity_count_total", {"domain": "session", "operation": "telemetry_probe"}),
               timed=("backendai_action_duration_sec_count", {"domain": "session", "operation": "telemetry_probe",
                                                               "success": "true"}))
    telemetry.observe_action("session", "telemetry_probe", success=True, seconds=0.01, entity_count=3)
    telemetry.observe_action("session", "telemetry_probe", success=False, seconds=0.01, error_detail="forbidden")
    telemetry.observe_action("session", "telemetry_probe", success=False, seconds=0.01,
                             error_detail="no such session 'x1234'")  # free text never becomes a label
    assert (d["ok"], d["refused"], d["entities"], d["timed"]) == (1, 1, 5, 1)
    assert value("backendai_action_count_total", domain="session", operation="telemetry_probe", success="false",
                 error_detail="unknown") >= 1
    assert "x1234" not in generate_latest(REGISTRY).decode()


def test_a_failing_signal_receiver_counts_an_event_failure():
    from sessions import signals

    def broken(**kwargs):
        raise RuntimeError("receiver down")

    d = Deltas(count=("backendai_event_count_total", {"event_name": "session_ended"}),
               failed=("backendai_event_failure_count_total", {"event_name": "session_ended"}))
    signals.session_ended.connect(broken, dispatch_uid="test-telemetry-broken")
    try:
        signals.ended(uuid.uuid4(), "test")
    finally:
        signals.session_ended.disconnect(dispatch_uid="test-telemetry-broken")
    assert (d["count"], d["failed"]) == (1, 1)


def test_a_retried_webhook_delivery_counts_a_retry(owner, cluster, signed, settings):
    import ipaddress

    from sessions import services

    settings.CALLBACK_ALLOWED_NETWORKS = [ipaddress.ip_network("127.0.0.0/8")]

    d = Deltas(retry=("backendai_layer_retry_count_total", {"layer": "webhook", "operation": "session_lifecycle"}),
               failed=("backendai_layer_operation_count_total", {"layer": "webhook", "operation": "session_lifecycle",
                                                                  "success": "false"}))
    created = signed(owner).post("/session", client_body(callback_url="http://127.0.0.1:9/hook"))
    assert created.status_code == 201, created.content
    session = Session.objects.get(pk=created.json()["sessionId"])
    services.deliver_callbacks(timeout=0.5)
    Session.objects.filter(pk=session.pk).update(callback_next_attempt_at=None)
    services.deliver_callbacks(timeout=0.5)
    assert d["retry"] == 1 and d["failed"] == 2


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(telemetry.__file__)))
MULTIPROC_CHILD = textwrap.dedent("""
    import sys
    from backendai import telemetry
    telemetry.observe_event("multiprocess_probe", seconds=0.01)
    with telemetry.async_task("multiprocess_probe"):
        print("ready", flush=True)
        sys.stdin.readline()
""")


def test_two_processes_both_contribute_to_one_scrape(tmp_path, monkeypatch, db):
    from backendai.metrics import exposition

    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    children = [subprocess.Popen([sys.executable, "-c", MULTIPROC_CHILD], env=env, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(2)]
    try:
        for child in children:
            assert child.stdout.readline().strip() == "ready"
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(tmp_path))
        registry.register(telemetry.ProcessUsageCollector(str(tmp_path)))
        assert registry.get_sample_value("backendai_event_count_total", {"event_name": "multiprocess_probe"}) == 2
        assert registry.get_sample_value("backendai_async_task_count", {"kind": "multiprocess_probe"}) == 2
        for child in children:
            assert registry.get_sample_value("backendai_memory_used_rss", {"pid": str(child.pid)}) > 1_000_000
            assert registry.get_sample_value("backendai_cpu_usage_percent", {"pid": str(child.pid)}) >= 0
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # what the listener serves: both children
        scraped = exposition().decode()
        for child in children:
            assert f'backendai_memory_used_rss{{pid="{child.pid}"}}' in scraped
        assert 'backendai_event_count_total{event_name="multiprocess_probe"} 2.0' in scraped
    finally:
        for child in children:
            child.stdin.close()
            child.wait(timeout=20)
    for child in children:  # the supervisor marks an exited child dead: its live gauges go
        multiprocess.mark_process_dead(child.pid, str(tmp_path))
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))
    registry.register(telemetry.ProcessUsageCollector(str(tmp_path)))
    assert registry.get_sample_value("backendai_event_count_total", {"event_name": "multiprocess_probe"}) == 2
    assert not registry.get_sample_value("backendai_async_task_count", {"kind": "multiprocess_probe"})
    assert registry.get_sample_value("backendai_memory_used_rss", {"pid": str(children[0].pid)}) is None


def test_the_agent_link_counts_syncs_and_event_batches(defaults):
    import json

    from django.test import Client

    from agents import services as agent_services

    group = agent_services.ensure_default_scaling_group()
    token = agent_services.issue_token("nodes", scaling_group=group)[1]
    d = Deltas(sync=("backendai_layer_operation_count_total", {"layer": "agent", "operation": "sync", "success": "true"}),
               timed=("backendai_layer_operation_duration_sec_count", {"layer": "agent", "operation": "sync",
                                                                         "success": "true"}),
               events=("backendai_event_count_total", {"event_name": "agent_kernel_events"}),
               refused=("backendai_event_failure_count_total", {"event_name": "agent_kernel_events"}))
    payload = {"agent_id": "node-t", "scaling_group": "default", "address": "127.0.0.1", "backend": "local",
               "capacity": {"cpu": "4", "mem": "8589934592"}, "slot_types": {"cpu": "count", "mem": "bytes"},
               "kernels": []}
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    answer = Client().post("/agent-api/v1/sync", json.dumps(payload), content_type="application/json", **auth)
    assert answer.status_code == 200, answer.content
    posted = Client().post("/agent-api/v1/events", json.dumps({"agent_id": "node-t", "events": []}),
                           content_type="application/json", **auth)
    assert posted.status_code == 200, posted.content
    assert (d["sync"], d["timed"], d["events"], d["refused"]) == (1, 1, 1, 0)
    samples = families()["backendai_api_request_count"].samples
    assert any(s.labels["endpoint"] == "agent-api/v1/sync" and s.labels["status_code"] == "200" for s in samples)


def test_a_field_that_raises_a_problem_counts_a_failed_graphql_field(signed, owner, cluster):
    d = Deltas(failed=("backendai_graphql_request_count_total", {
        "operation_type": "query", "field_name": "compute_session_list", "success": "false",
        "error_detail": "insufficient-privilege"}),
        answered=api("POST", "admin/gql", 403, domain="api", operation="access", error_detail="forbidden"))
    query = 'query { mine: compute_session_list(limit: 1, offset: 0, access_key: "AKIANOTMINE") { total_count } }'
    response = signed(owner).post("/admin/gql", {"query": query})
    assert response.status_code == 403 and slug(response) == "insufficient-privilege"
    assert (d["failed"], d["answered"]) == (1, 1)  # the field's name, not the alias


def _kv_layer() -> str:
    return "redis" if os.environ.get("REDIS_URL") else "memory"


@pytest.mark.django_db
def test_a_hint_to_agents_counts_one_layer_operation_per_message_it_sends():
    from backendai import hints

    layer = _kv_layer()
    d = Deltas(sent=("backendai_layer_operation_count_total", {"layer": layer, "operation": "hint_send",
                                                               "success": "true"}))
    hints.deliver_local(["telemetry-agent-1", "telemetry-agent-2"])
    # one message per agent to its link's group, plus one per agent to the held-sync listeners over Redis
    assert d["sent"] == (4 if layer == "redis" else 2)


@pytest.mark.django_db
def test_the_schedulers_round_robin_state_is_read_and_written_as_layer_operations():
    from sessions.scheduler import dispatcher

    layer = _kv_layer()
    d = Deltas(read=("backendai_layer_operation_count_total", {"layer": layer, "operation": "cache_get_many",
                                                               "success": "true"}),
               wrote=("backendai_layer_operation_count_total", {"layer": layer, "operation": "cache_set_many",
                                                                "success": "true"}))
    decided = dispatcher.Decisions(rr_next={"x86_64": 3}, rr_changed={"x86_64"})
    dispatcher._save_rr("telemetry-group", decided)
    assert dispatcher._load_rr("telemetry-group", {"x86_64"}) == {"x86_64": 3}
    assert (d["read"], d["wrote"]) == (1, 1)
