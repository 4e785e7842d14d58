"""Factories for the scheduler tests.

* ``make_group(name="sg", scheduler="fifo", **scheduler_opts)`` -> ScalingGroup.
* ``make_agent(group, agent_id, cpu=8, mem="16g", gpus=0, arch="x86_64", status="ALIVE",
  schedulable=True, addr=...)`` -> Agent (``gpus`` adds ``cuda.device``).
* ``make_session(user, group, cpu=1, mem="1g", gpus=0, age=0, priority=10, kernels=1,
  multi_node=False, session_type="interactive", status="PENDING", agent=None, **fields)``
  -> Session with its kernels; ``age`` is how many seconds ago it was created
  (older sessions first in FIFO), ``agent`` places a non-PENDING session's kernels.
* ``pass_(group)`` runs one pass and returns the PassResult.
"""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

GIB = 1024**3


@pytest.fixture
def gpu_slot(db):
    from backendai import services

    services.ensure_intrinsic_slot_types()
    services.register_slot_types({"cuda.device": "count"})


@pytest.fixture
def make_group(db, gpu_slot):
    from agents.models import ScalingGroup

    def make(name="sg", scheduler="fifo", **opts):
        return ScalingGroup.objects.create(name=name, scheduler=scheduler, scheduler_opts=opts)

    return make


def slots(cpu=1, mem="1g", gpus=0) -> dict:
    from backendai.slots import parse_binary_size

    out = {"cpu": str(cpu), "mem": str(int(parse_binary_size(mem)))}
    if gpus:
        out["cuda.device"] = str(gpus)
    return out


def _times(value: str, n: int) -> str:
    from decimal import Decimal

    return format((Decimal(value) * n).normalize(), "f")


@pytest.fixture
def make_agent(db):
    from agents.models import Agent

    def make(group, agent_id, cpu=8, mem="16g", gpus=0, arch="x86_64", status="ALIVE", schedulable=True,
             addr=None, **fields):
        return Agent.objects.create(
            id=agent_id, scaling_group=group, status=status, schedulable=schedulable, architecture=arch,
            available_slots=slots(cpu, mem, gpus), addr=addr or f"10.0.0.1:{6000 + len(agent_id)}",
            last_heartbeat=timezone.now(), **fields)

    return make


@pytest.fixture
def make_session(db):
    from sessions.models import Kernel, Session

    counter = {"n": 0}

    def make(user, group, cpu=1, mem="1g", gpus=0, age=0, priority=10, kernels=1, multi_node=False,
             session_type="interactive", status="PENDING", agent=None, kernel_status=None, arch="x86_64",
             **fields):
        counter["n"] += 1
        per_kernel = slots(cpu, mem, gpus)
        total = {k: _times(v, kernels) for k, v in per_kernel.items()}
        project = fields.pop("project", None) or user.projects.order_by("name").first()
        session = Session.objects.create(
            name=fields.pop("name", f"s{counter['n']}"), session_type=session_type, priority=priority,
            cluster_mode="multi-node" if multi_node else "single-node", cluster_size=kernels,
            scaling_group=group, domain_id=user.domain_id, project=project, user=user,
            access_key=fields.pop("access_key", user.main_keypair), image="python:3.12", architecture=arch,
            requested_slots=total, occupying_slots=total if status != "PENDING" else {}, status=status,
            status_changed=timezone.now() - timedelta(seconds=age),
            status_history=[{"status": "PENDING", "timestamp": timezone.now().isoformat()}],
            agent_ids=[agent.pk] if agent is not None else fields.pop("agent_ids", []), **fields,
        )
        Session.objects.filter(pk=session.pk).update(created_at=timezone.now() - timedelta(seconds=age))
        session.refresh_from_db()
        kstatus = kernel_status or ("PENDING" if status == "PENDING" else status)
        for i in range(kernels):
            role = "main" if i == 0 else "sub"
            Kernel.objects.create(
                session=session, cluster_role=role, cluster_idx=1 if i == 0 else i,
                cluster_hostname="main1" if i == 0 else f"sub{i}", image="python:3.12", architecture=arch,
                requested_slots=per_kernel, agent=agent, status=kstatus,
                status_history=[{"status": kstatus, "timestamp": timezone.now().isoformat()}],
            )
        return session

    return make


@pytest.fixture
def pass_():
    from sessions.scheduler import run_pass

    def run(group, **kw):
        return run_pass(getattr(group, "pk", group), **kw)

    return run
