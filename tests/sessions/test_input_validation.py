"""Every field of a session request is checked for type, range and length before any
work: a refusal is a 400 ``invalid-api-params`` naming the field, never a 500, and
it creates nothing (no session, no kernel, no history, no callback)."""
import ipaddress
from urllib.parse import quote

import pytest

from helpers import problem, slug
from sessions.models import Kernel, Session, SessionDependency

pytestmark = pytest.mark.django_db

BAD_FIELDS = [
    # (overrides of the official client's body, the field the message names)
    ({"starts_at": 1700000000, "type": "batch", "startupCommand": "true"}, "starts_at"),
    ({"starts_at": "99999999999999999999w", "type": "batch", "startupCommand": "true"}, "starts_at"),
    ({"starts_at": "tomorrow", "type": "batch", "startupCommand": "true"}, "starts_at"),
    ({"batch_timeout": 1e12, "type": "batch", "startupCommand": "true"}, "batch_timeout"),
    ({"batch_timeout": "soon", "type": "batch", "startupCommand": "true"}, "batch_timeout"),
    ({"clusterSize": 0}, "clusterSize"),
    ({"clusterSize": 65}, "clusterSize"),
    ({"clusterSize": 1.5}, "clusterSize"),
    ({"clusterSize": True}, "clusterSize"),
    ({"clusterSize": {"a": 1}}, "clusterSize"),
    ({"clusterSize": 1e308}, "clusterSize"),
    ({"clusterMode": "sideways"}, "clusterMode"),
    ({"priority": -1}, "priority"),
    ({"priority": 101}, "priority"),
    ({"type": "system"}, "type"),
    ({"config.resources": {"cpu": -1}}, "config.resources"),
    ({"config.resources": {"cpu": "NaN"}}, "config.resources"),
    ({"config.resources": {"cpu": 1e308}}, "config.resources"),
    ({"config.resources": {"cpu": "9" * 5000}}, "config.resources"),
    ({"config.resources": {"cpu": "9" * 40}}, "config.resources"),
    ({"config.resources": {"cpu": {"nested": {"deeper": 1}}}}, "config.resources"),
    ({"config.resources": {"cpu": "Infinity"}}, "config.resources"),
    ({"config.resources": {"mem": "1" * 60 + "y"}}, "config.resources"),
    ({"config.resources": ["cpu"]}, "config.resources"),
    ({"config.resource_opts": {"shmem": "-1g"}}, "config.resource_opts"),
    ({"config.resource_opts": {"x": {"y": 1}}}, "config.resource_opts"),
    ({"config.environ": {"A": 1}}, "config.environ"),
    ({"config.environ": {"1A": "x"}}, "config.environ"),
    ({"config.environ": {"A=B": "x"}}, "config.environ"),
    ({"config.environ": {"A": "x\x00y"}}, "config.environ"),
    ({"config.environ": {"A": "\ud800"}}, "config.environ"),
    ({"config.environ": ["A=B"]}, "config.environ"),
    ({"config.mounts": "data"}, "config.mounts"),
    ({"config.mounts": [1]}, "config.mounts"),
    ({"config.mounts": ["x\x00"]}, "config.mounts"),
    ({"config.mount_map": {"a": 1}}, "config.mount_map"),
    ({"config.mount_map": ["a"]}, "config.mount_map"),
    ({"config.preopen_ports": [80]}, "config.preopen_ports"),
    ({"config.preopen_ports": ["x"]}, "config.preopen_ports"),
    ({"config.scalingGroup": ["default"]}, "config.scalingGroup"),
    ({"config.scalingGroup": "x" * 65}, "config.scalingGroup"),
    ({"bootstrap_script": "x" * (256 * 1024 + 1)}, "bootstrap_script"),
    ({"startupCommand": ["ls"]}, "startupCommand"),
    ({"tag": "a/b"}, "tag"),
    ({"tag": "x" * 65}, "tag"),
    ({"tag": "t1\n"}, "tag"),
    ({"tag": 5}, "tag"),
    ({"owner_access_key": "x" * 21}, "owner_access_key"),
    ({"owner_access_key": "AKIA\x00"}, "owner_access_key"),
    ({"owner_access_key": 5}, "owner_access_key"),
    ({"group": {"name": "default"}}, "group"),
    ({"group": "x" * 65}, "group"),
    ({"group": "default\n"}, "group"),
    ({"domain": "def\x00ault"}, "domain"),
    ({"architecture": "x86_64\n"}, "architecture"),
    ({"reuseIfExists": "maybe"}, "reuseIfExists"),
    ({"enqueueOnly": {"a": 1}}, "enqueueOnly"),
    ({"maxWaitSeconds": -1}, "maxWaitSeconds"),
    ({"maxWaitSeconds": 1e9}, "maxWaitSeconds"),
    ({"dependencies": "abc"}, "dependencies"),
    ({"dependencies": [{"a": 1}]}, "dependencies"),
    ({"dependencies": ["x"] * 65}, "dependencies"),
    ({"image": 5}, "image"),
    ({"image": "bai-test/http:1.0\n"}, "image"),
    ({"config": "x"}, "config"),
]
BAD_NAMES = ["abcd\n", " abcd", "abcd ", "ab/cd", "ab\\cd", "ab\x01cd", "ab\tcd", "a" * 65, "abc", "-abcd",
             "ab cd", "from-template", "séance", "\ud800abcd"]
