"""Model serving end to end (issue 15): the live stack (daphne, Celery worker and beat: the
reconciler), a real local agent running ``local/inference:1.0`` replicas, a real app proxy worker
carrying the endpoint's inference circuit, and the official client's ``backend.ai service ...``
(23.9.10; 24.9.14 where installed, required under CI=true), run from a clean directory with
``--output json``.

* a model folder served by 2 replicas: both HEALTHY; a token is required; requests spread by
  traffic ratio (statistically, within 5 sigma) and follow a changed ratio; a replica switched
  unhealthy shows UNHEALTHY in ``service info`` and gets no request until it recovers; one replica killed
  (kill -9 of its process group): the worker marks its route unhealthy, traffic avoids it, the
  reconciler replaces it; ``service scale`` to 3 and back to 1 under load without a failed request;
  ``service rm`` ends it all;
* bad input through the 24.9.14 client and REST (unknown runtime, missing or malformed model
  definition, replicas out of range, someone else's model folder, an unknown image) is refused with
  a message naming the problem, creating nothing; then that client creates, calls, lists and removes
  a service;
* one replica of ``bai-test/inference:1.0`` on a Docker agent answers through the endpoint.
"""
from __future__ import annotations

import json
import time

import httpx
import pytest

from backendai.signing import signed_headers
from serving_support import (
    DOCKER_IMAGE,
    LOCAL_IMAGE,
    SMALL,
    LoadLoop,
    binomial_bound,
    cli_done,
    cli_json,
    kill_replica,
    make_model_folder,
    predict,
    replica_url,
    route_statuses,
    service_info,
    spread,
    start_proxy,
    upload_model_folder,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

AGENT = "serving-agent"
SETTLE = 90  # seconds any one convergence may take (replicas start in about a second each here)


@pytest.fixture
def serving(live_stack, cluster):
    """The live stack with a local agent, an app proxy worker and the storage host local:volume1."""
    from vfolders import services as vfolder_services

    vfolder_services.ensure_default_storage_host()
    live_stack.start_local_agent(AGENT, cluster[1])
    return start_proxy(live_stack)


_T0 = [0.0]


def phase(name):
    """A line per step with the seconds it took (in the captured output of a failure: where time went)."""
    now = time.monotonic()
    print(f"step {name}" + (f": {now - _T0[0]:.1f} s" if name != "start" else ""), flush=True)
    _T0[0] = now


def live_routes(endpoint_id):
    from serving.models import LIVE_ROUTE, Routing

    return list(Routing.objects.filter(endpoint_id=endpoint_id, status__in=LIVE_ROUTE).select_related("session"))


def destroyed(endpoint_id, session_ids) -> bool:
    """The endpoint is DESTROYED, its routes are gone and the sessions ``session_ids`` have ended."""
    from serving.models import Endpoint, Routing
    from sessions.models import Session

    return (Endpoint.objects.get(pk=endpoint_id).lifecycle_stage == "destroyed"
            and not Routing.objects.filter(endpoint_id=endpoint_id).exclude(status="failed_to_start").exists()
            and not Session.objects.filter(pk__in=session_ids).exclude(
                status__in=("TERMINATED", "CANCELLED", "ERROR")).exists())


def healthy_info(live_stack, client, keypair, name, count):
    """``service info`` once the endpoint lists ``count`` routes, every one HEALTHY (drained ones gone), and
    a URL: waited for in the database, then read through the client once."""
    from serving.models import Endpoint, LifecycleStage, Routing

    def ready():
        endpoint = Endpoint.objects.filter(name=name, lifecycle_stage=LifecycleStage.CREATED).first()
        if endpoint is None or not endpoint.url:
            return False
        listed = Routing.objects.filter(endpoint=endpoint).exclude(status="failed_to_start")  # as the client lists
        return sorted(listed.values_list("status", flat=True)) == ["healthy"] * count
    live_stack.wait_for(ready, timeout=SETTLE, interval=0.2, what=f"{name}: {count} HEALTHY routes and a URL")
    info = service_info(client, keypair, name)
    assert route_statuses(info) == ["healthy"] * count and info["url"], info
    return info


def generate_token(client, keypair, name) -> str:
    done = client.cli(keypair, "service", "generate-token", name, "1h", "-q")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout + done.stderr
    token = done.stdout.strip().splitlines()[-1].strip()
    assert len(token) > 20 and " " not in token, done.stdout
    return token


def api(live_stack, keypair, method, target, body=None):
    headers = signed_headers(keypair.access_key, keypair.secret_key, method, target, live_stack.host,
                             content_type="application/json" if body is not None else "text/plain")
    return httpx.request(method, live_stack.url + target, headers=headers,
                         content=json.dumps(body) if body is not None else None, timeout=60)


def wait_until_seen(live_stack, http, url, token, replica, limit=2000):
    """Requests (every one 200; at most ``limit``) until ``replica`` answers one: the worker has it."""
    sent = [0]

    def seen():
        for _ in range(20):
            assert sent[0] < limit, f"{limit} requests and replica {replica} never answered"
            sent[0] += 1
            response = predict(http, url, token)
            assert response.status_code == 200, response.text[:300]
            if response.json()["replica"] == replica:
                return True
        return False
    live_stack.wait_for(seen, timeout=SETTLE, interval=0.1, what=f"replica {replica} answering")


def test_a_model_served_by_two_replicas_spreads_by_ratio_heals_and_scales_without_failed_requests(
        live_stack, serving, stack_client, owner, tmp_path):
    from serving.models import Endpoint, Routing
    from sessions.models import Session

    keypair = owner.main_keypair
    phase("start")
    upload_model_folder(stack_client, keypair, "echo-model", tmp_path)
    phase("uploaded")
    created, _ = cli_json(stack_client, keypair, "service", "create", LOCAL_IMAGE, "echo-model", "2",
                          "-t", "echo-svc", *SMALL)
    endpoint_id = created["items"][0]["endpoint_id"]
    endpoint = Endpoint.objects.get(pk=endpoint_id)
    assert endpoint.name == "echo-svc" and endpoint.replicas == 2 and endpoint.image.endswith(LOCAL_IMAGE)

    phase("created")
    info = healthy_info(live_stack, stack_client, keypair, "echo-svc", 2)
    phase("healthy")
    url = info["url"]
    assert url.startswith("http://127.0.0.1:"), url
    routes = {r["routing_id"]: r["session"] for r in info["routings"]}
    assert len(set(routes.values())) == 2

    with httpx.Client(timeout=10) as http:
        # --- a token is required ---------------------------------------------------------------------
        assert predict(http, url, None).status_code == 401
        assert predict(http, url, "not-a-token").status_code == 401
        token = generate_token(stack_client, keypair, "echo-svc")
        answer = predict(http, url, token, {"prompt": "hello"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["echo"] == {"prompt": "hello"} and body["model"] == "echo-model v1"
        assert body["replica"] in routes.values()

        phase("token")
        # --- the spread follows the traffic ratios ---------------------------------------------------
        n = 200
        first, second = sorted(routes)  # route ids
        counts = spread(http, url, token, n)
        low, high = binomial_bound(n, 0.5)
        assert set(counts) == set(routes.values()) and all(low <= c <= high for c in counts.values()), counts
        phase("spread 1:1")

        cli_done(stack_client, keypair, "service", "update-traffic-ratio", "echo-svc", first, "0")
        def only_second():
            return spread(http, url, token, 30) == {routes[second]: 30}
        live_stack.wait_for(only_second, timeout=SETTLE, interval=0.2, what="no traffic to a route of ratio 0")
        phase("ratio 0")
        cli_done(stack_client, keypair, "service", "update-traffic-ratio", "echo-svc", first, "9")
        wait_until_seen(live_stack, http, url, token, routes[first])
        phase("ratio 9 seen")
        counts = spread(http, url, token, n)
        low, high = binomial_bound(n, 0.9)
        assert low <= counts[routes[first]] <= high, counts  # 9:1 now (1:1 would give 65-135)
        phase("spread 9:1")
        info = service_info(stack_client, keypair, "echo-svc")
        assert {r["routing_id"]: float(r["traffic_ratio"]) for r in info["routings"]} == {first: 9.0, second: 1.0}

        phase("ratios")
        # --- a replica switched unhealthy: its route shows UNHEALTHY and gets nothing until it recovers ---
        switch = replica_url(Session.objects.get(pk=routes[first]))
        assert httpx.post(switch + "/admin/unhealthy", timeout=5).status_code == 200
        live_stack.wait_for(lambda: Routing.objects.get(pk=first).status == "unhealthy", timeout=SETTLE,
                            interval=0.2, what="the switched replica's route UNHEALTHY")
        info = service_info(stack_client, keypair, "echo-svc")
        assert {r["routing_id"]: r["status"].lower() for r in info["routings"]} == {first: "unhealthy",
                                                                                   second: "healthy"}
        assert spread(http, url, token, 50) == {routes[second]: 50}
        assert httpx.post(switch + "/admin/healthy", timeout=5).status_code == 200
        live_stack.wait_for(lambda: Routing.objects.get(pk=first).status == "healthy", timeout=SETTLE,
                            interval=0.2, what="the switched replica's route HEALTHY again")
        wait_until_seen(live_stack, http, url, token, routes[first])
        phase("switched unhealthy and back")
        # --- one replica dies: its route goes unhealthy, traffic avoids it, it is replaced -------------
        victim = Session.objects.get(pk=routes[second])
        with LoadLoop(url, token) as load:
            wait_until_seen(live_stack, http, url, token, routes[second])
            kill_replica(live_stack, victim)

            from appproxy.models import RouteHealth

            def marked_unhealthy():
                worker_view = RouteHealth.objects.filter(route_id=second, status="unhealthy").exists()
                manager_view = Routing.objects.filter(pk=second, status="unhealthy").exists()
                return worker_view or manager_view
            live_stack.wait_for(marked_unhealthy, timeout=SETTLE, interval=0.05,
                                what="the killed replica's route marked unhealthy")
            unhealthy_at = time.monotonic()
            phase("unhealthy")

            def replaced():
                now = {str(r.pk): str(r.session_id) for r in live_routes(endpoint_id) if r.status == "healthy"}
                fresh = set(now) - set(routes)
                return fresh and len(now) == 2 and second not in now and now
            healed = live_stack.wait_for(replaced, timeout=SETTLE, interval=0.25, what="a replacement replica")
            newcomer = next(s for r, s in healed.items() if r not in routes)
            phase("replaced")
            wait_until_seen(live_stack, http, url, token, newcomer)
            phase("newcomer seen")
        after_kill = load.snapshot()
        assert len(after_kill) > 50, "the load loop ran"
        failed = [r for r in after_kill if r[1] != 200]
        # only requests in flight on the killed replica at the kill may fail (one per load thread at most);
        # none sent after the worker marked its route unhealthy fails or reaches it
        assert len(failed) <= load.threads, failed
        assert all(r[0] < unhealthy_at for r in failed), failed
        assert not any(r[2] == routes[second] for r in after_kill if r[0] > unhealthy_at)
        assert Session.objects.get(pk=routes[second]).status in ("TERMINATED", "ERROR", "TERMINATING")

        # --- scale to 3 and back to 1 under load: no request fails ------------------------------------
        before = {str(r.session_id) for r in live_routes(endpoint_id)}
        with LoadLoop(url, token) as load:
            cli_done(stack_client, keypair, "service", "scale", "echo-svc", "3")
            phase("scale 3 asked")
            three = healthy_info(live_stack, stack_client, keypair, "echo-svc", 3)
            phase("3 healthy")
            third = next(r["session"] for r in three["routings"] if r["session"] not in before)
            wait_until_seen(live_stack, http, url, token, third)
            cli_done(stack_client, keypair, "service", "scale", "echo-svc", "1")
            phase("scale 1 asked")
            one = healthy_info(live_stack, stack_client, keypair, "echo-svc", 1)
            phase("1 healthy")
            survivor = one["routings"][0]["session"]
            gone = {r["session"] for r in three["routings"]} - {survivor}
            live_stack.wait_for(lambda: not Session.objects.filter(pk__in=gone).exclude(
                status__in=("TERMINATED", "CANCELLED", "ERROR")).exists(), timeout=SETTLE,
                what="the drained replicas' sessions ended")
            settled_at = time.monotonic()
            phase("drained sessions ended")
            live_stack.wait_for(lambda: len(load.replicas_since(settled_at)) and
                                sum(load.replicas_since(settled_at).values()) >= 50, timeout=SETTLE,
                                what="requests after the scale-down")
        results = load.snapshot()
        assert len(results) > 100 and load.failures() == [], load.failures()[:10]
        assert load.replicas_since(settled_at).keys() == {survivor}
        assert Endpoint.objects.get(pk=endpoint_id).replicas == 1

        # --- removed: its sessions end and its URL stops answering -----------------------------------
        phase("scaled")
        done = stack_client.cli(keypair, "service", "rm", "echo-svc")
        assert done.returncode == 0, done.stdout + done.stderr
        phase("rm")
        live_stack.wait_for(lambda: destroyed(endpoint_id, {survivor}), timeout=SETTLE,
                            what="the endpoint destroyed and its last session ended")

        def refused():
            try:
                return predict(http, url, token).status_code in (404, 410, 502, 503)
            except httpx.HTTPError:
                return True
        live_stack.wait_for(refused, timeout=SETTLE, what="the URL refusing after service rm")
        phase("gone")


@pytest.mark.parametrize("client_bin", ["24.9.14"], indirect=True)
def test_the_24_client_serves_a_model_and_refuses_bad_input_clearly_creating_nothing(
        live_stack, serving, stack_client, owner, outsider, tmp_path):
    from serving.models import Endpoint
    from sessions.models import Session
    from vfolders.models import VFolder

    keypair = owner.main_keypair
    upload_model_folder(stack_client, keypair, "model-ok", tmp_path)  # through this client
    make_model_folder(owner, "model-empty", {"model.txt": "nothing else\n"})
    make_model_folder(owner, "model-broken", {"model-definition.yaml": "models:\n  - name: [unclosed\n"})
    theirs = make_model_folder(outsider, "theirs")
    sessions_before = Session.objects.count()

    def refused(*args, expect):
        _, output = cli_json(stack_client, keypair, "service", "create", *args, *SMALL, ok=False)
        assert expect.lower() in output.lower(), output
        assert not Endpoint.objects.exists() and Session.objects.count() == sessions_before

    refused(LOCAL_IMAGE, "model-empty", "1", "-t", "no-def", expect="model-definition.yaml")
    refused(LOCAL_IMAGE, "model-broken", "1", "-t", "broken-def", expect="not valid YAML")
    refused(LOCAL_IMAGE, "model-ok", "65", "-t", "too-many", expect="64")
    refused(LOCAL_IMAGE, str(theirs.pk), "1", "-t", "not-mine", expect=str(theirs.pk)[:8])
    refused("local/no-such-image:9.9", "model-ok", "1", "-t", "no-image", expect="no-such-image")
    folder = VFolder.objects.get(name="model-ok", user=owner)
    for body, expect in (
        ({"runtime_variant": "tensorflow-serving-9"}, "runtime_variant"),
        ({"desired_session_count": -1}, "desired_session_count"),
        ({"desired_session_count": "two"}, "desired_session_count"),
    ):
        request = {"name": "rest-bad", "desired_session_count": 1, "image": LOCAL_IMAGE, "arch": None,
                   "group": "default", "domain": "default", "cluster_size": 1, "cluster_mode": "single-node",
                   "open_to_public": False,
                   "config": {"model": str(folder.pk), "model_mount_destination": "/models",
                              "resources": {"cpu": "0.25", "mem": "128m"}, "scaling_group": "default"}}
        request.update(body)
        answer = api(live_stack, keypair, "POST", "/services", request)
        assert answer.status_code == 400, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert answer.json()["type"].endswith("/invalid-api-params") and expect in answer.json()["msg"], answer.text
        assert not Endpoint.objects.exists() and Session.objects.count() == sessions_before

    # --- and a good one, with this client --------------------------------------------------------------
    created, _ = cli_json(stack_client, keypair, "service", "create", LOCAL_IMAGE, "model-ok", "1", "-t", "svc24",
                          *SMALL)
    endpoint_id = created["items"][0]["endpoint_id"]
    info = healthy_info(live_stack, stack_client, keypair, "svc24", 1)
    token = generate_token(stack_client, keypair, "svc24")
    with httpx.Client(timeout=10) as http:
        answer = predict(http, info["url"], token, {"client": "24.9.14"})
        assert answer.status_code == 200 and answer.json()["model"] == "echo-model v1", answer.text
        assert answer.json()["replica"] == info["routings"][0]["session"]
    listed, _ = cli_json(stack_client, keypair, "service", "list")
    assert [item["name"] for item in listed["items"]] == ["svc24"]
    done = stack_client.cli(keypair, "service", "rm", "svc24")
    assert done.returncode == 0, done.stdout + done.stderr
    live_stack.wait_for(lambda: destroyed(endpoint_id, {info["routings"][0]["session"]}), timeout=SETTLE,
                        what="svc24 destroyed and its session ended")


def test_a_docker_replica_answers_through_the_endpoint(live_stack, cluster, docker_node, stack_client, owner,
                                                       tmp_path):
    from vfolders import services as vfolder_services

    vfolder_services.ensure_default_storage_host()
    start_proxy(live_stack)
    keypair = owner.main_keypair
    upload_model_folder(stack_client, keypair, "docker-model", tmp_path)
    created, _ = cli_json(stack_client, keypair, "service", "create", DOCKER_IMAGE, "docker-model", "1",
                          "-t", "docker-svc", *SMALL)
    info = healthy_info(live_stack, stack_client, keypair, "docker-svc", 1)
    token = generate_token(stack_client, keypair, "docker-svc")
    with httpx.Client(timeout=10) as http:
        answer = predict(http, info["url"], token, {"on": "docker"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["replica"] == info["routings"][0]["session"]  # BACKENDAI_SESSION_ID in the container
    assert body["echo"] == {"on": "docker"} and body["model"] == "echo-model v1"  # the folder mounted at /models
    cli_done(stack_client, keypair, "service", "rm", "docker-svc")
    live_stack.wait_for(lambda: destroyed(created["items"][0]["endpoint_id"], {body["replica"]}), timeout=SETTLE,
                        what="docker-svc destroyed and its container's session ended")
