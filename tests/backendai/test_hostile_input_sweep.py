"""The hostile-input sweep: every API URL pattern, every method its view allows,
hostile path values and hostile bodies, as a signed superadmin, a signed
ordinary user and (on daemon APIs) the daemon's bearer token.  No answer may be
a 5xx: a hostile request gets a 4xx (or a harmless 2xx), never a crash.

The URL patterns come from Django's resolver, so a new endpoint is swept
without touching this file.  One test per pattern keeps failures readable;
each failure lists the exact request and the logged traceback.
"""
from __future__ import annotations

import json
import logging
import traceback
from urllib.parse import quote

import pytest
from django.test import Client, RequestFactory
from django.urls import get_resolver
from django.urls.resolvers import URLPattern, URLResolver

from backendai import signing
from backendai.api.authentication import raw_request_target
from helpers import seed_http_image_and_agent

pytestmark = pytest.mark.django_db

SKIPPED_PREFIXES = ("ui/", "admin/", "static/", "metrics", "healthz", "readyz", "spec/")
SWEPT_UNDER_ADMIN = ("admin/gql", "admin/graphql")
FUNCTION_VIEW_METHODS = {
    "session-events": ["GET", "POST"],
}


def _walk(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern


def api_patterns() -> list[tuple[str, URLPattern]]:
    found = {}
    for route, pattern in _walk(get_resolver().url_patterns):
        if route.startswith(SKIPPED_PREFIXES) and not route.startswith(SWEPT_UNDER_ADMIN):
            continue
        found.setdefault(route, pattern)
    return sorted(found.items())


def allowed_methods(pattern: URLPattern) -> list[str]:
    view_class = getattr(pattern.callback, "view_class", None) or getattr(pattern.callback, "cls", None)
    if view_class is not None:
        methods = [m.upper() for m in view_class.http_method_names if m != "options" and hasattr(view_class, m)]
    else:
        methods = FUNCTION_VIEW_METHODS.get(pattern.name, ["GET", "POST"])
    # destructive methods last, so the plausible objects live through the rest of the sweep
    return sorted(methods, key=lambda m: m == "DELETE")


# --- hostile values --------------------------------------------------------------------------------

COMMON_FIELDS = [
    "name", "type", "image", "resources", "tag", "starts_at", "batch_timeout", "cluster_size", "clusterSize",
    "cluster_mode", "clusterMode", "path", "paths", "target_path", "new_name", "newName", "permission", "perm",
    "quota", "host", "usage_mode", "group", "group_id", "groupId", "domain", "owner_access_key", "config",
    "mounts", "environ", "scalingGroup", "scaling_group", "callback_url", "bootstrap_script", "startupCommand",
    "enqueueOnly", "maxWaitSeconds", "reuseIfExists", "dependencies", "architecture", "id", "ids", "vfolder_id",
    "inv_id", "invitee_emails", "emails", "user_ids", "size", "recursive", "archive", "src", "dst", "target_name",
    "service", "port", "login_session_token", "arguments", "envs", "username", "password", "old_password",
    "new_password", "new_password2", "type_", "query", "variables", "access_key", "is_active", "is_admin",
    "rate_limit", "resource_policy", "public_key", "private_key", "agent_id", "events", "status", "authority",
    "token", "advertised_host", "api_endpoint", "port_range", "protocols", "frontend_mode", "wildcard_domain",
    "wildcard_port", "capacity", "circuits", "reports", "since", "session_id", "app", "limit", "offset",
    "page", "message", "enabled", "cloneable", "unmanaged_path", "parents", "exist_ok", "forced", "name_or_id",
    "month", "start_date", "end_date", "group_ids", "project_id",
]

WRONG_VALUES = {
    "int": 7,
    "huge-int": 2**70,
    "negative": -1,
    "float-1e308": 1e308,
    "list": [1, "a", None],
    "dict": {"a": {"b": [1]}},
    "bool": True,
    "long-string": "x" * 10_000,
    "nul": "a\x00b",
    "newline": "name\n",
    "dotdot": "../../../etc/passwd",
}

HOSTILE_PATH_VALUES = [
    "..%2f..%2fetc%2fpasswd",
    "x" * 2000,
    "%00",
    "a%0Ab",
    "-1",
    "99999999999999999999999",
    "%ff%fe",
    "00000000-0000-0000-0000-000000000000",
]


def serializer_field_names() -> set[str]:
    """Every field name a project serializer declares (the views' bodies use them)."""
    from rest_framework import serializers

    names = set()
    todo = [serializers.Serializer]
    seen = set()
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub in seen:
                continue
            seen.add(sub)
            todo.append(sub)
            if not sub.__module__.split(".")[0] in {"accounts", "agents", "sessions", "vfolders", "appproxy", "serving", "backendai"}:
                continue
            try:
                names.update(sub().fields.keys())
            except Exception:  # noqa: BLE001 - a serializer needing arguments just lends no names
                continue
    return names


def hostile_bodies() -> list[tuple[str, object]]:
    fields = sorted(set(COMMON_FIELDS) | serializer_field_names())
    bodies: list[tuple[str, object]] = [("[]", []), ('"x"', "x"), ("null", None), ("{}", {}), ("1e999", "1e999")]
    for kind, value in WRONG_VALUES.items():
        bodies.append((f"every field {kind}", {field: value for field in fields}))
    return bodies


HOSTILE_QUERIES = ["limit=-1&offset=99999999999999999999&group_id=..%2f&id=%00",
                   "name=" + "x" * 3000 + "&path=../../etc&type=%0A",
                   "group=1e308&all=maybe&page=abc&size=-5&since=nan"]


# --- the world the requests run against ------------------------------------------------------------

class World:
    def __init__(self, superadmin, user, folder, session_name, access_key, agent_bearer, worker_bearer,
                 upload_token, download_token):
        self.superadmin = superadmin
        self.user = user
        self.folder = folder
        self.session_name = session_name
        self.access_key = access_key
        self.agent_bearer = agent_bearer
        self.worker_bearer = worker_bearer
        self.upload_token = upload_token
        self.download_token = download_token

    def plausible(self, converter_name: str) -> list[str]:
        return {
            "name": [self.folder.name, str(self.folder.id.hex), self.session_name],
            "access_key": [self.access_key],
            "authority": ["sweep-worker"],
            "inv_id": ["00000000-0000-0000-0000-000000000001"],
        }.get(converter_name, ["x"])


@pytest.fixture
def world(settings, tmp_path, make_user, superadmin, client):
    from accounts.models import Keypair, UserRole
    from agents import services as agent_services
    from appproxy import services as proxy_services
    from vfolders import services as vfolder_services
    from helpers import SignedClient

    settings.VFOLDER_ROOT = tmp_path / "vfroot"
    user = make_user("sweeper@example.com", role=UserRole.USER)
    Keypair.objects.filter(user__in=[user, superadmin]).update(rate_limit=10**6)
    group = agent_services.ensure_default_scaling_group()
    seed_http_image_and_agent(group)
    vfolder_services.ensure_default_storage_host()
    folder = vfolder_services.create_folder(user, name="data")
    keypair = user.main_keypair
    keypair.refresh_from_db()
    api = SignedClient(client, keypair.access_key, keypair.secret_key)
    created = api.post("/session", {
        "name": "sweep01", "image": "bai-test/http:1.0", "type": "interactive", "enqueueOnly": True,
        "config": {"resources": {"cpu": "1", "mem": "256m"}}, "group": "default", "domain": "default"})
    assert created.status_code in (200, 201), created.content
    upload = api.post(f"/folders/{folder.name}/request-upload", {"path": "up.txt", "size": 3})
    assert upload.status_code == 200, upload.content
    made = api.post(f"/folders/{folder.name}/mkdir", {"path": "sub"})
    assert made.status_code in (200, 201), made.content
    download = api.post(f"/folders/{folder.name}/request-download", {"path": "sub", "archive": True})
    _, agent_raw = agent_services.issue_token("sweep", agent_id="node-1")
    worker_token, worker_raw = proxy_services.issue_token("sweep", authority="sweep-worker")
    proxy_services.register(worker_token, "sweep-worker", {
        "frontend_mode": "port", "protocols": ["http", "tcp"], "advertised_host": "127.0.0.1",
        "api_endpoint": "http://127.0.0.1:1", "port_range": [32000, 32009]})
    return World(superadmin, user, folder, "sweep01", keypair.access_key, agent_raw, worker_raw,
                 upload.json()["token"],
                 download.json().get("token", "no-token") if download.status_code == 200 else "no-token")


def fill(route: str, values: dict[str, str]) -> str:
    import re

    return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: values[m.group(1)], route)


