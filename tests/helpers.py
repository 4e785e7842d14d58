"""Helpers for tests: import with ``from helpers import ...``."""
from __future__ import annotations

import json as _json
import os
from contextlib import contextmanager
from datetime import datetime, timezone

import pytest

from backendai import signing

STRICT = os.environ.get("BACKEND_TEST_STRICT") == "1"
PASSWORD = "correct-horse-battery-9"


def require(available: bool, what: str) -> None:
    """Skip locally when a real dependency is missing; fail under CI=true."""
    if available:
        return
    if STRICT:
        pytest.fail(f"{what} is required under CI=true", pytrace=False)
    pytest.skip(f"{what} is not available here")


class SignedClient:
    """Django's test client, signing every request as the official client does."""

    host = "testserver"

    def __init__(self, client, access_key: str, secret_key: str, version: str = signing.LATEST_API_VERSION):
        self.client = client
        self.access_key = access_key
        self.secret_key = secret_key
        self.version = version

    def headers(self, method, target, content_type="application/json", date=None, version=None, secret=None):
        when = date or datetime.now(timezone.utc)
        date_value = when.isoformat()
        version = version or self.version
        sig = signing.sign(secret or self.secret_key, method, target, date_value, self.host,
                           signing.media_type(content_type), version)
        return {
            "HTTP_HOST": self.host,
            "HTTP_DATE": date_value,
            "HTTP_X_BACKENDAI_VERSION": version,
            "HTTP_AUTHORIZATION": signing.authorization_header(self.access_key, sig),
        }

    def request(self, method, target, data=None, content_type=None, extra=None, **sign_kwargs):
        import json as _json

        if content_type is None:
            content_type = "application/json" if data is not None else "text/plain"
        headers = self.headers(method, target, content_type, **sign_kwargs)
        headers["CONTENT_TYPE"] = content_type  # the test client drops it on empty bodies; the real client sends it
        headers.update(extra or {})
        body = _json.dumps(data) if data is not None and not isinstance(data, (str, bytes)) else (data or "")
        if isinstance(body, str):  # hostile bodies may hold lone surrogates: send them as the raw bytes
            body = body.encode("utf-8", "surrogatepass")
        return self.client.generic(method, target, body, content_type=content_type, **headers)

    def get(self, target, **kw):
        return self.request("GET", target, **kw)

    def post(self, target, data=None, **kw):
        return self.request("POST", target, data=data, **kw)

    def patch(self, target, data=None, **kw):
        return self.request("PATCH", target, data=data, **kw)

    def delete(self, target, data=None, **kw):
        return self.request("DELETE", target, data=data, **kw)


def problem(response) -> dict:
    """Assert a problem+json response and return its body."""
    assert response["Content-Type"].startswith("application/problem+json"), response.content
    body = response.json()
    assert body["type"].startswith("https://api.backend.ai/probs/")
    return body


def slug(response) -> str:
    return problem(response)["type"].rsplit("/", 1)[-1]


def tree_snapshot(*roots) -> dict:
    """Every entry under ``roots`` with its mode, size and mtime: equal snapshots
    before and after a refused request prove it changed no file."""
    state = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                info = os.lstat(path)
                state[path] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return state


# The official client's ``POST /session`` body (client-wire.md), for the session tests.
CLIENT_BODY = {
    "tag": "t1", "name": "mysess01",
    "config": {"mounts": [], "environ": {"FOO": "bar"}, "resources": {"cpu": "1", "mem": "1g"}, "resource_opts": {},
               "scalingGroup": None, "mount_map": {}, "preopen_ports": None},
    "dependencies": [], "callback_url": None, "architecture": "x86_64", "clusterSize": 1, "clusterMode": "single-node",
    "starts_at": None, "bootstrap_script": None, "owner_access_key": None, "domain": "default", "group": "default",
    "type": "interactive", "enqueueOnly": True, "maxWaitSeconds": 0, "reuseIfExists": True, "startupCommand": None,
    "image": "bai-test/http:1.0",
}


def client_body(**overrides) -> dict:
    """The client's body with ``overrides`` (``config.<key>`` for keys inside ``config``)."""
    data = _json.loads(_json.dumps(CLIENT_BODY))
    for key, value in overrides.items():
        if key.startswith("config.") and isinstance(data.get("config"), dict):
            data["config"][key[7:]] = value
        else:
            data[key] = value
    return data


def seed_http_image_and_agent(group, **agent_fields):
    """The ``bai-test/http:1.0`` image (one ``web`` http port) and an ALIVE agent
    ``node-1`` with 4 CPUs and 8 GiB in ``group``: enough to enqueue sessions."""
    from django.utils import timezone

    from agents.models import Agent, Image

    image = Image.objects.create(
        name="bai-test/http:1.0", repository="bai-test/http", tag="1.0", architecture="x86_64", is_local=True,
        labels={"ai.backend.service-ports": "web:http:8080"},
        resources={"cpu": {"min": "0.1", "max": None}, "mem": {"min": str(32 * 2**20), "max": "4294967296"}},
        service_ports=[{"name": "web", "protocol": "http", "container_ports": [8080]}])
    agent = Agent.objects.create(id="node-1", scaling_group=group, available_slots={"cpu": "4", "mem": "8589934592"},
                                 last_heartbeat=timezone.now(), **agent_fields)
    return image, agent


