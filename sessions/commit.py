"""Commit a running Docker session to a new image (``POST /session/{s}/commit`` and ``/imagify``).

``start_commit`` checks everything first and starts nothing on a refusal: the
caller must see the session (owner, the domain's admins, superadmins; others get
404), the session must be RUNNING with its main kernel on a live **Docker** agent
(a local-process agent cannot snapshot anything: 403), no other commit of it may be
unfinished (409), and the session's domain must allow the image it will make (an
agent-local image: ``allowed_docker_registries`` empty or listing ``local``, and a
name ``allowed_images`` accepts; 403 otherwise, so the image is usable once made).
Then a background task (``backendai.bgtasks``, name ``session_commit``) does the work.

The new image is named for the session's owner, always agent-local (no registry
host: nothing is pushed, so no name may claim a registry)::

    <source repository without registry>-commit:<owner id, 8 hex>-<UTC yyyymmdd-HHMMSS>-<4 random hex>
    <image_name>:<the same tag>                                        (imagify, image_name given)

and labelled ``ai.backend.customized-image.owner=user:<owner id>`` (what
``agents.services.customized_images`` lists and what session creation checks: only
its owner, or a superadmin, starts sessions from it), ``...customized-image.name``,
``...customized-image.source`` (the session's image) and ``...customized-image.session``.

``commit_task`` (the task's body) opens a ``commit`` stream into the main kernel
(``sessions.kernel_io.KernelIO``; the agent's side is ``agents/daemon/commit.py``),
turns its progress lines into task progress, and on its result records the image in
the catalogue with ``agents.services.record_committed_image`` (the same fields the
agent's sync reports for it, held by that agent), so the owner can start a session
from it at once.  ``commit_status`` answers ``GET /session/{s}/commit``.
"""
from __future__ import annotations

import json
import logging
import re
import secrets
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from django.db import transaction
from django.utils import timezone

from agents import services as agent_services
from agents.models import Agent, AgentStatus, Image
from backendai import bgtasks
from backendai.actions import audited
from backendai.api import errors
from backendai.models import BackgroundTask
from sessions import services
from sessions.kernel_io import KernelIO, KernelIOError
from sessions.lifecycle import RUNNING_SESSION, KernelStatus
from sessions.models import Kernel, Session
from sessions.streams import StreamTarget, http_target

log = logging.getLogger(__name__)

TASK_NAME = "session_commit"
TASK_PATH = "sessions.commit.commit_task"
SUFFIX = "-commit"
OWNER_LABEL = agent_services.CUSTOMIZED_OWNER_LABEL
NAME_LABEL = "ai.backend.customized-image.name"
SOURCE_LABEL = "ai.backend.customized-image.source"
SESSION_LABEL = "ai.backend.customized-image.session"
DOCKER_BACKEND = "docker"
#: Docker's repository grammar, lowercase, without a registry host (``agents/daemon/commit.py`` checks it too).
REPOSITORY_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
MAX_REPOSITORY = 200
MAX_IMAGE_NAME = 100
#: Seconds without a line from the agent before the task gives up (it sends one every few seconds).
SILENT_FOR = 120.0
#: The most bytes of the agent's answer (progress lines and the result).
ANSWER_LIMIT = 1 << 20
#: Steps reported: the agent's three, then the catalogue.
TOTAL_STEPS = 4


class CommitConflict(errors.BackendAIError):
    status_code = 409
    error_type = "session-commit-conflict"
    error_title = "The session is being committed already."


def _tasks_of(session: Session):
    return BackgroundTask.objects.filter(name=TASK_NAME, kwargs__session_id=str(session.pk))


def validate_image_name(value: Any) -> str:
    """The ``image_name`` of ``imagify``: a lowercase repository path, no registry host, no tag."""
    if not isinstance(value, str) or not value.strip():
        raise errors.InvalidAPIParameters("image_name: is required")
    value = value.strip()
    if len(value) > MAX_IMAGE_NAME or not REPOSITORY_RE.fullmatch(value):
        raise errors.InvalidAPIParameters(
            f"image_name: at most {MAX_IMAGE_NAME} characters, a lowercase image repository name (letters, digits "
            "and '.', '_', '-' between them, parts separated by '/'), without a registry host or a tag")
    return value


