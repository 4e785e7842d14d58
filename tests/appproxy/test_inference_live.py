"""An endpoint's circuit end to end: the coordinator (the manager's live server) syncs it to a
real worker process-alike (``appproxy.worker`` on its own event loop and thread, talking HTTP
to the coordinator), the worker checks the replicas, its reports become ``RouteHealth`` and
``InferenceSample`` rows, and callers with the endpoint's token get through."""
import asyncio
import threading
import time
import uuid

import httpx
import pytest
from django.utils import timezone
from inference_support import free_port, replicas

from agents import services as agent_services
from agents.models import Agent
from appproxy import gateway, services, tokens
from appproxy.models import Circuit, InferenceSample, RouteHealth, Worker
from appproxy.worker.config import load_config
from appproxy.worker.server import Worker as ProxyWorker
from sessions import services as session_services
from sessions.models import Session

pytestmark = pytest.mark.django_db(transaction=True)


def wait_for(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last: {value!r})")
        time.sleep(0.05)


class ThreadedWorker:
    """``appproxy.worker`` running on its own event loop in a thread."""

    def __init__(self, url: str, token: str, port: int):
        self.config = load_config(["--coordinator-url", url, "--token", token, "--name", "live-proxy",
                                   "--port-range", f"{port}-{port}", "--api-port", str(free_port()),
                                   "--heartbeat-interval", "0.3", "--sync-interval", "0.3",
                                   "--shutdown-grace", "1"], env={})
        self.worker = ProxyWorker(self.config)
        self.loop = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self):
        self.loop = asyncio.get_running_loop()
        await self.worker.run()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        wait_for(lambda: self.loop is not None, "the worker's loop")
        self.loop.call_soon_threadsafe(self.worker.request_stop)
        self.thread.join(20)


@pytest.fixture
def replica_session(defaults):
    group = agent_services.ensure_default_scaling_group()
    agent = Agent.objects.create(id="node-1", scaling_group=group, addr="10.0.0.5",
                                 available_slots={"cpu": "4", "mem": "8589934592"}, last_heartbeat=timezone.now())

    def make(user, name, port):
        session = session_services.create_session_on_agent(user=user, image="bai-test/http:1.0", agent=agent,
                                                           slots={"cpu": "1"}, name=name)
        Session.objects.filter(pk=session.pk).update(status="RUNNING")
        session.kernels.update(status="RUNNING", kernel_host="127.0.0.1", service_ports=[
            {"name": "inference", "protocol": "http", "container_ports": [8000], "host_ports": [port]}])
        return Session.objects.get(pk=session.pk)
    return make


def test_an_endpoint_is_served_checked_and_measured_through_a_real_worker(live_server, replica_session, owner):
    secret = "live-endpoint-secret-0123456789"
    with replicas("a", "b") as (a, b):
        sessions = [replica_session(owner, "r-a", a.port), replica_session(owner, "r-b", b.port)]
        routes = [{"route_id": str(uuid.uuid4()), "session_id": str(s.pk), "traffic_ratio": 1.0, "active": True}
                  for s in sessions]
        ra, rb = (r["route_id"] for r in routes)
        port = free_port()
        with ThreadedWorker(live_server.url, services.issue_token("live")[1], port):
            wait_for(lambda: Worker.objects.filter(authority="live-proxy").exists(), "the registration")
            endpoint = uuid.uuid4()
            answer = gateway.coordinator().sync_endpoint(
                endpoint, owner_id=owner.pk, name="llm", scaling_group_id="default", container_port=8000,
                routes=routes, open_to_public=False, token_secret=secret,
                health_check={"path": "/health", "interval": 0.2, "timeout": 0.5, "threshold": 1})
            assert answer["url"] == f"http://127.0.0.1:{port}"

            def statuses():
                return dict(RouteHealth.objects.values_list("route_id", "status"))
            wait_for(lambda: statuses() == {uuid.UUID(ra): "healthy", uuid.UUID(rb): "healthy"},
                     "both routes reported healthy")

            # traffic is measured between heartbeats' samples: the first one is the base
            wait_for(lambda: InferenceSample.objects.filter(endpoint_id=endpoint).exists(), "a first sample")
            token = tokens.make_endpoint_token(secret, endpoint, owner.pk, 600)
            with httpx.Client(base_url=answer["url"], timeout=10) as client:
                assert client.get("/v1/models").status_code == 401
                names = {client.get("/v1/models", headers={"Authorization": f"BackendAI {token}"}).json()["name"]
                         for _ in range(40)}
                assert names == {"a", "b"}

                b.state["health"] = 500
                wait_for(lambda: gateway.coordinator().endpoint_health(endpoint)[rb]["status"] == "unhealthy",
                         "b reported unhealthy")
                assert "HTTP 500" in gateway.coordinator().endpoint_health(endpoint)[rb]["last_error"]
                served = {client.get("/", headers={"Authorization": f"Bearer {token}"}).json()["name"]
                          for _ in range(20)}
                assert served == {"a"}

                seen = []

                def measured():
                    seen.append(gateway.coordinator().endpoint_traffic(endpoint, 600))
                    return seen[-1] if seen[-1]["requests"] == 60 else None
                traffic = wait_for(measured, "the heartbeats' samples to count 60 requests")
                assert traffic["errors"] == 0 and traffic["latency_mean"] > 0 and traffic["healthy_routes"] == 1
                assert traffic["per_route"][ra]["requests"] >= 20
                assert InferenceSample.objects.filter(endpoint_id=endpoint).count() >= 2

                assert gateway.coordinator().remove_endpoint(endpoint) == 1
                wait_for(lambda: client.get("/").status_code == 404, "the worker to drop the circuit")
            assert not Circuit.objects.exists() and not RouteHealth.objects.exists()
