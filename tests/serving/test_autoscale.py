"""Autoscaling of model-serving endpoints: the rules (REST and GraphQL, validation,
permissions), their evaluation over the app proxy's recorded traffic and the
kernels' statistics, and the serving series on the manager's ``/metrics``."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from helpers import problem, slug
from permission_matrix import ROLES, Case, World, check, gql_case, gql_data, gql_post, params

pytestmark = pytest.mark.django_db

RULE = {"metric_source": "proxy", "metric_name": "request_rate", "threshold": 5, "comparator": "gt",
        "step_size": 1, "cooldown_seconds": 60, "min_replicas": 1, "max_replicas": 4, "window_seconds": 10}
#: who may read and change an endpoint's rules: whoever may manage the endpoint
MANAGERS = ("owner", "superadmin")


def make_endpoint(user, project, name="ep", replicas=1):
    from serving.models import Endpoint

    return Endpoint.objects.create(name=name, created_user=user, session_owner=user,
                                   owner_keypair=user.main_keypair, domain_id=user.domain_id, project=project,
                                   image="bai-test/inference:1.0", replicas=replicas, token_secret="t" * 40)


def make_rule(endpoint, **fields):
    from serving.models import AutoScalingRule

    return AutoScalingRule.objects.create(endpoint=endpoint, **{**RULE, **fields})


def rules_state(world):
    from serving.models import AutoScalingRule

    return sorted((str(r.pk), r.metric_name, r.threshold, r.step_size, r.cooldown_seconds, r.enabled)
                  for r in AutoScalingRule.objects.all())


def expect(ok: int, refused: int = 404) -> dict:
    return {role: ok if role in MANAGERS else refused for role in ROLES}


@pytest.fixture
def world(owner, member, outsider, foreign_admin, superadmin, defaults):
    endpoint = make_endpoint(owner, defaults.project)
    rule = make_rule(endpoint, threshold=7.25)
    users = {"owner": owner, "member": member, "outsider": outsider, "foreign_admin": foreign_admin,
             "superadmin": superadmin}
    return World(users=users, objects={"endpoint": str(endpoint.pk), "rule": str(rule.pk)})


def _rules_url(world, rule=False):
    base = f"/services/{world.objects['endpoint']}/auto-scaling-rules"
    return f"{base}/{world.objects['rule']}" if rule else base


CASES = [
    Case("rest-list", lambda api, w, r: api.get(_rules_url(w)), expect(200), marker=lambda w: w.objects["rule"],
         unchanged=rules_state),
    Case("rest-create", lambda api, w, r: api.post(_rules_url(w), {**RULE, "threshold": 3}), expect(201),
         unchanged=rules_state),
    Case("rest-get", lambda api, w, r: api.get(_rules_url(w, rule=True)), expect(200),
         marker=lambda w: w.objects["rule"], unchanged=rules_state),
    Case("rest-patch", lambda api, w, r: api.patch(_rules_url(w, rule=True), {"threshold": 9, "enabled": False}),
         expect(200), unchanged=rules_state),
    Case("rest-delete", lambda api, w, r: api.delete(_rules_url(w, rule=True)), expect(204),
         unchanged=rules_state),
    Case("gql-list", gql_case("query($e: String!) { endpoint_auto_scaling_rule_nodes(endpoint: $e) "
                              "{ count edges { node { row_id threshold } } } }",
                              lambda w: {"e": w.objects["endpoint"]}),
         expect(200), marker=lambda w: w.objects["rule"], unchanged=rules_state),
    Case("gql-get", gql_case("query($id: String!) { endpoint_auto_scaling_rule_node(id: $id) { row_id } }",
                             lambda w: {"id": w.objects["rule"]}),
         expect(200), marker=lambda w: w.objects["rule"], unchanged=rules_state),
    Case("gql-create", gql_case(
        "mutation($e: String!) { create_endpoint_auto_scaling_rule_node(endpoint: $e, props: {"
        "metric_source: INFERENCE_FRAMEWORK, metric_name: \"inflight\", threshold: \"3\", comparator: GREATER_THAN,"
        " step_size: 1, cooldown_seconds: 30}) { ok rule { row_id } } }", lambda w: {"e": w.objects["endpoint"]}),
        expect(200), unchanged=rules_state),
    Case("gql-modify", gql_case(
        "mutation($id: String!) { modify_endpoint_auto_scaling_rule_node(id: $id, props: {threshold: \"11\"})"
        " { ok rule { threshold } } }", lambda w: {"id": w.objects["rule"]}),
        expect(200), unchanged=rules_state),
    Case("gql-delete", gql_case(
        "mutation($id: String!) { delete_endpoint_auto_scaling_rule_node(id: $id) { ok } }",
        lambda w: {"id": w.objects["rule"]}), expect(200), unchanged=rules_state),
]


@pytest.mark.parametrize("case, role", params(CASES))
def test_permission_matrix_of_the_rules(case, role, world, signed):
    check(case, role, world, signed)


def test_a_domain_admin_manages_the_rules_of_their_domains_endpoints(world, domain_admin, signed):
    response = signed(domain_admin).post(_rules_url(world), {**RULE, "metric_name": "inflight"})
    assert response.status_code == 201, response.content
    assert response.json()["metric_name"] == "inflight"


# --- validation ---------------------------------------------------------------------------------

BAD_RULES = [
    ({"metric_source": "gpu"}, "metric_source"),
    ({"metric_source": 3}, "metric_source"),
    ({"metric_name": "cpu_util"}, "metric_name"),  # a kernel metric under the proxy source
    ({"metric_source": "kernel", "metric_name": "request_rate"}, "metric_name"),
    ({"metric_name": "x" * 100}, "metric_name"),
    ({"threshold": "NaN"}, "threshold"),
    ({"threshold": "Infinity"}, "threshold"),
    ({"threshold": "fast"}, "threshold"),
    ({"threshold": True}, "threshold"),
    ({"threshold": 1e300}, "threshold"),
    ({"threshold": 10 ** 400}, "threshold"),
    ({"threshold": "1e999"}, "threshold"),
    ({"comparator": "=="}, "comparator"),
    ({"step_size": 0}, "step_size"),
    ({"step_size": 65}, "step_size"),
    ({"step_size": -65}, "step_size"),
    ({"step_size": 1.5}, "step_size"),
    ({"step_size": "2"}, "step_size"),
    ({"cooldown_seconds": -1}, "cooldown_seconds"),
    ({"cooldown_seconds": 86401}, "cooldown_seconds"),
    ({"min_replicas": -1}, "min_replicas"),
    ({"max_replicas": 65}, "max_replicas"),
    ({"min_replicas": 5, "max_replicas": 2}, "min_replicas"),
    ({"window_seconds": 4}, "window_seconds"),
    ({"window_seconds": 3601}, "window_seconds"),
    ({"enabled": "yes"}, "enabled"),
    ({"surprise": 1}, "unknown fields"),
    ({"step_size": None}, "required"),
]


@pytest.mark.parametrize("change, named", BAD_RULES, ids=[f"{i}-{n}" for i, (_, n) in enumerate(BAD_RULES)])
def test_it_refuses_a_bad_rule_and_creates_nothing(change, named, world, owner, signed):
    from serving.models import AutoScalingRule

    before = AutoScalingRule.objects.count()
    response = signed(owner).post(_rules_url(world), {**RULE, **change})
    assert response.status_code == 400, response.content
    assert slug(response) == "invalid-api-params"
    assert named in problem(response)["msg"]
    assert AutoScalingRule.objects.count() == before


@pytest.mark.parametrize("body", [["not", "an", "object"], "text", {"comparator": "lt", "threshold": "x"}])
def test_it_refuses_a_bad_change_and_keeps_the_rule(body, world, owner, signed):
    before = rules_state(world)
    response = signed(owner).patch(_rules_url(world, rule=True), body)
    assert response.status_code == 400, response.content
    assert slug(response) == "invalid-api-params"
    assert rules_state(world) == before


def test_a_change_is_checked_against_the_rules_other_fields(world, owner, signed):
    # the rule's max is 4: a min of 5 alone is refused; a kernel source needs a kernel metric
    assert slug(signed(owner).patch(_rules_url(world, rule=True), {"min_replicas": 5})) == "invalid-api-params"
    assert slug(signed(owner).patch(_rules_url(world, rule=True), {"metric_source": "kernel"})) == \
        "invalid-api-params"
    moved = signed(owner).patch(_rules_url(world, rule=True), {"metric_source": "KERNEL", "metric_name": "cpu_util",
                                                               "comparator": "GREATER_THAN_OR_EQUAL"})
    assert moved.status_code == 200, moved.content
    assert (moved.json()["metric_source"], moved.json()["comparator"]) == ("kernel", "ge")


def test_it_accepts_backendais_enum_spellings(world, owner, signed):
    response = signed(owner).post(_rules_url(world), {**RULE, "metric_source": "INFERENCE_FRAMEWORK",
                                                      "comparator": "LESS_THAN_OR_EQUAL", "threshold": "0.5"})
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["metric_source"], body["comparator"], body["threshold"]) == ("proxy", "le", 0.5)


def test_rules_of_an_unknown_endpoint_or_rule_are_not_found(world, owner, signed):
    import uuid

    assert signed(owner).get(f"/services/{uuid.uuid4()}/auto-scaling-rules").status_code == 404
    assert signed(owner).get(f"/services/{world.objects['endpoint']}/auto-scaling-rules/{uuid.uuid4()}"
                             ).status_code == 404
    assert slug(signed(owner).get("/services/not-a-uuid/auto-scaling-rules")) == "invalid-api-params"


def test_a_rule_is_reached_only_under_its_own_endpoint(world, owner, defaults, signed):
    other = make_endpoint(owner, defaults.project, name="other")
    response = signed(owner).get(f"/services/{other.pk}/auto-scaling-rules/{world.objects['rule']}")
    assert response.status_code == 404


def test_an_endpoint_has_a_bounded_number_of_rules(world, owner, signed):
    from serving.models import AutoScalingRule
    from serving.services.autoscale import MAX_RULES_PER_ENDPOINT

    for _ in range(MAX_RULES_PER_ENDPOINT - 1):
        assert signed(owner).post(_rules_url(world), RULE).status_code == 201
    refused = signed(owner).post(_rules_url(world), RULE)
    assert slug(refused) == "invalid-api-params"
    assert AutoScalingRule.objects.count() == MAX_RULES_PER_ENDPOINT


def test_graphql_creates_lists_modifies_and_deletes_a_rule(world, owner, signed):
    api = signed(owner)
    created = gql_data(gql_post(api, """
        mutation($e: String!, $p: EndpointAutoScalingRuleInput!) {
          create_endpoint_auto_scaling_rule_node(endpoint: $e, props: $p) {
            ok rule { id row_id metric_source metric_name threshold comparator step_size cooldown_seconds
                      min_replicas max_replicas endpoint } } }""",
        {"e": world.objects["endpoint"], "p": {"metric_source": "KERNEL", "metric_name": "cpu_util",
                                               "threshold": "80.5", "comparator": "GREATER_THAN_OR_EQUAL",
                                               "step_size": 2, "cooldown_seconds": 120, "max_replicas": 8}}))
    rule = created["create_endpoint_auto_scaling_rule_node"]["rule"]
    assert created["create_endpoint_auto_scaling_rule_node"]["ok"] is True
    assert (rule["metric_source"], rule["comparator"], rule["threshold"], rule["max_replicas"],
            rule["min_replicas"], rule["endpoint"]) == ("KERNEL", "GREATER_THAN_OR_EQUAL", "80.5", 8, None,
                                                        world.objects["endpoint"])
    listed = gql_data(gql_post(api, "query($e: String!) { endpoint_auto_scaling_rule_nodes(endpoint: $e, first: 1, "
                                    "offset: 1) { count edges { node { row_id } } pageInfo { hasNextPage hasPreviousPage } } }",
                               {"e": world.objects["endpoint"]}))["endpoint_auto_scaling_rule_nodes"]
    assert listed["count"] == 2
    assert [e["node"]["row_id"] for e in listed["edges"]] == [rule["row_id"]]
    assert listed["pageInfo"] == {"hasNextPage": False, "hasPreviousPage": True}
    one = gql_data(gql_post(api, "query($id: String!) { endpoint_auto_scaling_rule_node(id: $id) "
                                 "{ row_id step_size cooldown_seconds } }", {"id": rule["row_id"]}))
    assert one["endpoint_auto_scaling_rule_node"] == {"row_id": rule["row_id"], "step_size": 2,
                                                      "cooldown_seconds": 120}
    kernel_only = gql_data(gql_post(api, "query($e: String!, $f: String) { endpoint_auto_scaling_rule_nodes("
                                         "endpoint: $e, filter: $f, order: \"-created_at\") "
                                         "{ count edges { cursor node { row_id } } } }",
                                    {"e": world.objects["endpoint"], "f": 'metric_source == "kernel"'})
                           )["endpoint_auto_scaling_rule_nodes"]
    assert [e["node"]["row_id"] for e in kernel_only["edges"]] == [rule["row_id"]]
    after = gql_data(gql_post(api, "query($e: String!, $c: String) { endpoint_auto_scaling_rule_nodes(endpoint: $e, "
                                   "after: $c) { edges { node { row_id } } } }",
                              {"e": world.objects["endpoint"], "c": rule["id"]}))
    assert after["endpoint_auto_scaling_rule_nodes"]["edges"] == []
    modified = gql_data(gql_post(api, "mutation($id: String!) { modify_endpoint_auto_scaling_rule_node(id: $id, "
                                      "props: {comparator: LESS_THAN, min_replicas: 2}) "
                                      "{ ok rule { comparator min_replicas max_replicas } } }",
                                 {"id": rule["id"]}))["modify_endpoint_auto_scaling_rule_node"]
    assert modified["rule"] == {"comparator": "LESS_THAN", "min_replicas": 2, "max_replicas": 8}
    deleted = gql_data(gql_post(api, "mutation($id: String!) { delete_endpoint_auto_scaling_rule_node(id: $id) "
                                     "{ ok } }", {"id": rule["row_id"]}))
    assert deleted["delete_endpoint_auto_scaling_rule_node"]["ok"] is True
    from serving.models import AutoScalingRule

    assert not AutoScalingRule.objects.filter(pk=rule["row_id"]).exists()


def test_graphql_refuses_a_bad_rule_and_creates_nothing(world, owner, signed):
    from serving.models import AutoScalingRule

    before = AutoScalingRule.objects.count()
    response = gql_post(signed(owner), """
        mutation($e: String!) { create_endpoint_auto_scaling_rule_node(endpoint: $e, props: {
          metric_source: KERNEL, metric_name: "request_rate", threshold: "1", comparator: LESS_THAN,
          step_size: -1, cooldown_seconds: 30}) { ok } }""", {"e": world.objects["endpoint"]})
    assert response.status_code == 400 and slug(response) == "invalid-api-params"
    response = gql_post(signed(owner), "mutation { delete_endpoint_auto_scaling_rule_node(id: \"nope\") { ok } }")
    assert response.status_code == 400 and slug(response) == "invalid-api-params"
    assert AutoScalingRule.objects.count() == before


# --- evaluation -----------------------------------------------------------------------------------

@pytest.fixture
def proxy_worker(defaults):
    from appproxy.models import Worker

    return Worker.objects.create(authority="w1", frontend_mode="port", advertised_host="127.0.0.1",
                                 api_endpoint="http://w1:6130", secret="s" * 40, protocols=["http", "tcp"],
                                 port_range_start=40000, port_range_end=40009, last_heartbeat=timezone.now())


class Traffic:
    """The proxy worker's heartbeats for one endpoint's circuit, recorded by the app proxy's own
    service; ``beat(age, requests)`` records the cumulative counters as seen ``age`` seconds ago."""

    def __init__(self, worker, endpoint):
        from appproxy.gateway import coordinator

        self.worker = worker
        self.circuit_id = coordinator().sync_endpoint(
            str(endpoint.pk), owner_id=str(endpoint.session_owner_id), name=endpoint.name, scaling_group_id=None,
            container_port=8000, routes=[], open_to_public=False, health_check={},
            token_secret=endpoint.token_secret)["circuit_id"]

    def beat(self, age: float, requests: int, *, latency: float = 0.05, inflight: int = 0, healthy: int = 1):
        from appproxy.models import InferenceSample
        from appproxy.services import inference

        recorded = inference.record_samples(self.worker, {str(self.circuit_id): {
            "requests_total": requests, "errors_total": 0, "inflight": inflight,
            "latency_sum": latency * requests, "latency_count": requests, "latency_buckets": {},
            "healthy_routes": healthy, "routes": {}}})
        assert recorded == 1
        newest = InferenceSample.objects.filter(circuit_id=self.circuit_id).order_by("-pk").first()
        InferenceSample.objects.filter(pk=newest.pk).update(at=newest.at - timedelta(seconds=age))

    def age(self, seconds: float):
        """Everything recorded so far happened ``seconds`` earlier."""
        from django.db.models import F

        from appproxy.models import InferenceSample

        InferenceSample.objects.filter(circuit_id=self.circuit_id).update(at=F("at") - timedelta(seconds=seconds))


def autoscale_events(endpoint):
    from serving.models import EndpointEvent

    return list(EndpointEvent.objects.filter(endpoint=endpoint, kind="autoscale").order_by("at", "id"))


def replicas(endpoint) -> int:
    endpoint.refresh_from_db()
    return endpoint.replicas


def test_a_burst_scales_up_the_cooldown_holds_and_idle_scales_down_to_the_minimum(owner, defaults, proxy_worker):
    from serving.models import AutoScalingRule
    from serving.services import autoscale

    endpoint = make_endpoint(owner, defaults.project)
    up = make_rule(endpoint, threshold=5, comparator="gt", step_size=2, max_replicas=4, cooldown_seconds=60)
    down = make_rule(endpoint, threshold=1, comparator="lt", step_size=-1, min_replicas=1, cooldown_seconds=60)
    traffic = Traffic(proxy_worker, endpoint)
    traffic.beat(20, 0)
    traffic.beat(12, 0)
    traffic.beat(2, 200)  # 200 requests in the last 10 s: 20 requests/s

    changes = autoscale.evaluate_rules()
    assert [(c["from"], c["to"], c["rule_id"]) for c in changes] == [(1, 3, str(up.pk))]
    assert replicas(endpoint) == 3
    up.refresh_from_db()
    assert up.last_value == pytest.approx(20.0, rel=0.01) and up.last_triggered_at is not None
    [event] = autoscale_events(endpoint)
    assert event.data["rule_id"] == str(up.pk) and event.data["metric"] == "request_rate"
    assert (event.data["from"], event.data["to"], event.data["threshold"]) == (1, 3, 5.0)
    assert event.data["value"] == pytest.approx(20.0, rel=0.01)

    # the burst goes on, but the rule cools down: nothing more for 60 s (and never above max)
    assert autoscale.evaluate_rules() == []
    assert autoscale.evaluate_rules(now=timezone.now() + timedelta(seconds=30)) == []
    assert replicas(endpoint) == 3
    later = timezone.now() + timedelta(seconds=61)
    assert [c["to"] for c in autoscale.evaluate_rules(now=later)] == [4]
    assert autoscale.evaluate_rules(now=later + timedelta(seconds=61)) == []  # at max_replicas

    # a minute of idle: the down rule removes one replica per cooldown, down to min_replicas
    traffic.age(120)
    traffic.beat(8, 200)
    traffic.beat(1, 200)
    t0 = timezone.now()
    assert [(c["from"], c["to"], c["rule_id"]) for c in autoscale.evaluate_rules(now=t0)] == [(4, 3, str(down.pk))]
    assert autoscale.evaluate_rules(now=t0 + timedelta(seconds=30)) == []  # cooling down
    assert [c["to"] for c in autoscale.evaluate_rules(now=t0 + timedelta(seconds=61))] == [2]
    assert [c["to"] for c in autoscale.evaluate_rules(now=t0 + timedelta(seconds=122))] == [1]
    assert autoscale.evaluate_rules(now=t0 + timedelta(seconds=183)) == []  # at min_replicas
    assert replicas(endpoint) == 1
    assert AutoScalingRule.objects.get(pk=down.pk).last_value == 0.0
    assert [(e.data["from"], e.data["to"]) for e in autoscale_events(endpoint)] == [(1, 3), (3, 4), (4, 3), (3, 2),
                                                                                     (2, 1)]


def test_a_single_sample_is_no_rate_so_an_idle_rule_does_not_fire(owner, defaults, proxy_worker):
    from serving.services import autoscale

    endpoint = make_endpoint(owner, defaults.project, replicas=2)
    make_rule(endpoint, threshold=1, comparator="lt", step_size=-1, min_replicas=0)
    traffic = Traffic(proxy_worker, endpoint)
    traffic.beat(1, 500)  # the circuit's first heartbeat: counters, but nothing to take a rate against
    assert autoscale.evaluate_rules() == []
    assert replicas(endpoint) == 2
    traffic.beat(0, 500)  # a second sample: no request between them, so now it is idle
    assert [(c["from"], c["to"]) for c in autoscale.evaluate_rules()] == [(2, 1)]


def test_no_samples_decide_nothing(owner, defaults, proxy_worker):
    from serving.services import autoscale

    endpoint = make_endpoint(owner, defaults.project, replicas=2)
    rule = make_rule(endpoint, threshold=1, comparator="lt", step_size=-1, min_replicas=0)
    kernel_rule = make_rule(endpoint, metric_source="kernel", metric_name="cpu_util", comparator="lt",
                            threshold=50, step_size=-1, min_replicas=0)
    assert autoscale.evaluate_rules() == []  # no circuit yet
    Traffic(proxy_worker, endpoint)
    assert autoscale.evaluate_rules() == []  # a circuit, no heartbeat yet
    assert replicas(endpoint) == 2 and autoscale_events(endpoint) == []
    for each in (rule, kernel_rule):
        each.refresh_from_db()
        assert each.last_value is None and each.last_triggered_at is None


def test_the_step_is_clamped_to_the_rules_bounds(owner, defaults, proxy_worker):
    from serving.services import autoscale

    endpoint = make_endpoint(owner, defaults.project, replicas=3)
    make_rule(endpoint, metric_name="inflight", threshold=10, comparator="ge", step_size=10, max_replicas=5)
    traffic = Traffic(proxy_worker, endpoint)
    traffic.beat(1, 0, inflight=12)
    assert [c["to"] for c in autoscale.evaluate_rules()] == [5]

    other = make_endpoint(owner, defaults.project, name="other", replicas=6)
    make_rule(other, metric_name="inflight_per_replica", threshold=1, comparator="le", step_size=-10,
              min_replicas=2)
    Traffic(proxy_worker, other).beat(1, 0, inflight=3, healthy=6)  # 0.5 in flight per replica
    assert [(c["endpoint_id"], c["to"]) for c in autoscale.evaluate_rules()] == [(str(other.pk), 2)]


def test_a_bound_stops_a_rule_but_never_turns_it_around(owner, defaults, proxy_worker):
    from serving.services import autoscale

    # scaled by hand outside the rules' bounds: the down rule does not add, the up rule does not remove
    endpoint = make_endpoint(owner, defaults.project, replicas=1)
    down = make_rule(endpoint, metric_name="inflight", threshold=100, comparator="lt", step_size=-1, min_replicas=2)
    high = make_endpoint(owner, defaults.project, name="high", replicas=9)
    up = make_rule(high, metric_name="inflight", threshold=0, comparator="ge", step_size=1, max_replicas=4)
    Traffic(proxy_worker, endpoint).beat(1, 0, inflight=1)
    Traffic(proxy_worker, high).beat(1, 0, inflight=1)
    assert autoscale.evaluate_rules() == []
    assert (replicas(endpoint), replicas(high)) == (1, 9)
    down.refresh_from_db()
    up.refresh_from_db()
    assert (down.last_value, up.last_value) == (1.0, 1.0)  # both held: only the bounds stopped them


def test_a_scale_up_wins_and_one_change_is_made_per_pass(owner, defaults, proxy_worker):
    from serving.models import AutoScalingRule
    from serving.services import autoscale

    endpoint = make_endpoint(owner, defaults.project, replicas=2)
    down = make_rule(endpoint, metric_name="latency_mean", threshold=1, comparator="lt", step_size=-1)
    up = make_rule(endpoint, metric_name="request_rate_per_replica", threshold=2, comparator="gt", step_size=1)
    traffic = Traffic(proxy_worker, endpoint)
    traffic.beat(12, 0)
    traffic.beat(2, 100, latency=0.1, healthy=2)  # 10 requests/s, 5 per replica, 100 ms each

    assert [(c["rule_id"], c["to"]) for c in autoscale.evaluate_rules()] == [(str(up.pk), 3)]
    assert len(autoscale_events(endpoint)) == 1
    down = AutoScalingRule.objects.get(pk=down.pk)
    assert down.last_value == pytest.approx(0.1) and down.last_triggered_at is None
    # the next pass: the up rule cools down, so the down rule has its turn
    assert [(c["rule_id"], c["to"]) for c in autoscale.evaluate_rules()] == [(str(down.pk), 2)]


def test_a_disabled_rule_or_a_destroyed_endpoint_is_left_alone(owner, defaults, proxy_worker):
    from serving.models import Endpoint
    from serving.services import autoscale

    endpoint = make_endpoint(owner, defaults.project)
    rule = make_rule(endpoint, metric_name="inflight", threshold=0, comparator="ge", enabled=False)
    Traffic(proxy_worker, endpoint).beat(1, 0, inflight=5)
    assert autoscale.evaluate_rules() == []
    rule.enabled = True
    rule.save()
    Endpoint.objects.filter(pk=endpoint.pk).update(lifecycle_stage="destroying")
    assert autoscale.evaluate_rules() == []
    assert replicas(endpoint) == 1


@pytest.fixture
def replica_sessions(owner, defaults):
    """Two live replicas of an endpoint, each a running session on a real agent row."""
    from agents import services as agent_services
    from agents.models import Agent
    from serving.models import Routing
    from sessions import services as session_services

    group = agent_services.ensure_default_scaling_group()
    agent = Agent.objects.create(id="node-1", scaling_group=group, addr="10.0.0.5",
                                 available_slots={"cpu": "4", "mem": "8589934592"}, last_heartbeat=timezone.now())
    endpoint = make_endpoint(owner, defaults.project, replicas=2)
    sessions = []
    for index in range(2):
        session = session_services.create_session_on_agent(
            user=owner, image="bai-test/inference:1.0", agent=agent, slots={"cpu": "1", "mem": "1073741824"},
            name=f"replica-{index}", session_type="inference")
        Routing.objects.create(endpoint=endpoint, session=session, session_owner=owner, domain_id=owner.domain_id,
                               project=defaults.project, status="healthy")
        sessions.append(session)
    return endpoint, sessions


def _report(session, status="RUNNING", **stat):
    session.kernels.update(status=status, last_stat={k: str(v) for k, v in stat.items()})


def test_kernel_utilisation_of_the_replicas_scales_the_endpoint(replica_sessions):
    from serving.services import autoscale

    endpoint, (first, second) = replica_sessions
    rule = make_rule(endpoint, metric_source="kernel", metric_name="cpu_util", threshold=75, comparator="gt",
                     step_size=1, max_replicas=3)
    memory = make_rule(endpoint, metric_source="kernel", metric_name="mem_util", threshold=40, comparator="lt",
                       step_size=-1, min_replicas=1)
    _report(first, cpu_util=90.0, mem_used=536870912)
    _report(second, cpu_util=70.0, mem_used=536870912)
    assert [(c["rule_id"], c["to"]) for c in autoscale.evaluate_rules()] == [(str(rule.pk), 3)]
    rule.refresh_from_db()
    memory.refresh_from_db()
    assert rule.last_value == pytest.approx(80.0)  # the mean over the two replicas
    assert memory.last_value == pytest.approx(50.0)  # 512 MiB of a 1 GiB slot


def test_kernels_that_do_not_run_or_report_are_not_measured(replica_sessions):
    from serving.services import autoscale

    endpoint, (first, second) = replica_sessions
    rule = make_rule(endpoint, metric_source="kernel", metric_name="cuda_util", threshold=10, comparator="gt")
    cpu = make_rule(endpoint, metric_source="kernel", metric_name="cpu_util", threshold=50, comparator="gt")
    _report(first, status="TERMINATED", cpu_util=99.0, cuda_util=99.0)
    _report(second, cpu_util=20.0)
    assert autoscale.evaluate_rules() == []
    rule.refresh_from_db()
    cpu.refresh_from_db()
    assert rule.last_value is None  # no running kernel reports a GPU
    assert cpu.last_value == pytest.approx(20.0, rel=0.01)  # the terminated one does not count


def test_the_periodic_task_runs_a_pass(owner, defaults, proxy_worker, settings):
    from serving import tasks

    assert settings.CELERY_BEAT_SCHEDULE["serving.autoscale"] == {
        "task": "serving.tasks.autoscale_endpoints", "schedule": 5.0}
    endpoint = make_endpoint(owner, defaults.project)
    make_rule(endpoint, metric_name="inflight", threshold=1, comparator="ge", step_size=1)
    Traffic(proxy_worker, endpoint).beat(1, 0, inflight=2)
    assert tasks.autoscale_endpoints() == 1
    assert replicas(endpoint) == 2


# --- metrics --------------------------------------------------------------------------------------

def test_metrics_show_replicas_routes_and_scaling_decisions(client, replica_sessions, django_capture_on_commit_callbacks,
                                                           settings):
    settings.METRICS_PUBLIC = True  # the public port serves /metrics only when configured
    from serving.services import autoscale

    endpoint, (first, second) = replica_sessions
    make_rule(endpoint, metric_source="kernel", metric_name="cpu_util", threshold=50, comparator="gt", step_size=2)
    _report(first, cpu_util=90.0)
    _report(second, cpu_util=90.0)
    with django_capture_on_commit_callbacks(execute=True):
        assert [c["to"] for c in autoscale.evaluate_rules()] == [4]
    text = client.get("/metrics").content.decode()
    eid = str(endpoint.pk)
    assert f'backendai_endpoint_replicas{{endpoint="{eid}"}} 4.0' in text
    assert f'backendai_endpoint_routes{{endpoint="{eid}",status="healthy"}} 2.0' in text
    assert (f'backendai_endpoint_scaling_decisions_total{{direction="up",endpoint="{eid}",kind="autoscale"}} 1.0'
            in text)