def path_variants(route: str, world: World) -> list[tuple[str, bool]]:
    """(path, plausible) pairs: the plausible objects, then hostile values in every parameter."""
    import re

    params = re.findall(r"<(?:\w+:)?(\w+)>", route)
    if not params:
        return [("/" + route, True)]
    variants = []
    for value in world.plausible(params[0]):
        variants.append(("/" + fill(route, {p: value if p == params[0] else world.plausible(p)[0] for p in params}), True))
    for value in HOSTILE_PATH_VALUES:
        variants.append(("/" + fill(route, {p: value for p in params}), False))
    return variants


class Caller:
    """Sends one request as a principal; signs what the server will see."""

    factory = RequestFactory()

    def __init__(self, label, keypair=None, bearer=None):
        self.label = label
        self.keypair = keypair
        self.bearer = bearer
        self.client = Client(raise_request_exception=False)

    def send(self, method, path, body):
        if body is None and method in ("GET", "HEAD", "DELETE"):
            raw, content_type = b"", "text/plain"
        else:
            raw = body.encode() if isinstance(body, str) and body == "1e999" else json.dumps(body).encode()
            content_type = "application/json"
        headers = {"HTTP_HOST": "testserver", "CONTENT_TYPE": content_type}
        if self.keypair is not None:
            target = raw_request_target(self.factory.generic(method, path))
            date_value = _now()
            sig = signing.sign(self.keypair.secret_key, method, target, date_value, "testserver",
                               signing.media_type(content_type), signing.LATEST_API_VERSION)
            headers.update(HTTP_DATE=date_value, HTTP_X_BACKENDAI_VERSION=signing.LATEST_API_VERSION,
                           HTTP_AUTHORIZATION=signing.authorization_header(self.keypair.access_key, sig))
        elif self.bearer is not None:
            headers["HTTP_AUTHORIZATION"] = f"Bearer {self.bearer}"
        return self.client.generic(method, path, raw, content_type=content_type, **headers)


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat()


