"""Inference circuits on a running worker (no Django): weighted spread over routes, API
tokens, health checks (avoiding, re-admitting, initial delay), fail-over from a killed
replica, draining, reports to the coordinator and the Prometheus metrics.  The replicas
are real HTTP servers on 127.0.0.1 (threads, or processes where one is killed)."""
import asyncio
import time
from collections import Counter

import httpx
from inference_support import (
    TOKEN_SECRET,
    RawClient,
    auth,
    free_port,
    inference_circuit,
    replica_process,
    replicas,
    route,
)
from worker_support import FakeCoordinator, run, running_worker


async def until(predicate, what: str, timeout: float = 10.0):
    """Wait (bounded) for ``predicate()``; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def state_of(worker, circuit):
    return worker.inference.endpoints[circuit["id"]]


def status(worker, circuit, route_id):
    return state_of(worker, circuit).routes[route_id].status


async def all_healthy(worker, circuit):
    await until(lambda: circuit["id"] in worker.inference.endpoints and all(
        r.status == "healthy" for r in state_of(worker, circuit).routes.values()), "every route to be healthy")


def test_requests_spread_over_routes_by_their_traffic_ratio():
    with replica_process("a") as a, replica_process("b") as b:  # processes: no GIL shared with the worker
        c = inference_circuit(free_port(), [route(a, 3, port=a.port), route(b, 1, port=b.port)], public=True)

        async def scenario():
            async with running_worker([c]) as (worker, _):
                await all_healthy(worker, c)
                client, seen = RawClient(c["port"]), Counter()
                try:
                    for _ in range(2000):
                        status, body = await client.get("/v1/models")
                        assert status == 200
                        seen[body["name"]] += 1
                finally:
                    client.close()
                return seen

        seen = run(scenario(), timeout=120)
        assert sum(seen.values()) == 2000
        assert 0.68 < seen["a"] / 2000 < 0.82, seen  # 3:1 expects 0.75 (sd 0.01)


def test_an_api_token_for_the_endpoint_is_required_and_never_reaches_the_replica():
    with replicas("a") as (a,):
        c = inference_circuit(free_port(), [route(a)])
        url = f"http://127.0.0.1:{c['port']}/v1/chat"

        async def scenario():
            async with running_worker([c]) as (worker, _), httpx.AsyncClient() as client:
                await all_healthy(worker, c)
                for headers in (auth(c), auth(c, "Bearer"), auth(c, "bearer")):
                    ok = await client.get(url, headers=headers)
                    assert ok.status_code == 200, ok.text
                    assert ok.json()["authorization"] is None, "the token stays at the proxy"
                refusals = {
                    "missing": {},
                    "expired": auth(c, ttl=10, now=time.time() - 60),
                    "other endpoint": auth(c, endpoint="6d1f7f9e-0000-4000-8000-000000000000"),
                    "forged": auth(c, secret="not-the-secret-0123456789"),
                    "wrong scheme": {"Authorization": "Basic dXNlcjpwYXNz"},
                    "garbage": {"Authorization": "BackendAI not.a-token"},
                }
                answers = {}
                for why, headers in refusals.items():
                    refused = await client.get(url, headers=headers)
                    assert refused.status_code == 401, (why, refused.text)
                    assert refused.headers["content-type"] == "application/problem+json"
                    assert "BackendAI" in refused.headers["www-authenticate"]
                    body = refused.json()
                    assert body["type"] == "https://api.backend.ai/probs/invalid-api-token"
                    answers[why] = body["msg"]
                return answers

        answers = run(scenario())
        assert "expired" in answers["expired"] and "another endpoint" in answers["other endpoint"]
        assert "bad signature" in answers["forged"] and "needs an API token" in answers["missing"]


def test_a_public_endpoint_needs_no_token_and_passes_the_callers_authorization_on_no_further():
    with replicas("a") as (a,):
        c = inference_circuit(free_port(), [route(a)], public=True, secret="")

        async def scenario():
            async with running_worker([c]) as (worker, _), httpx.AsyncClient() as client:
                await all_healthy(worker, c)
                plain = await client.get(f"http://127.0.0.1:{c['port']}/")
                carried = await client.get(f"http://127.0.0.1:{c['port']}/", headers={"Authorization": "Bearer x"})
                return plain, carried

        plain, carried = run(scenario())
        assert plain.status_code == 200 and carried.status_code == 200
        assert carried.json()["authorization"] is None


def test_an_unhealthy_route_is_avoided_and_takes_traffic_again_once_it_passes():
    with replicas("a", "b") as (a, b):
        ra, rb = route(a), route(b)
        c = inference_circuit(free_port(), [ra, rb], public=True, threshold=2)
        url = f"http://127.0.0.1:{c['port']}/"

        async def scenario():
            async with running_worker([c]) as (worker, fake), httpx.AsyncClient() as client:
                await all_healthy(worker, c)
                b.state["health"] = 503
                await until(lambda: status(worker, c, rb["route_id"]) == "unhealthy", "b to be found unhealthy")
                assert state_of(worker, c).routes[rb["route_id"]].last_error == "HTTP 503 (expected 200)"
                names = Counter()
                for _ in range(200):
                    names[(await client.get(url)).json()["name"]] += 1
                assert names == {"a": 200}, names
                b.state["health"] = 200
                await until(lambda: status(worker, c, rb["route_id"]) == "healthy", "b to be healthy again")
                back = Counter()
                for _ in range(200):
                    back[(await client.get(url)).json()["name"]] += 1
                assert back["b"] > 0, back

                def flips():  # flips waiting together go out in one report
                    return [(rid, r["status"]) for flip in fake.flips for routes in flip.values()
                            for rid, r in routes.items()]

                def b_went_and_came_back():
                    seen, down = flips(), (rb["route_id"], "unhealthy")
                    return down in seen and (rb["route_id"], "healthy") in seen[seen.index(down) + 1:]
                await until(b_went_and_came_back, "b's flip reports")
                return flips()

        flips = run(scenario(), timeout=60)
        assert flips.count((rb["route_id"], "unhealthy")) == 1
        assert (ra["route_id"], "unhealthy") not in flips


def test_failures_during_the_initial_delay_do_not_count():
    with replicas("a") as (a,):
        a.state["health"] = 500
        ra = route(a)
        c = inference_circuit(free_port(), [ra], public=True, initial_delay=300)

        async def scenario():
            async with running_worker([c]) as (worker, _), httpx.AsyncClient() as client:
                await until(lambda: a.state.get("checks", 0) >= 5, "five checks")
                starting = state_of(worker, c).routes[ra["route_id"]]
                assert (starting.status, starting.failures) == ("unknown", 0)
                assert "HTTP 500" in starting.last_error
                refused = await client.get(f"http://127.0.0.1:{c['port']}/")
                assert refused.status_code == 503 and refused.json()["type"].endswith("/no-healthy-replica")
                a.state["health"] = 200
                await until(lambda: starting.status == "healthy", "the first pass")
                assert (await client.get(f"http://127.0.0.1:{c['port']}/")).status_code == 200

        run(scenario())


def test_with_no_healthy_replica_the_answer_is_a_503_problem():
    dead = free_port()
    c = inference_circuit(free_port(), [route(None, port=dead)], public=True)

    async def scenario():
        async with running_worker([c]) as (worker, _), httpx.AsyncClient() as client:
            await until(lambda: all(r.status == "unhealthy" for r in state_of(worker, c).routes.values()),
                        "the route to be unhealthy")
            return await client.get(f"http://127.0.0.1:{c['port']}/v1/models")

    response = run(scenario())
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "https://api.backend.ai/probs/no-healthy-replica"


def test_a_killed_replica_loses_no_request():
    with replica_process("a") as a, replica_process("b") as b:
        ra, rb = route(a, port=a.port), route(b, port=b.port)
        # checks far apart: only the fail-over can save the requests right after the kill
        c = inference_circuit(free_port(), [ra, rb], public=True, interval=30, threshold=3)
        url = f"http://127.0.0.1:{c['port']}/"

        async def scenario():
            async with running_worker([c]) as (worker, fake), httpx.AsyncClient() as client:
                await all_healthy(worker, c)
                warm = Counter()
                for _ in range(50):
                    warm[(await client.get(url)).json()["name"]] += 1
                assert warm["a"] and warm["b"], "both replicas served (their connections are pooled now)"
                a.kill()
                a.wait(10)
                answers = [await client.get(url) for _ in range(200)]
                assert [r.status_code for r in answers] == [200] * 200
                assert {r.json()["name"] for r in answers} == {"b"}
                dead = state_of(worker, c).routes[ra["route_id"]]
                assert dead.status == "unhealthy" and dead.last_error.startswith("connect failed")
                await until(lambda: any(ra["route_id"] in routes and routes[ra["route_id"]]["status"] == "unhealthy"
                                        for flip in fake.flips for routes in flip.values()), "the flip report")

        run(scenario(), timeout=60)


def test_a_draining_route_finishes_its_requests_and_takes_no_new_ones():
    with replicas("a", "b") as (a, b):
        ra, rb = route(a), route(b, active=False)
        c = inference_circuit(free_port(), [ra, rb], public=True)
        fake = FakeCoordinator([c])
        url = f"http://127.0.0.1:{c['port']}"

        async def scenario():
            async with running_worker([c], coordinator=fake) as (worker, _), httpx.AsyncClient(timeout=30) as client:
                await all_healthy(worker, c)
                slow = asyncio.create_task(client.get(f"{url}/slow"))
                await until(a.state["slow_started"].is_set, "the slow request to reach a")
                fake.set([{**c, "revision": 2, "routes": [{**ra, "active": False}, {**rb, "active": True}]}])
                await until(lambda: worker.table.get(c["id"]).revision == 2, "the worker to sync the drain")
                async with httpx.AsyncClient() as other:
                    names = Counter([(await other.get(f"{url}/")).json()["name"] for _ in range(100)])
                assert names == {"b": 100}, names
                assert not slow.done()
                a.state["release"].set()
                finished = await slow
                assert finished.status_code == 200 and finished.json()["name"] == "a"
                assert state_of(worker, c).routes[ra["route_id"]].status == "healthy", "health survived the update"

        run(scenario())


def test_health_checks_follow_the_table_and_stop_with_their_routes():
    with replicas("a", "b") as (a, b):
        ra, rb = route(a), route(b)
        c = inference_circuit(free_port(), [ra, rb], public=True)
        fake = FakeCoordinator([c])

        async def scenario():
            async with running_worker([c], coordinator=fake) as (worker, _):
                await all_healthy(worker, c)
                endpoint = state_of(worker, c)
                kept = endpoint.routes[ra["route_id"]]
                dropped_task = endpoint.routes[rb["route_id"]].task
                fake.set([{**c, "revision": 2, "routes": [{**ra, "traffic_ratio": 5.0}]}])
                await until(lambda: worker.table.get(c["id"]).revision == 2, "the update")
                assert endpoint.routes == {ra["route_id"]: kept} and kept.status == "healthy" and kept.ratio == 5.0
                await until(dropped_task.done, "the dropped route's checker to stop")
                checks = b.state.get("checks", 0)
                kept_task = kept.task
                fake.set([])
                await until(lambda: worker.table.get(c["id"]) is None, "the circuit to go")
                await until(kept_task.done, "the last checker to stop")
                assert c["id"] not in worker.inference.endpoints
                await asyncio.sleep(0.5)
                return checks, b.state.get("checks", 0)

        before, after = run(scenario())
        assert after == before, "no checks of a route that is gone"


def test_heartbeats_and_metrics_carry_the_endpoints_counters():
    with replicas("a") as (a,):
        ra = route(a)
        c = inference_circuit(free_port(), [ra])

        async def scenario():
            async with running_worker([c]) as (worker, fake), httpx.AsyncClient() as client:
                await all_healthy(worker, c)
                url = f"http://127.0.0.1:{c['port']}"
                for _ in range(20):
                    assert (await client.get(f"{url}/", headers=auth(c))).status_code == 200
                for _ in range(3):
                    assert (await client.get(f"{url}/fail", headers=auth(c))).status_code == 500
                await until(lambda: fake.inference_reports and fake.inference_reports[-1][c["id"]]["counters"][
                    "requests_total"] == 23, "a heartbeat with the counters")
                report = fake.inference_reports[-1][c["id"]]
                exposition = (await client.get(f"http://127.0.0.1:{worker.config.api_port}/metrics")).text
                return report, exposition

        report, text = run(scenario())
        counters = report["counters"]
        assert (counters["errors_total"], counters["inflight"], counters["healthy_routes"]) == (3, 0, 1)
        assert counters["latency_count"] == 23 and counters["latency_buckets"]["+Inf"] == 23
        assert counters["routes"] == {ra["route_id"]: {"requests": 23, "errors": 3}}
        assert report["health"][ra["route_id"]]["status"] == "healthy"
        labels = f'endpoint="{c["endpoint_id"]}",route="{ra["route_id"]}"'
        assert f'appproxy_inference_requests_total{{{labels},status_class="2xx"}} 20.0' in text
        assert f'appproxy_inference_requests_total{{{labels},status_class="5xx"}} 3.0' in text
        assert f"appproxy_inference_errors_total{{{labels}}} 3.0" in text
        assert f'appproxy_inference_request_duration_seconds_count{{endpoint="{c["endpoint_id"]}"}} 23.0' in text
        assert f'appproxy_inference_inflight{{endpoint="{c["endpoint_id"]}"}} 0.0' in text
        assert f'appproxy_inference_healthy_routes{{endpoint="{c["endpoint_id"]}"}} 1.0' in text
        assert TOKEN_SECRET not in text
