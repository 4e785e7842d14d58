"""Autoscaling end to end (issue 15): the live stack (beat runs ``serving.tasks.autoscale_endpoints``
every 5 s and the reconciler every 2 s), a real local agent and a real app proxy worker whose
heartbeats carry the endpoint's request counters.  A service created with the official client
(23.9.10) gets two rules through ``/services/<id>/auto-scaling-rules``: up by one while the proxy
measures more than 5 requests/s (at most 2 replicas), down by one under 0.5 requests/s (at least 1).
A bounded burst of requests scales it to 2 and no further; once idle it goes back to 1; every
decision is in the endpoint's event log with the rule and the value behind it."""
from __future__ import annotations

import json

import httpx
import pytest

from backendai.signing import signed_headers
from serving_support import LOCAL_IMAGE, SMALL, LoadLoop, cli_json, service_info, start_proxy, upload_model_folder

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SETTLE = 90
COOLDOWN = 5
WINDOW = 5


def api(live_stack, keypair, method, target, body=None):
    headers = signed_headers(keypair.access_key, keypair.secret_key, method, target, live_stack.host,
                             content_type="application/json" if body is not None else "text/plain")
    return httpx.request(method, live_stack.url + target, headers=headers,
                         content=json.dumps(body) if body is not None else None, timeout=60)


def healthy_routes(endpoint_id) -> int:
    from serving.models import Routing

    return Routing.objects.filter(endpoint_id=endpoint_id, status="healthy").count()


def test_a_burst_scales_an_endpoint_up_within_its_rule_and_idle_scales_it_back_down(
        live_stack, cluster, stack_client, owner, tmp_path):
    from django.utils import timezone

    from serving.models import AutoScalingRule, Endpoint, EndpointEvent
    from vfolders import services as vfolder_services

    vfolder_services.ensure_default_storage_host()
    live_stack.start_local_agent("autoscale-agent", cluster[1])
    start_proxy(live_stack)
    keypair = owner.main_keypair
    upload_model_folder(stack_client, keypair, "scaled-model", tmp_path)
    created, _ = cli_json(stack_client, keypair, "service", "create", LOCAL_IMAGE, "scaled-model", "1",
                          "-t", "scaled-svc", *SMALL)
    endpoint_id = created["items"][0]["endpoint_id"]
    live_stack.wait_for(lambda: healthy_routes(endpoint_id) == 1 and Endpoint.objects.get(pk=endpoint_id).url,
                        timeout=SETTLE, what="the first replica healthy")
    url = Endpoint.objects.get(pk=endpoint_id).url
    token = api(live_stack, keypair, "POST", f"/services/{endpoint_id}/token", {"duration": "1h"}).json()["token"]

    rules = f"/services/{endpoint_id}/auto-scaling-rules"
    up = api(live_stack, keypair, "POST", rules, {
        "metric_source": "proxy", "metric_name": "request_rate", "comparator": "gt", "threshold": 5,
        "step_size": 1, "max_replicas": 2, "cooldown_seconds": COOLDOWN, "window_seconds": WINDOW})
    assert up.status_code == 201, up.text
    down = api(live_stack, keypair, "POST", rules, {
        "metric_source": "INFERENCE_FRAMEWORK", "metric_name": "request_rate", "comparator": "LESS_THAN",
        "threshold": "0.5", "step_size": -1, "min_replicas": 1, "cooldown_seconds": COOLDOWN,
        "window_seconds": WINDOW})
    assert down.status_code == 201, down.text
    refused = api(live_stack, keypair, "POST", rules, {
        "metric_source": "proxy", "metric_name": "gpu_fairy_dust", "comparator": "gt", "threshold": 1,
        "step_size": 1})
    assert refused.status_code == 400 and "metric_name" in refused.text
    assert AutoScalingRule.objects.filter(endpoint_id=endpoint_id).count() == 2

    # --- a bounded burst: up to 2 replicas, and no further ------------------------------------------------
    with LoadLoop(url, token, threads=2, pause=0.01, max_seconds=120, max_requests=20_000) as load:
        live_stack.wait_for(lambda: Endpoint.objects.get(pk=endpoint_id).replicas == 2, timeout=SETTLE,
                            what="the burst scaling the endpoint to 2")
        live_stack.wait_for(lambda: healthy_routes(endpoint_id) == 2, timeout=SETTLE, what="2 healthy replicas")
        fired_at = AutoScalingRule.objects.get(pk=up.json()["id"]).last_triggered_at
        assert fired_at is not None

        def held_past_its_cooldown():
            # a pass ran after the cooldown (beat: every 5 s) and measured the rule still holding
            rule = AutoScalingRule.objects.get(pk=up.json()["id"])
            return (timezone.now() - fired_at).total_seconds() > COOLDOWN + 6 and (rule.last_value or 0) > 5
        live_stack.wait_for(held_past_its_cooldown, timeout=SETTLE, interval=0.5,
                            what="the up rule holding past its cooldown")
        assert Endpoint.objects.get(pk=endpoint_id).replicas == 2, "max_replicas bounds the rule"
    assert load.failures() == [], load.failures()[:10]
    assert len(load.snapshot()) > 100

    # --- idle: back to 1 ----------------------------------------------------------------------------
    live_stack.wait_for(lambda: Endpoint.objects.get(pk=endpoint_id).replicas == 1, timeout=SETTLE,
                        what="idle scaling the endpoint back to 1")
    live_stack.wait_for(lambda: healthy_routes(endpoint_id) == 1, timeout=SETTLE, what="1 healthy replica")
    decisions = list(EndpointEvent.objects.filter(endpoint_id=endpoint_id, kind="autoscale").order_by("at"))
    assert [(e.data["from"], e.data["to"]) for e in decisions] == [(1, 2), (2, 1)]
    assert decisions[0].data["rule_id"] == up.json()["id"] and decisions[0].data["value"] > 5
    assert decisions[1].data["rule_id"] == down.json()["id"] and decisions[1].data["value"] < 0.5
    assert "request_rate" in decisions[0].message
    info = service_info(stack_client, keypair, "scaled-svc")
    assert info["desired_session_count"] == 1