def callers_for(route: str, world: World) -> list[Caller]:
    callers = [Caller("superadmin", _fresh(world.superadmin)), Caller("user", _fresh(world.user))]
    if route.startswith("agent-api/"):
        callers.append(Caller("agent-token", bearer=world.agent_bearer))
    if route.startswith("appproxy-api/"):
        callers.append(Caller("worker-token", bearer=world.worker_bearer))
    return callers


def _describe(response) -> str:
    exc_info = getattr(response, "exc_info", None)
    if exc_info:
        return "".join(traceback.format_exception(*exc_info))[-3000:]
    return response.content[:500].decode("utf-8", "replace")


PATTERNS = api_patterns()


@pytest.mark.parametrize("route,pattern", PATTERNS, ids=[route or "/" for route, _ in PATTERNS])
def test_no_hostile_request_gets_a_5xx(route, pattern, world, caplog):
    caplog.set_level(logging.ERROR)
    bodies = hostile_bodies()
    failures = []
    sent = 0
    for caller in callers_for(route, world):
        for method in allowed_methods(pattern):
            for path, plausible in path_variants(route, world):
                cases = bodies if plausible else [("{}", {})]
                requests = [(path, label, body) for label, body in cases]
                if plausible and method == "GET":
                    requests += [(f"{path}{'&' if '?' in path else '?'}{q}", "query", None) for q in HOSTILE_QUERIES]
                for target, label, body in requests:
                    caplog.clear()
                    response = caller.send(method, target, body)
                    sent += 1
                    if response.status_code >= 500:
                        logged = "\n".join(r.getMessage() + ("\n" + "".join(traceback.format_exception(*r.exc_info))[-3000:]
                                                             if r.exc_info else "") for r in caplog.records)
                        failures.append(f"{caller.label} {method} {target[:200]} body={label} -> "
                                        f"{response.status_code}\n{logged or _describe(response)}")
    assert sent > 0
    assert not failures, f"{len(failures)} of {sent} hostile requests got a 5xx:\n\n" + "\n\n".join(failures[:8])


def _fresh(user):
    user.refresh_from_db()
    return user.main_keypair


TRANSFER_HEADERS = [
    {},
    {"Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
    {"Tus-Resumable": "9", "Upload-Offset": "-1", "Upload-Length": "1e999", "Content-Type": "text/plain"},
    {"Tus-Resumable": "1.0.0", "Upload-Offset": "99999999999999999999", "Range": "bytes=9-1,x",
     "If-Range": "Mon, 99 Foo 0000 99:99:99 GMT", "Content-Type": "application/offset+octet-stream"},
]


def test_no_hostile_transfer_request_to_the_storage_proxy_gets_a_5xx(world, storage_proxy):
    """Uploads and downloads go to the storage proxy's client API (the manager serves no bytes):
    the tokens the manager handed out, and garbage in their place, with hostile headers and bodies."""
    import httpx

    failures, sent = [], 0
    with httpx.Client(base_url=storage_proxy.client_url, timeout=30, trust_env=False) as http:
        for path, token, methods in (("/upload", world.upload_token, ["HEAD", "POST", "PATCH", "DELETE", "GET"]),
                                     ("/download", world.download_token, ["GET", "HEAD", "POST"])):
            for query in (f"token={quote(token)}", "token=..%2f%00", "", f"token={quote(token)}&archive=%00"):
                for method in methods:
                    for headers in TRANSFER_HEADERS:
                        for label, body in hostile_bodies()[:4]:
                            content = json.dumps(body).encode() if method in ("POST", "PATCH") else None
                            response = http.request(method, f"{path}?{query}", headers=headers, content=content)
                            sent += 1
                            if response.status_code >= 500:
                                failures.append(f"{method} {path}?{query[:60]} {headers} body={label} -> "
                                                f"{response.status_code} {response.text[:300]}")
    assert sent > 0
    assert not failures, f"{len(failures)} of {sent} hostile transfers got a 5xx:\n" + "\n".join(failures[:8])
