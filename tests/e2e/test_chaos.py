"""Issue 10: chaos in production mode (PostgreSQL + Redis).  Two web processes
(clients fail over between them, as behind a load balancer), two Celery workers,
beat, a local agent and an app proxy worker, under a light steady load of session
creates and destroys with an app route open through the proxy.  Each process type
in turn is killed with SIGKILL and started again as an operator (or a supervisor)
would; after each, a new session must run and the route must serve again.  At the
end: no session stuck past its reconciler timeout (short timeouts here), every
agent's occupancy equal to its live kernels and to the kernel processes on the
machine, no duplicated session, no 5xx other than 503.  The checks are those of
``bench/soak`` (the same code); nothing here asserts a duration."""
from __future__ import annotations

import os
import signal
import sys
import threading

import httpx
import pytest

from helpers import load_bench

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

AGENT = "chaos-local"
TIMEOUTS = {"SESSION_SCHEDULED_TIMEOUT": "20", "SESSION_PREPARING_TIMEOUT": "30", "SESSION_TERMINATING_TIMEOUT": "20"}


@pytest.fixture
def live_stack_env():
    # the reconciler's timeouts short, so "stuck past its timeout" is seen within the test; the heartbeat
    # timeout at its production default, so an agent whose web process is restarting is not declared LOST
    return {**TIMEOUTS, "AGENT_HEARTBEAT_TIMEOUT": "30"}


@pytest.fixture
def soak():
    return load_bench("soak/soak.py")


@pytest.fixture
def reap_kernels(live_stack, soak):
    """Whatever happens, no kernel process of this test outlives it (the agent leaves kernels running)."""
    yield
    for pids in soak.kernel_processes(live_stack.data_dir).values():
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def _replace(argv: list[str], flag: str, value: str) -> list[str]:
    out = list(argv)
    if flag in out:
        out[out.index(flag) + 1] = value
    else:
        out += [flag, value]
    return out


class Load(threading.Thread):
    """Creates and destroys shell sessions, keeping two, until stopped; every outcome is recorded."""

    def __init__(self, soak, api, limits, index):
        super().__init__(name=f"chaos-load-{index}", daemon=True)
        self.soak, self.api, self.limits, self.index = soak, api, limits, index
        self.stop = threading.Event()
        self.live: list[str] = []
        self.cycles = 0

    def run(self):
        while not self.stop.is_set():
            created = []
            with self.api.recorder.op("create"):
                created.append(self.soak.create_session(self.api, f"chaos-load{self.index}-{self.cycles}",
                                                        self.soak.SHELL_IMAGE, self.limits))
            self.live += created
            while len(self.live) > 2:
                with self.api.recorder.op("destroy"):
                    self.soak.destroy_session(self.api, self.live.pop(0), self.limits)
            self.cycles += 1
            self.stop.wait(0.3)