def target_name(session: Session, image_name: str | None = None, now=None) -> tuple[str, str]:
    """``(repository, tag)`` of the image a commit of ``session`` makes (see the module's docstring)."""
    now = now or timezone.now()
    if image_name is None:
        _, repository, _ = agent_services.split_image_name(session.image)
        repository = repository.lower() + SUFFIX
    else:
        repository = image_name
    if len(repository) > MAX_REPOSITORY or not REPOSITORY_RE.fullmatch(repository):
        raise errors.InvalidAPIParameters(f"The image {session.image!r} gives no usable repository name for a commit")
    tag = f"{session.user_id.hex[:8]}-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
    return repository, tag


def _main_kernel(session: Session) -> Kernel | None:
    return (session.kernels.filter(cluster_role="main").select_related("agent").first()
            or session.kernels.select_related("agent").first())


def main_kernel_backend(session: Session) -> str | None:
    """The backend of the agent running ``session``'s main kernel (None before it is placed): only
    ``docker`` can be committed; the session page says so instead of offering a commit that is refused."""
    kernel = _main_kernel(session)
    return kernel.agent.backend if kernel is not None and kernel.agent is not None else None


@audited("session", "commit", "name")
def start_commit(actor, actor_keypair, name: str, owner_access_key: str | None = None,
                 image_name: Any = None) -> tuple[str, str]:
    """Check and start a commit of the session ``name``; ``(task id, new image name)``."""
    if image_name is not None:
        image_name = validate_image_name(image_name)
    session = services.get_session(actor, actor_keypair, name, owner_access_key)
    if session.status not in RUNNING_SESSION:
        raise errors.GenericForbidden(f"Session {session.name} is {session.status}: only a RUNNING session "
                                      "can be committed")
    kernel = _main_kernel(session)
    if kernel is not None and kernel.agent is not None and kernel.agent.backend != DOCKER_BACKEND:
        raise errors.GenericForbidden(f"Session {session.name} runs on agent {kernel.agent_id} ({kernel.agent.backend} "
                                      "backend): only sessions in Docker containers can be committed")
    target = http_target(actor, actor_keypair, str(session.pk), owner_access_key)
    repository, tag = target_name(session, image_name)
    image = f"{repository}:{tag}"
    try:
        agent_services.check_image_allowed(Image(name=image, registry_name=""), session.domain_id)
    except errors.BackendAIError as exc:
        raise errors.GenericForbidden(f"A committed image is agent-local and the domain would not let it be used: "
                                      f"{exc.msg}") from None
    labels = {OWNER_LABEL: f"user:{session.user_id}", NAME_LABEL: image_name or repository,
              SOURCE_LABEL: session.image, SESSION_LABEL: str(session.pk)}
    with transaction.atomic():
        Session.objects.select_for_update().filter(pk=session.pk).first()  # one commit start at a time
        running = _tasks_of(session).exclude(status__in=bgtasks.FINISHED).first()
        if running is not None:
            raise CommitConflict(f"Session {session.name} is being committed already (task {running.pk})",
                                 data={"task_id": str(running.pk)})
        task_id = bgtasks.start(TASK_NAME, TASK_PATH, owner=actor.pk, session_id=target.session_id,
                                kernel_id=target.kernel_id, agent_id=target.agent_id, repository=repository,
                                tag=tag, labels=labels)
    log.info("commit of session %s (%s, kernel %s on agent %s) to %s started by %s (task %s)", session.pk,
             session.name, target.kernel_id, target.agent_id, image, actor.pk, task_id)
    return task_id, image


def commit_status(actor, actor_keypair, name: str, owner_access_key: str | None = None) -> dict:
    """``GET /session/{s}/commit``: the last commit of the session.

    ``status`` is ``clean`` (never committed), ``ongoing`` (queued or running),
    ``done``, ``failed`` or ``cancelled``; ``kernel`` is the main kernel's id."""
    session = services.get_session(actor, actor_keypair, name, owner_access_key)
    kernel = _main_kernel(session)
    task = _tasks_of(session).order_by("-created_at").first()
    body: dict[str, Any] = {"status": "clean", "kernel": str(kernel.pk) if kernel else None,
                            "session_id": str(session.pk)}
    if task is None:
        return body
    kwargs = task.kwargs or {}
    finished = task.status in bgtasks.FINISHED
    body.update(status=task.status if finished else "ongoing", task_id=str(task.pk),
                image=f"{kwargs.get('repository')}:{kwargs.get('tag')}", message=task.message,
                current_progress=task.current_progress, total_progress=task.total_progress,
                started_at=task.created_at.isoformat(),
                finished_at=task.finished_at.isoformat() if task.finished_at else None)
    return body


