"""Property-based fuzzing of ``POST /session``: whatever a signed user sends, the
answer is never a 5xx, and a refused request creates no session."""
import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from sessions.models import Kernel, Session

pytestmark = pytest.mark.django_db

NASTY_TEXT = ["", " ", "\x00", "\ud800", "abcd\n", "a/b", "..\\x", "\u202e", "x" * 70, "9" * 400, "NaN", "-1",
              "Infinity", "1e308", "http://[::1", "http://127.0.0.1/", "ftp://x/", "javascript:alert(1)", "default",
              "-" * 36, "0" * 32, "00000000-0000-0000-0000-000000000000", "from-template", "1h", "2024-01-01T00:00:00Z"]
text = st.one_of(st.text(max_size=80), st.sampled_from(NASTY_TEXT))
numbers = st.one_of(st.integers(min_value=-2**70, max_value=2**70), st.floats(allow_nan=False, allow_infinity=False),
                    st.sampled_from([0, 1, -1, 64, 65, 100, 101, 1e12, 1e308, -1e308, 2**31, 2**63]))
scalars = st.one_of(st.none(), st.booleans(), numbers, text)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(text, inner, max_size=4)), max_leaves=8)


def mixed(*valid):
    """Mostly plausible values of a field, sometimes anything at all."""
    return st.one_of(st.sampled_from(valid), json_values) if valid else json_values


slot_amounts = st.one_of(st.sampled_from(["1", "0.5", "1g", "512m", "64m", 2, 0.25]), numbers, text, json_values)
resources = st.one_of(st.dictionaries(st.sampled_from(["cpu", "mem", "cuda.device", "shmem", "bogus", ""]),
                                      slot_amounts, max_size=3), json_values)
environ = st.one_of(st.dictionaries(st.one_of(st.sampled_from(["FOO", "A_1", "1A", "A=B", "", "PATH"]), text),
                                    st.one_of(text, json_values), max_size=3), json_values)
config = st.one_of(
    st.fixed_dictionaries({}, optional={
        "resources": resources, "environ": environ, "resource_opts": st.one_of(
            st.fixed_dictionaries({}, optional={"shmem": slot_amounts}), json_values),
        "mounts": mixed([], ["data"], ["a/b"]), "mount_map": mixed({}, {"data": "/home/work/x"}),
        "mount_options": mixed({}, {"data": {"permission": "ro"}}), "scalingGroup": mixed(None, "default", "nope"),
        "preopen_ports": mixed(None, [8081], [80], [70000]), "agent_list": mixed(None, ["node-1"]),
        "clusterSize": mixed(1, 2)}),
    json_values)
def _not_false(value) -> bool:
    """Not a value the API reads as false or null (DRF's BooleanField)."""
    from rest_framework.fields import BooleanField

    try:
        return value not in BooleanField.FALSE_VALUES and value not in BooleanField.NULL_VALUES
    except TypeError:  # unhashable: a list or a dict
        return True


# enqueueOnly is never False: nothing schedules sessions here, so a created session would
# sit out maxWaitSeconds (the wait itself is tested in test_session_api.py)
request_bodies = st.fixed_dictionaries(
    {"image": mixed("bai-test/http:1.0", "http", "unknown/image:1"),
     "enqueueOnly": st.one_of(st.just(True), st.just("true"), json_values.filter(_not_false))},
    optional={
        "name": mixed(None, "fuzzsess", "fuzz.sess_2", "ab"), "tag": mixed(None, "t1", "a/b"),
        "type": mixed("interactive", "batch", "inference", "system"), "config": config,
        "clusterSize": mixed(1, 2, 0, 65), "clusterMode": mixed("single-node", "multi-node", "x"),
        "priority": mixed(10, 0, 100, 101, -1), "starts_at": mixed(None, "1h", "2030-01-01T00:00:00Z"),
        "batch_timeout": mixed(None, 60, 1e12), "startupCommand": mixed(None, "sleep 1"),
        "bootstrap_script": mixed(None, "echo hi"), "dependencies": mixed([], ["fuzzsess"]),
        "callback_url": mixed(None, "https://hooks.example.com/x", "http://[::1"),
        "owner_access_key": mixed(None, "AKIA0000000000000000"), "domain": mixed("default", "other"),
        "group": mixed("default", "nope"), "architecture": mixed("x86_64", "aarch64"),
        "reuseIfExists": mixed(True, False),
        "maxWaitSeconds": mixed(0, 1, -1, 1e9)})
raw_bodies = st.one_of(json_values.map(json.dumps), st.binary(max_size=200), st.text(max_size=200))


@pytest.fixture
def api(signed, owner, cluster, settings):
    settings.SESSION_CREATE_MAX_WAIT = 1  # a raw body that happens to create a session waits 1 s at most
    return signed(owner)


def _counts():
    return Session.objects.count(), Kernel.objects.count()


def _check(response, before):
    assert response.status_code < 500, response.content[:500]
    if response.status_code >= 400:
        assert response["Content-Type"].startswith("application/problem+json")
        assert _counts() == before


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=request_bodies)
def test_generated_create_requests_never_fail_with_a_server_error(api, data):
    before = _counts()
    _check(api.post("/session", json.dumps(data), content_type="application/json"), before)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=raw_bodies)
def test_garbage_bodies_never_fail_with_a_server_error(api, payload):
    before = _counts()
    _check(api.post("/session", payload, content_type="application/json"), before)