def running_on_a_local_agent(user, agent_id: str, name: str, **kernel_fields):
    """A ``bai-test/http:1.0`` session (1 CPU) of ``user`` marked RUNNING, its kernels RUNNING at 127.0.0.1
    (with ``kernel_fields``), on a new ALIVE local-backend agent ``agent_id`` (4 CPUs, 8g) of the default
    scaling group, as an agent's sync would leave them: no agent process.  Returns ``(session, agent)``."""
    from django.utils import timezone

    from agents import services as agent_services
    from agents.models import Agent
    from sessions import services as session_services
    from sessions.models import Session

    group = agent_services.ensure_default_scaling_group()
    agent = Agent.objects.create(id=agent_id, scaling_group=group, available_slots={"cpu": "4", "mem": "8g"},
                                 backend="local", last_heartbeat=timezone.now())
    session = session_services.create_session_on_agent(user=user, image="bai-test/http:1.0", agent=agent,
                                                       slots={"cpu": "1"}, name=name)
    Session.objects.filter(pk=session.pk).update(status="RUNNING", agent_ids=[agent.pk])
    session.kernels.update(status="RUNNING", kernel_host="127.0.0.1", **kernel_fields)
    return session, agent


def load_bench(relative: str):
    """A benchmark script under ``bench/`` (not a package) as a module, e.g. ``load_bench("soak/soak.py")``:
    tests run the same code as the command line, never a copy."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / relative
    name = "bench_" + relative.replace("/", "_").removesuffix(".py")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def terminal_stdin(text: str) -> str:
    """A terminal websocket frame typing ``text``."""
    import base64

    return _json.dumps({"type": "stdin", "chars": base64.b64encode(text.encode()).decode()})


def terminal_read_until(ws, needle: str, timeout: float = 30.0, allowed=None) -> str:
    """Read a terminal websocket's output until ``needle`` appears (bounded); ``allowed``: the only
    frame types accepted on the way (any when None)."""
    import base64
    import time

    seen = ""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{needle!r} never came; got {seen!r}"
        frame = _json.loads(ws.recv(timeout=remaining))
        assert allowed is None or frame["type"] in allowed, frame
        if frame["type"] == "out":
            seen += base64.b64decode(frame["data"]).decode(errors="replace")
    return seen


# The official client's ``session list`` (``ps``) document, exactly as backend.ai-client 23.9.10
# sends it (client-wire.md §8).
CLIENT_PS_DOCUMENT = """query($limit:Int!, $offset:Int!, $status: String, $access_key: String, $filter: String, $order: String) {
  compute_session_list(
      limit:$limit, offset:$offset, status:$status, access_key:$access_key, filter:$filter, order:$order) {
    items { name access_key id group_name main_kernel_id image type status status_info status_changed result tag created_at occupying_slots }
    total_count
  }
}"""


def csv_rows(response, encoding: str = "utf-8") -> list[list[str]]:
    """A streamed CSV answer (``/export/<report>/csv``) as rows, the header first."""
    import csv
    import io

    assert response.status_code == 200, response.content if not getattr(response, "streaming", False) else ""
    assert response.streaming, "an export is streamed"
    assert response["Content-Type"] == f"text/csv; charset={encoding}"
    raw = b"".join(response.streaming_content)
    return list(csv.reader(io.StringIO(raw.decode(encoding), newline="")))


@contextmanager
def logged_in_page(browser, base_url: str, user, password: str, timeout: int = 20_000, **context_options):
    """A Playwright page in a new browser context, logged in as ``user`` through the login form
    (``page.context`` is the context); the context closes on exit."""
    context = browser.new_context(base_url=base_url, **context_options)
    context.set_default_timeout(timeout)
    page = context.new_page()
    try:
        page.goto("/ui/login/")
        page.fill("input[name=username]", getattr(user, "email", user))
        page.fill("input[name=password]", password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_load_state("domcontentloaded")
        yield page
    finally:
        context.close()


def open_page_terminal(page) -> None:
    """Open the session page's terminal (xterm.js) and focus it once it says Connected."""
    page.click("#terminal-open")
    page.wait_for_selector("#terminal-screen .xterm-rows")
    # predicates as functions: a bare expression is eval()ed in the page, which the CSP refuses
    page.wait_for_function("() => document.getElementById('terminal-state').textContent.includes('Connected')")
    page.click("#terminal-screen")


def type_in_page_terminal(page, keys: str, until_row: str) -> None:
    """Type ``keys`` in the page's terminal, then wait for a row that reads ``until_row``."""
    page.keyboard.type(keys)
    page.wait_for_function("""(text) => Array.from(document.querySelectorAll('#terminal-screen .xterm-rows > div'))
                               .some(row => row.textContent.trim() === text)""", arg=until_row)


def exit_page_terminal(page) -> None:
    """Leave the page's terminal's shell and wait until the page says it exited."""
    page.keyboard.type("exit\n")
    page.wait_for_function("() => document.getElementById('terminal-state').textContent.includes('exited')")


def database_url_of_tests() -> str:
    """The URL of the database the tests run on, for processes the tests start (same database)."""
    from django.db import connection

    info = connection.settings_dict
    if connection.vendor == "postgresql":
        user = info.get("USER") or "postgres"
        password = f":{info['PASSWORD']}" if info.get("PASSWORD") else ""
        host, port = info.get("HOST") or "127.0.0.1", info.get("PORT") or 5432
        return f"postgres://{user}{password}@{host}:{port}/{info['NAME']}"
    return f"sqlite:///{info['NAME']}"


def answers_200(url: str):
    """A predicate for wait loops: ``url`` answers 200 now (any connection error is a no)."""
    import httpx

    def check() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False
    return check


def stop_process(process, grace: float = 30.0) -> None:
    """End a child started with ``start_new_session=True``: SIGTERM, then its whole group's
    SIGKILL if it has not exited within ``grace`` seconds."""
    import signal
    import subprocess

    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
