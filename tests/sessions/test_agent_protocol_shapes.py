"""The manager and the daemon share the protocol's shapes (``agents.protocol``): what
the manager sends as a desired kernel is exactly what the daemon parses, and what
the API accepts as a reported state is exactly what the daemon reports."""
import pytest

from agents import protocol
from agents import services as agent_services
from agents.api.serializers import KERNEL_STATES
from agents.models import Agent
from sessions import agent_sync
from sessions import services as session_services

pytestmark = pytest.mark.django_db


@pytest.fixture
def kernel(defaults, owner):
    group = agent_services.ensure_default_scaling_group()
    token = agent_services.issue_token("nodes", scaling_group=group)[0]
    agent_sync.sync(token, {"agent_id": "node-1", "scaling_group": "default", "capacity": {"cpu": "4", "mem": "1024"},
                            "slot_types": {"cpu": "count", "mem": "bytes"}}, "127.0.0.1")
    session = session_services.create_session_on_agent(
        user=owner, image="bai-test/http:1.0", agent=Agent.objects.get(pk="node-1"), slots={"cpu": "1", "mem": "512"},
        environ={"A": "1"}, mounts=[{"host_path": "/tmp", "container_path": "/home/work/x", "mode": "ro"}],
        service_ports=[{"name": "http", "protocol": "http", "container_ports": [8080]}])
    return session.kernels.select_related("session").get()


def test_the_desired_kernel_the_manager_sends_has_exactly_the_protocol_keys(kernel):
    assert tuple(agent_sync.kernel_spec(kernel, None)) == protocol.KERNEL_SPEC_FIELDS


def test_the_daemon_parses_what_the_manager_sends(kernel):
    spec = protocol.KernelSpec.from_wire(agent_sync.kernel_spec(kernel, None))
    assert (spec.kernel_id, spec.session_id, spec.image) == (str(kernel.pk), str(kernel.session_id), kernel.image)
    assert spec.environ == {"A": "1"} and spec.mounts[0].read_only
    assert [p.container_ports for p in spec.service_ports] == [[8080]]


def test_a_desired_kernel_with_a_missing_or_unknown_key_is_a_programming_error(kernel):
    fields = agent_sync.kernel_spec(kernel, None)
    with pytest.raises(TypeError):
        protocol.desired_kernel(**{**fields, "surprise": 1})
    fields.pop("image")
    with pytest.raises(TypeError):
        protocol.desired_kernel(**fields)


def test_the_api_accepts_exactly_the_states_the_daemon_reports():
    assert KERNEL_STATES == [s.value for s in protocol.ReportedStatus]
    assert set(agent_sync.REPORTED_STATUS) == set(KERNEL_STATES)


def test_a_stream_frame_round_trips_and_a_truncated_one_is_refused():
    frame = protocol.encode_data("s-1", b"payload")
    assert protocol.decode_data(frame) == ("s-1", b"payload")
    with pytest.raises(ValueError):
        protocol.decode_data(frame[:2])
    assert protocol.ack_threshold(protocol.DEFAULT_WINDOW) < protocol.DEFAULT_WINDOW