def test_killing_each_process_type_loses_no_session_route_or_slot(live_stack, cluster, make_user, require,
                                                                  settings, soak, reap_kernels):
    from django.db import connection

    from accounts.models import UserRole
    from appproxy import services as proxy_services

    require(connection.vendor == "postgresql", "PostgreSQL (production mode)")
    require(bool(settings.REDIS_URL), "Redis (production mode)")
    stack = live_stack

    # the rest of the production topology: a second web process and a second worker, the agent, the proxy
    web2_port = soak.free_port()
    web2 = f"http://127.0.0.1:{web2_port}"
    stack.start("web2", _replace(stack.commands["web"][0], "-p", str(web2_port)))
    worker_argv = [a for a in stack.commands["worker"][0] if a not in ("--beat", "--purge")]
    stack.start("worker2", _replace(worker_argv, "--hostname", f"chaos2@{stack.port}"))
    stack.start_agent(AGENT, "local", cluster[1])
    ports = soak.free_port(12)
    stack.start("proxy", [sys.executable, "-m", "appproxy.worker", "--coordinator-url", stack.url,
                          "--name", "chaos-proxy", "--mode", "port", "--bind-host", "127.0.0.1",
                          "--port-range", f"{ports}-{ports + 9}", "--api-port", str(ports + 10),
                          "--heartbeat-interval", "1", "--sync-interval", "2"],
                {"BAI_PROXY_TOKEN": proxy_services.issue_token("chaos", authority="chaos-proxy")[1]})
    proxy_health = f"http://127.0.0.1:{ports + 10}/health"
    stack.wait_for(lambda: _answers(web2 + "/healthz"), timeout=90, what="the second web process")
    stack.wait_for(lambda: _answers(proxy_health), timeout=90, what="the proxy worker")

    admin = make_user("chaos-admin@example.com", role=UserRole.SUPERADMIN).main_keypair
    recorder = soak.Recorder(log=print)
    limits = soak.Limits.from_env(TIMEOUTS, create=120, destroy=120, app=90, settle=90)
    api = soak.Api([stack.url, web2], admin.access_key, admin.secret_key, recorder, limits)
    load_apis = [soak.Api(urls, admin.access_key, admin.secret_key, recorder, limits)
                 for urls in ([stack.url, web2], [web2, stack.url])]
    images = {soak.SHELL_IMAGE, soak.HTTP_IMAGE}
    stack.wait_for(lambda: any(a["id"] == AGENT and a["status"] == "ALIVE" for a in soak.list_agents(api))
                   and images <= {i["humanized_name"] for i in api.gql("{ images { humanized_name } }")["images"]},
                   timeout=90, interval=1, what="the local agent with its images")

    # the route: an http app opened through the proxy worker, which must survive every kill
    app_session = soak.create_session(api, "chaos-app", soak.HTTP_IMAGE, limits)
    location, cookie = soak.open_app(api, app_session, limits)

    loads = [Load(soak, load_api, limits, i) for i, load_api in enumerate(load_apis)]
    for load in loads:
        load.start()
    kills = ["web", "worker", "beat" if "beat" in stack.commands else "worker2", AGENT, "proxy"]
    ready = {"web": lambda: _answers(stack.url + "/healthz"), "proxy": lambda: _answers(proxy_health)}
    try:
        for n, name in enumerate(kills, 1):
            before = [load.cycles for load in loads]
            stack.kill(name)
            stack.restart(name)
            if name in ready:
                stack.wait_for(ready[name], timeout=90, what=f"{name} back after kill -9")
            # the stack serves again: a new session runs and ends, the route serves the app
            probe = f"chaos-probe-{n}"
            with recorder.op("probe"):
                soak.destroy_session(api, soak.create_session(api, probe, soak.SHELL_IMAGE, limits), limits)
            with recorder.lock:
                probes = [r for r in recorder.ops if r.op == "probe"]
            assert len(probes) == n and probes[-1].ok, \
                f"after kill -9 of {name}: {probes[-1].kind} {probes[-1].detail}\n{stack.log(name)}"
            soak.wait_served(location, cookie, 90)
            # the load went on through it: each load thread finished a cycle begun around the kill
            stack.wait_for(lambda: all(load.cycles > b + 1 for load, b in zip(loads, before)),
                           timeout=limits.create + limits.destroy, interval=0.5, what=f"the load after {name}")
    finally:
        for load in loads:
            load.stop.set()
        for load in loads:
            load.join(timeout=limits.create + limits.destroy + 30)

    for name, process in stack.processes.items():  # only the killed ones went away, and they came back
        assert process.poll() is None, f"{name} exited ({process.returncode})\n{stack.log(name)}"

    # a kernel being started when its agent was killed may end in ERROR: allowed here, cleaned up below
    scratch = stack.data_dir / f"scratch-{AGENT}"
    settled = soak.SETTLED_SESSION | {"ERROR"}
    problems = soak.settle(lambda: soak.cluster_problems(api, limits, scratch, AGENT, settled), limits.settle)
    assert not problems, "\n".join(["with sessions live:", *problems, recorder.summary()])
    assert not soak.app_page(location, cookie), "the route was lost"

    sessions = soak.list_sessions(api)
    print("ended in ERROR:", [s["name"] for s in sessions if s["status"] == "ERROR"] or "none")
    for session in sessions:
        if session["status"] not in soak.DONE_SESSION:
            forced = "?forced=true" if session["status"] == "ERROR" else ""
            api.call("DELETE", f"/session/{session['id']}{forced}", expect=(200, 404))
    problems = soak.settle(lambda: soak.cluster_problems(api, limits, scratch, AGENT),
                           limits.terminating_timeout + limits.reconcile_slack)
    sessions = soak.list_sessions(api)
    print(recorder.summary())
    print("resolved by the reconciler:", soak.forced_sessions(sessions) or "none")
    assert not problems, "\n".join(["after destroying all:", *problems, recorder.summary()])
    assert not soak.duplicated_sessions(sessions)
    assert not recorder.bad_answers, "\n".join(["5xx other than 503:", *recorder.bad_answers])
    for client in (api, *load_apis):
        client.close()