BAD_CALLBACKS = ["http://[::1", "ftp://example.com/hook", "javascript:alert(1)", "http:///nohost", "//example.com/x",
                 "http://127.0.0.1/hook", "http://127.1/hook", "http://[::1]/hook", "http://[::ffff:127.0.0.1]/hook",
                 "http://169.254.169.254/latest/meta-data", "http://0.0.0.0/", "http://224.0.0.1/",
                 "http://example.com:99999/", "http://exa mple.com/", "http://example.com/\r\nX-Injected: 1",
                 "http://" + "a" * 64 + ".example.com/", "http://example.com/" + "x" * 1100]


def _nothing_created():
    return not Session.objects.exists() and not Kernel.objects.exists() and not SessionDependency.objects.exists()


@pytest.mark.parametrize(("overrides", "field"), BAD_FIELDS, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD_FIELDS)])
def test_it_refuses_a_bad_field_naming_it_and_creates_nothing(signed, owner, cluster, overrides, field, create_body):
    response = signed(owner).post("/session", create_body(**overrides))
    assert response.status_code == 400, response.content
    assert slug(response) == "invalid-api-params"
    assert problem(response)["msg"].startswith(field), problem(response)["msg"]
    assert _nothing_created()


@pytest.mark.parametrize("name", BAD_NAMES)
def test_it_refuses_bad_session_names_on_create(signed, owner, cluster, name, create_body):
    response = signed(owner).post("/session", create_body(name=name))
    assert response.status_code == 400 and slug(response) == "invalid-api-params", response.content
    assert problem(response)["msg"].startswith("name:")
    assert _nothing_created()


@pytest.mark.parametrize("name", BAD_NAMES)
def test_it_refuses_the_same_names_on_rename(signed, owner, cluster, name, create_body):
    api = signed(owner)
    created = api.post("/session", create_body(name="keep-me")).json()
    response = api.post(f"/session/{created['sessionId']}/rename?name={quote(name, safe='')}"
                        if "\ud800" not in name else f"/session/{created['sessionId']}/rename", {"name": name})
    assert response.status_code == 400 and slug(response) == "invalid-api-params", response.content
    assert Session.objects.get(pk=created["sessionId"]).name == "keep-me"


def test_a_good_rename_still_works(signed, owner, cluster, create_body):
    api = signed(owner)
    created = api.post("/session", create_body(name="keep-me")).json()
    assert api.post(f"/session/{created['sessionId']}/rename?name=new_name-2.x").status_code == 204
    assert Session.objects.get(pk=created["sessionId"]).name == "new_name-2.x"


@pytest.mark.parametrize("url", BAD_CALLBACKS)
def test_it_refuses_callback_urls_that_are_not_plain_public_http(signed, owner, cluster, url, create_body):
    response = signed(owner).post("/session", create_body(callback_url=url))
    assert response.status_code == 400 and slug(response) == "invalid-api-params", response.content
    assert problem(response)["msg"].startswith("callback_url")
    assert _nothing_created()


def test_allowed_callback_networks_decide_for_ip_literals(signed, owner, cluster, settings, create_body):
    settings.CALLBACK_ALLOWED_NETWORKS = [ipaddress.ip_network("10.0.0.0/8")]
    api = signed(owner)
    refused = api.post("/session", create_body(callback_url="http://192.168.1.5/hook"))
    assert refused.status_code == 400 and problem(refused)["msg"].startswith("callback_url")
    accepted = api.post("/session", create_body(callback_url="https://10.1.2.3:8443/hook"))
    assert accepted.status_code == 201, accepted.content
    assert Session.objects.get().callback_url == "https://10.1.2.3:8443/hook"


def test_a_public_host_name_is_accepted_at_enqueue(signed, owner, cluster, create_body):
    response = signed(owner).post("/session", create_body(callback_url="https://hooks.example.com/bai?x=1"))
    assert response.status_code == 201, response.content


@pytest.mark.parametrize("ref", ["ab%00cd", "x" * 65])
def test_lookups_with_impossible_references_are_refused_not_crashed(signed, owner, cluster, ref):
    api = signed(owner)
    for response in (api.get(f"/session/{ref}"), api.delete(f"/session/{ref}"), api.get(f"/session/{ref}/logs"),
                     api.post(f"/session/{ref}/rename?name=abcdef"), api.get(f"/stream/session/{ref}/apps"),
                     api.get(f"/session/_/match?id={ref}")):
        assert response.status_code in (400, 404), (response.status_code, response.content)
        problem(response)


def test_a_malformed_owner_access_key_query_is_refused(signed, superadmin, cluster):
    response = signed(superadmin).get("/session/abcdef?owner_access_key=AKIA%00")
    assert response.status_code == 400 and problem(response)["msg"].startswith("owner_access_key")


@pytest.mark.parametrize("field", ["group", "dependencies"])
def test_a_malformed_uuid_is_not_found_rather_than_a_crash(signed, owner, cluster, create_body, field):
    value = "-" * 36 if field == "group" else ["-" * 36]
    response = signed(owner).post("/session", create_body(**{field: value}))
    assert response.status_code == 404 and slug(response) == "object-not-found", response.content
    assert _nothing_created()


def test_the_web_form_shows_the_name_rule_beside_the_field(client, owner, cluster):
    client.force_login(owner)
    response = client.post("/ui/sessions/new/", {"name": "abcd\n", "project": "default", "image": "bai-test/http:1.0",
                                                 "session_type": "interactive"})
    assert response.status_code == 200
    assert "line breaks" in " ".join(response.context["form"].errors.get("name", []))
    assert _nothing_created()
