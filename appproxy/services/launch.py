"""Opening an app for a user (``start_service``), and where the web UI's Open button may lead."""
from __future__ import annotations

import logging

from django.db import IntegrityError, transaction

from appproxy import tokens
from appproxy.models import Circuit, FrontendMode, Worker, WorkerStatus
from appproxy.services.circuits import create_circuit, main_kernel, normalize_ips, service_target, update_circuit
from appproxy.services.exceptions import SessionNotRunning
from appproxy.services.placement import pick_worker
from appproxy.services.setup_links import issue_setup
from backendai.actions import audited
from backendai.api import errors
from sessions.lifecycle import RUNNING_SESSION
from sessions.models import Session

log = logging.getLogger(__name__)


# Sessions an app can be opened in.
SERVICE_READY = RUNNING_SESSION


@audited("app", "start", "session")
def start_service(user, session: Session, app_name: str, *, port: int | None = None, envs: dict | None = None,
                  arguments: dict | None = None, open_to_public: bool | None = None, allowed_client_ips=None,
                  redirect: str = "/") -> dict:
    """Open ``app_name`` of ``session`` for ``user`` (its owner or an admin who may see it):
    reuse the session's circuit for the app or create one, and return
    ``{"token", "wsproxy_addr", "url", "circuit_id", "app", "protocol", "app_url"}``
    where ``url`` is the one-time setup URL to send the browser to."""
    if session.status not in SERVICE_READY:
        raise SessionNotRunning(f"Session {session.name} is {session.status}; apps open only while it is RUNNING")
    problem = tokens.redirect_problem(redirect)
    if problem:
        raise errors.InvalidAPIParameters(f"redirect: {problem}")
    kernel = main_kernel(session)
    if kernel is None:
        raise SessionNotRunning(f"Session {session.name} has no kernel")
    protocol, host, target_port, container_port = service_target(kernel, app_name, port)
    ips = normalize_ips(allowed_client_ips) if allowed_client_ips is not None else None
    for attempt in range(3):
        try:
            with transaction.atomic():
                circuit = (Circuit.objects.select_for_update().select_related("worker")
                           .filter(session=session, app=app_name).first())
                if circuit is not None and circuit.worker.status != WorkerStatus.ALIVE:
                    log.info("circuit %s of session %s: worker %s is %s, opening %s elsewhere", circuit.pk,
                             session.pk, circuit.worker.authority, circuit.worker.status, app_name)
                    replacement = pick_worker(protocol, session.scaling_group_id, exclude=[circuit.worker_id])
                    circuit = update_circuit(circuit, worker=replacement)
                if circuit is None:
                    circuit = create_circuit(
                        session=session, app=app_name, protocol=protocol, target_host=host, target_port=target_port,
                        kernel=kernel, container_port=container_port, owner=session.user,
                        open_to_public=bool(open_to_public), allowed_client_ips=ips or [], envs=envs,
                        arguments=arguments)
                changes = {}
                if (circuit.target_host, circuit.target_port) != (host, target_port):
                    changes.update(target_host=host, target_port=target_port)
                if open_to_public is not None and circuit.open_to_public != open_to_public:
                    changes["open_to_public"] = open_to_public
                if ips is not None and list(circuit.allowed_client_ips or []) != ips:
                    changes["allowed_client_ips"] = ips
                if user.pk != circuit.owner_id and str(user.pk) not in (circuit.granted_users or []):
                    changes["granted_users"] = [*(circuit.granted_users or []), str(user.pk)]
                if changes:
                    circuit = update_circuit(circuit, **changes)
                circuit = Circuit.objects.select_related("worker").get(pk=circuit.pk)
            break
        except IntegrityError:
            if attempt == 2:
                raise
            log.info("start-service race on session %s app %s; retrying", session.pk, app_name)
    return issue_setup(circuit, user, redirect)


def form_targets() -> list[str]:
    """Where the web UI's Open button ends up: each alive worker's setup endpoint, which then
    redirects to the app (``host:*`` in port mode, ``*.domain[:port]`` in wildcard mode).  The
    session page lists them in its CSP ``form-action``: browsers check every redirect of a
    form submission against it."""
    targets = []
    for worker in Worker.objects.filter(status=WorkerStatus.ALIVE):
        targets.append(worker.api_endpoint)
        if worker.frontend_mode == FrontendMode.WILDCARD and worker.wildcard_domain:
            port = f":{worker.wildcard_port}" if worker.wildcard_port else ""
            targets.append(f"{worker.scheme}://*.{worker.wildcard_domain}{port}")
        elif worker.advertised_host:
            targets.append(f"{worker.scheme}://{worker.advertised_host}:*")
    return targets