def last_commit(session: Session) -> BackgroundTask | None:
    """The session's newest commit task (the web UI's panel)."""
    return _tasks_of(session).order_by("-created_at").first()


# --- the background task ------------------------------------------------------------------------

async def drive_commit(target: StreamTarget, fields: dict, report) -> dict:
    """Run the agent's ``commit`` stream to its end: ``await report(current, total, message)`` for each
    progress line; the result line (a dict).  Raises ``bgtasks.TaskFailed``."""
    io = KernelIO(target, "commit", fields)
    buffer, size, result = b"", 0, None
    try:
        await io.open()
        while (chunk := await io.read(timeout=SILENT_FOR)) is not None:
            size += len(chunk)
            if size > ANSWER_LIMIT:
                raise bgtasks.TaskFailed("The agent's answer to the commit is too large")
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                try:
                    message = json.loads(line)
                except ValueError:
                    raise bgtasks.TaskFailed("The agent answered the commit with something that is not JSON") from None
                kind = message.get("type") if isinstance(message, dict) else None
                if kind == "progress":
                    await report(message.get("current") or 0, message.get("total") or 0,
                                 str(message.get("message") or "")[:500])
                elif kind == "result":
                    result = message
                elif kind == "error":
                    raise bgtasks.TaskFailed(f"The commit failed on agent {target.agent_id}: "
                                             f"{str(message.get('message') or message.get('reason'))[:1000]}")
    except KernelIOError as exc:
        raise bgtasks.TaskFailed(f"The commit failed on agent {target.agent_id}: {exc.message}") from None
    finally:
        await io.close()
    if result is None or not isinstance(result.get("image"), str):
        raise bgtasks.TaskFailed(f"Agent {target.agent_id} ended the commit without a result")
    return result


@bgtasks.background
def commit_task(progress: bgtasks.Progress, *, session_id: str, kernel_id: str, agent_id: str, repository: str,
                tag: str, labels: dict) -> str:
    """The ``session_commit`` background task (see the module's docstring)."""
    session = Session.objects.filter(pk=session_id).first()
    kernel = Kernel.objects.filter(pk=kernel_id).select_related("agent").first()
    if session is None or session.status not in RUNNING_SESSION:
        raise bgtasks.TaskFailed(f"Session {session.name if session else session_id} is not running any more")
    if kernel is None or kernel.status != KernelStatus.RUNNING or kernel.agent_id != agent_id:
        raise bgtasks.TaskFailed(f"The main kernel of session {session.name} is not running any more")
    if kernel.agent.status != AgentStatus.ALIVE:
        raise bgtasks.TaskFailed(f"Agent {agent_id} is {kernel.agent.status}")
    image = f"{repository}:{tag}"
    progress.update(0, total=TOTAL_STEPS, message=f"asking agent {agent_id} to commit kernel {kernel_id}")
    update = sync_to_async(progress.update)

    async def report(current, total, message):
        await update(min(float(current), TOTAL_STEPS - 1), total=TOTAL_STEPS, message=message)

    target = StreamTarget(session_id, session.name, kernel_id, agent_id)
    result = async_to_sync(drive_commit)(target, {"repository": repository, "tag": tag, "labels": labels}, report)
    if result["image"] != image:
        raise bgtasks.TaskFailed(f"Agent {agent_id} committed {result['image']!r}, not {image!r}")
    progress.update(TOTAL_STEPS - 1, total=TOTAL_STEPS, message=f"registering {image} in the image catalogue")
    recorded = agent_services.record_committed_image(Agent.objects.get(pk=agent_id), {
        "name": image, "digest": str(result.get("digest") or ""), "size": result.get("size") or 0,
        "architecture": result.get("architecture"), "labels": result.get("labels") or {}})
    progress.update(TOTAL_STEPS, total=TOTAL_STEPS, message=f"committed to {image}")
    log.info("session %s (kernel %s on agent %s) committed to %s (image %s)", session_id, kernel_id, agent_id,
             image, recorded.pk)
    return f"Session {session.name} committed to the image {image}"
