"""What the sessions web UI tests share (tests/sessions/test_web_ui.py, test_ui_sessions.py,
test_ui_launcher.py): the ``cr.example.com/stable/python:3.11`` image with one ALIVE agent to place
sessions on, and sessions enqueued, or placed and reported RUNNING, through the real enqueue,
scheduler and agent-sync code.  Import with ``from sessions_ui_support import ...``."""
from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from agents.models import Agent, Image
from sessions import agent_sync, scheduler
from sessions.enqueue import EnqueueRequest, enqueue
from sessions.models import Session

IMAGE = "cr.example.com/stable/python:3.11"
GIB = 2**30
IMAGE_RESOURCES = {"cpu": {"min": "1", "max": None}, "mem": {"min": str(256 * 2**20), "max": None}}


def seed_python_image_and_agent(group, resources=None, **image_fields) -> Image:
    """``IMAGE`` (at least 1 CPU and 256 MiB unless ``resources`` says otherwise) and an ALIVE agent
    ``node-1`` with 8 CPUs and 16 GiB in ``group``."""
    image = Image.objects.create(
        name=IMAGE, registry_name="cr.example.com", repository="stable/python", tag="3.11", architecture="x86_64",
        resources=resources or IMAGE_RESOURCES, **image_fields)
    Agent.objects.create(id="node-1", scaling_group=group, available_slots={"cpu": "8", "mem": str(16 * GIB)},
                         last_heartbeat=timezone.now())
    return image


def start(user, name, **fields) -> Session:
    """A session of ``IMAGE`` enqueued (not scheduled) for ``user`` with their main keypair."""
    request = EnqueueRequest(image=IMAGE, name=name, enqueue_only=True, **fields)
    return enqueue(user, user.main_keypair, request).session


def running(user, name, report=None, **fields) -> Session:
    """A session placed by the real scheduler and reported RUNNING by its agent (``report``: more keys
    of the kernel's report, e.g. ``stats`` or ``service_ports``)."""
    session = start(user, name, **fields)
    scheduler.run_pass("default")
    kernel = session.kernels.get()
    assert kernel.status == "SCHEDULED", (kernel.status, Session.objects.get(pk=session.pk).status_data)
    report = {"kernel_id": str(kernel.pk), "status": "RUNNING", **(report or {})}
    with transaction.atomic():  # as the agent's sync request runs it (a savepoint inside a test's transaction)
        agent_sync.apply_kernel_reports(kernel.agent, [report])
    return Session.objects.get(pk=session.pk)
