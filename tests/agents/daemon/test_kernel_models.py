"""The wire models: desired kernels in, kernel states out (docs/agent-protocol.md)."""
from __future__ import annotations

from decimal import Decimal

import pytest

from agents.protocol import LOG_LIMIT, KernelSpec, KernelState, ReportedStatus, ServicePort, SpecError, tail_text

DESIRED = {
    "kernel_id": "6f1c1c3e-8f0e-4c43-9d62-5b2f7a0b1a11", "session_id": "0b7c2a57-2a7a-4d1c-9a43-7f3b3e4e5d6f",
    "session_name": "mysess", "session_type": "interactive", "cluster_role": "main", "cluster_idx": 1,
    "cluster_hostname": "main1", "image": "bai/shell:1.0", "architecture": "x86_64",
    "registry": {"url": "https://registry.example.com", "username": "u", "password": "p"},
    "slots": {"cpu": "1", "mem": "268435456", "cuda.device": "0"}, "resource_opts": {"shmem": "67108864"},
    "environ": {"FOO": "bar"},
    "mounts": [{"host_path": "/data/vfroot/x", "container_path": "/home/work/data", "mode": "rw"}],
    "service_ports": [{"name": "web", "protocol": "http", "container_ports": [8080]}],
    "startup_command": "python -m http.server 8080", "bootstrap_script": None, "batch_timeout": None,
}


def test_the_protocol_example_of_a_desired_kernel_parses():
    spec = KernelSpec.from_wire(DESIRED)
    assert spec.cpu == Decimal(1) and spec.mem == 268435456 and spec.shmem == 67108864 and spec.cuda_devices == 0
    assert spec.registry.username == "u" and spec.mounts[0].read_only is False
    assert spec.service_ports == [ServicePort("web", "http", [8080], [])]
    env = spec.environment()
    assert env["FOO"] == "bar" and env["BACKENDAI_KERNEL_ID"] == DESIRED["kernel_id"]
    assert env["BACKENDAI_CLUSTER_HOST"] == "main1"


@pytest.mark.parametrize("broken", [
    {"kernel_id": None}, {"kernel_id": "../etc"}, {"image": ""}, {"slots": {"cpu": "many"}},
    {"slots": {"mem": "-1"}}, {"mounts": [{"host_path": "/x"}]}, {"service_ports": [{"name": "web"}]},
])
def test_a_malformed_desired_kernel_is_refused(broken):
    with pytest.raises(SpecError):
        KernelSpec.from_wire({**DESIRED, **broken})


def test_a_fractional_gpu_count_is_refused():
    spec = KernelSpec.from_wire({**DESIRED, "slots": {"cuda.device": "0.5"}})
    with pytest.raises(SpecError):
        spec.cuda_devices


def test_kernel_states_have_the_protocol_shape():
    state = KernelState("k1", "s1", ReportedStatus.TERMINATED, container_id="abc", host="10.0.0.5",
                        service_ports=[ServicePort("web", "http", [8080], [30001])], exit_code=3,
                        reason="x" * 100, last_logs="bye", stats=None)
    entry = state.to_wire()
    assert set(entry) == {"kernel_id", "session_id", "status", "container_id", "host", "service_ports", "exit_code",
                          "reason", "last_logs", "stats"}
    assert entry["service_ports"] == [{"name": "web", "protocol": "http", "container_ports": [8080],
                                       "host_ports": [30001]}]
    assert len(entry["reason"]) == 64  # what the manager stores
    event = state.to_event("2026-11-23T18:00:00+00:00")
    assert "stats" not in event and event["timestamp"] == "2026-11-23T18:00:00+00:00"
    state.restart_id = "r1"
    assert state.to_wire()["restart_id"] == "r1"


def test_logs_are_cut_to_the_last_64_kib_of_utf8():
    text = "é" * LOG_LIMIT
    tail = tail_text(text)
    assert len(tail.encode()) <= LOG_LIMIT and tail.endswith("é")
    assert tail_text(b"abc\xff") == "abc\ufffd" and tail_text(None) is None
