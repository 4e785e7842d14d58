"""Fixtures of the serving tests: a scaling group that takes inference sessions with one
agent and the ``bai-test/http:1.0`` image, a model folder holding a model definition (written
through the storage proxy, as a user's upload would), and Backend.AI's create body."""
from __future__ import annotations

import copy
import io

import pytest

from helpers import seed_http_image_and_agent

from .serving_core_support import DEFINITION


@pytest.fixture
def cluster(defaults):
    from agents import services as agent_services

    group = agent_services.ensure_default_scaling_group()
    image, agent = seed_http_image_and_agent(group)
    return group, image, agent


@pytest.fixture
def host(db, storage_proxy):
    from vfolders import services

    return services.ensure_default_storage_host()


@pytest.fixture
def write_file():
    def write(user, folder, path: str, text: str | bytes):
        from vfolders import services

        data = text.encode() if isinstance(text, str) else text
        directory, _, name = path.rpartition("/")
        if directory:
            services.make_dirs(user, str(folder.pk), [directory], parents=True, exist_ok=True)
        services.upload_file_object(user, str(folder.pk), directory or ".", name, io.BytesIO(data), len(data))

    return write


@pytest.fixture
def make_model(host, write_file):
    """``make_model(user, name="mymodel", definition=DEFINITION, path="model-definition.yaml")``."""
    def make(user, name="mymodel", definition: str | None = DEFINITION, path="model-definition.yaml",
             usage_mode="model"):
        from vfolders import services

        folder = services.create_folder(user, name=name, usage_mode=usage_mode)
        if definition is not None:
            write_file(user, folder, path, definition)
        return folder

    return make


@pytest.fixture
def model(owner, make_model):
    return make_model(owner)


BODY = {
    "service_name": "echo-svc", "replicas": 1, "image": "bai-test/http:1.0", "arch": "x86_64",
    "group": "default", "domain": "default", "cluster_size": 1, "cluster_mode": "single-node",
    "tag": None, "startup_command": None, "bootstrap_script": None, "owner_access_key": None,
    "open_to_public": False, "runtime_variant": "custom",
    "config": {"model": None, "model_version": 1, "model_mount_destination": "/models",
               "model_definition_path": None, "environ": {}, "scaling_group": "default",
               "resources": {"cpu": "1", "mem": "512m"}, "resource_opts": {}, "extra_mounts": {}},
}


@pytest.fixture
def body(model):
    """``body(**overrides)``: the create body of client 24.09 for ``model`` (``config.<key>`` for config)."""
    def make(**overrides):
        data = copy.deepcopy(BODY)
        data["config"]["model"] = str(model.pk)
        for key, value in overrides.items():
            if key.startswith("config."):
                data["config"][key[7:]] = value
            else:
                data[key] = value
        return data

    return make


# --- driving replicas: the real scheduler, agent reports at the agent protocol, worker health reports ---

@pytest.fixture(autouse=True)
def _fresh_push_memory():
    from serving.services import reconcile

    reconcile.forget_pushes()
    yield
    reconcile.forget_pushes()


@pytest.fixture
def agent_token(cluster):
    from agents import services as agent_services

    return agent_services.issue_token("nodes", scaling_group=cluster[0])[0]


class Replicas:
    """What the cluster does with replica sessions: the scheduler places them, the agent reports
    their kernels (``sessions.agent_sync.sync``, as ``agents.daemon`` would), the app-proxy worker
    reports route health (``appproxy.services.inference.record_route_health``, as the worker's
    heartbeat would)."""

    def __init__(self, token):
        self.token = token
        self.next_port = 30000

    def schedule(self):
        from sessions import scheduler

        return scheduler.run_pass("default")

    def report(self, session, status="RUNNING", *, reason=None, host_port=None):
        from sessions import agent_sync

        kernels = []
        for kernel in session.kernels.all():
            ports = []
            for entry in kernel.service_ports or []:
                self.next_port += 1
                published = [self.next_port + i for i, _ in enumerate(entry["container_ports"])]
                if host_port is not None and entry["name"] == "inference":
                    published = [host_port]
                ports.append({**entry, "host_ports": published})
            kernels.append({"kernel_id": str(kernel.pk), "session_id": str(session.pk), "status": status,
                            "container_id": f"c-{kernel.pk.hex[:12]}", "host": "127.0.0.1", "service_ports": ports,
                            "exit_code": None if status == "RUNNING" else 1, "reason": reason, "last_logs": None,
                            "stats": None})
        agent_sync.sync(self.token, {
            "agent_id": "node-1", "scaling_group": "default", "address": "127.0.0.1", "architecture": "x86_64",
            "backend": "local", "capacity": {"cpu": "4", "mem": "8589934592"},
            "slot_types": {"cpu": "count", "mem": "bytes"}, "images": [], "kernels": kernels}, "127.0.0.1")
        session.refresh_from_db()
        return session

    def run_all(self, endpoint, status="RUNNING"):
        from serving.models import Routing

        self.schedule()
        for route in Routing.objects.filter(endpoint=endpoint, status="provisioning").select_related("session"):
            self.report(route.session, status)

    def health(self, worker, endpoint, statuses: dict):
        from django.utils import timezone

        from appproxy.models import Circuit
        from appproxy.services import inference

        circuit = Circuit.objects.get(endpoint_id=endpoint.pk)
        now = timezone.now().isoformat()
        inference.record_route_health(worker, {str(circuit.pk): {
            str(route_id): {"status": status, "changed_at": now, "checked_at": now,
                            "failures": 0 if status == "healthy" else 3,
                            "last_error": "" if status == "healthy" else "connection refused"}
            for route_id, status in statuses.items()}})


@pytest.fixture
def replicas(agent_token):
    return Replicas(agent_token)


@pytest.fixture
def proxy_worker(db):
    """An app-proxy worker (port mode) that inference circuits go to."""
    from django.utils import timezone

    from appproxy.models import Worker

    return Worker.objects.create(
        authority="w1", frontend_mode="port", advertised_host="127.0.0.1", api_endpoint="http://127.0.0.1:9",
        secret="s" * 40, protocols=["http", "tcp"], last_heartbeat=timezone.now(),
        port_range_start=40000, port_range_end=40009)


@pytest.fixture
def service(owner, cluster, model, body):
    """``service(replicas=1, **overrides)``: a created endpoint of ``owner``."""
    from serving.services import endpoints

    def make(replicas=1, **overrides):
        return endpoints.create_endpoint(owner, owner.main_keypair, body(replicas=replicas, **overrides))

    return make
