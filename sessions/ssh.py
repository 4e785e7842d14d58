"""SSH into a session (issue 13, item 3): the session's keypair and its ``sshd`` service.

* **The keypair.**  Every session uses its owner keypair's SSH key
  (``Keypair.ssh_public_key`` / ``ssh_private_key``: the pair the server generated
  for the keypair, or the one the user uploaded through ``/auth/ssh-keypair``); a
  keypair without one gets a generated pair at enqueue (:func:`ensure_owner_key`).
  The manager hands it to the agent in the kernel's spec (``ssh_keypair``) only
  while the kernel is being created (:func:`kernel_ssh_keypair`); the agent writes
  the private key into the kernel's work directory as ``id_container`` (mode 600) and
  the public one into ``.ssh/authorized_keys``.  ``backend.ai session ssh`` downloads
  ``id_container`` and logs in as ``work`` with it.  No API listing shows the private key.
* **The server.**  An image labelled ``ai.backend.ssh`` (``dropbear``, the one server the
  agent starts) carries an SSH server: its sessions get the ``sshd`` TCP service port on the
  reserved container port 2200 (:func:`sshd_service_port`), which the agent starts the
  server on, and which ``backend.ai app <s> sshd`` tunnels to through the tcpproxy.
"""
from __future__ import annotations

import logging
from typing import Any

from accounts import services as account_services
from accounts.models import Keypair
from agents import protocol
from sessions.lifecycle import KernelStatus
from sessions.models import Kernel, Session

log = logging.getLogger(__name__)

#: The image label that says the image carries an SSH server (its value names which one).
SSH_LABEL = "ai.backend.ssh"
SSH_SERVERS = ("dropbear",)  # what the agent knows how to start (agents/daemon/backends/sshkeys.py)
#: The kernel statuses in which the agent may still create the kernel: the key travels only then.
KEY_TRAVELS_WHILE = frozenset({KernelStatus.PENDING, KernelStatus.SCHEDULED, KernelStatus.PREPARING,
                               KernelStatus.BUILDING, KernelStatus.PULLING})
SSH_USER = "work"


def image_ssh_server(image: Any) -> str | None:
    """The SSH server an image declares (``ai.backend.ssh``), or ``None``."""
    value = str((getattr(image, "labels", None) or {}).get(SSH_LABEL) or "").strip().lower()
    if not value:
        return None
    if value not in SSH_SERVERS:
        log.warning("image %s: unknown %s label %r (expected one of %s); no sshd service",
                    getattr(image, "name", image), SSH_LABEL, value, ", ".join(SSH_SERVERS))
        return None
    return value


def sshd_service_port(image: Any, ports: list[dict]) -> dict | None:
    """The ``sshd`` service port a session from ``image`` gets (``None``: the image has no
    SSH server, or already names a service ``sshd`` itself)."""
    if image_ssh_server(image) is None:
        return None
    if any(p.get("name") == protocol.SSHD_SERVICE or protocol.SSHD_PORT in (p.get("container_ports") or [])
           for p in ports):
        log.warning("image %s: a service is already named %r or uses port %d; the built-in sshd is left out",
                    getattr(image, "name", image), protocol.SSHD_SERVICE, protocol.SSHD_PORT)
        return None
    return {"name": protocol.SSHD_SERVICE, "protocol": "tcp", "container_ports": [protocol.SSHD_PORT]}


def ensure_owner_key(keypair: Keypair) -> None:
    """Give ``keypair`` a generated SSH pair when it has none (keypairs made before keys existed)."""
    if (keypair.ssh_public_key or "").strip() and (keypair.ssh_private_key or "").strip():
        return
    account_services.regenerate_ssh_keypair(keypair)
    log.info("keypair %s had no SSH key: generated one for its sessions", keypair.access_key)


def kernel_ssh_keypair(kernel: Kernel) -> dict[str, str] | None:
    """The ``ssh_keypair`` of a kernel's spec: its session owner keypair's pair while the
    kernel is being created, else ``None`` (a running kernel has its files already)."""
    if kernel.status not in KEY_TRAVELS_WHILE:
        return None
    keypair = kernel.session.access_key
    if keypair is None:
        return None
    public, private = (keypair.ssh_public_key or "").strip(), (keypair.ssh_private_key or "").strip()
    if not public or not private:
        return None
    return {"public_key": public + "\n", "private_key": private + "\n"}


def sshd_of(session: Session) -> dict | None:
    """The main kernel's ``sshd`` service port (with its host port once running), or ``None``."""
    kernel = session.kernels.filter(cluster_role="main").first() or session.kernels.first()
    for port in (kernel.service_ports if kernel else []) or []:
        if port.get("name") == protocol.SSHD_SERVICE:
            return {**port, "kernel_host": kernel.kernel_host, "kernel_role": kernel.cluster_role}
    return None


def direct_access_info(session: Session) -> dict[str, Any]:
    """``GET /session/{s}/direct-access-info``: where the session's SSH server listens on its
    agent (``{}`` for a session without one, as Backend.AI answers for non-system sessions)."""
    sshd = sshd_of(session)
    if sshd is None:
        return {}
    return {
        "kernel_role": "COMPUTE" if sshd["kernel_role"] in ("main", "sub") else sshd["kernel_role"],
        "session_type": session.session_type,
        "public_host": sshd.get("kernel_host") or None,
        "sshd_ports": [p for p in sshd.get("host_ports") or [] if p],
        "ssh_user": SSH_USER,
    }


def ssh_hint(session: Session) -> dict[str, str] | None:
    """What the session page shows for a session with an SSH server: the CLI commands."""
    if sshd_of(session) is None:
        return None
    name = session.name
    return {
        "ssh": f"backend.ai session ssh {name}",
        "command": f"backend.ai session ssh {name} -- echo hi",
        "scp_up": f"backend.ai session scp {name} ./local.txt {SSH_USER}@localhost:remote.txt",
        "scp_down": f"backend.ai session scp {name} {SSH_USER}@localhost:remote.txt ./local.txt",
        "tunnel": f"backend.ai app {name} sshd -b 127.0.0.1:9922",
        "user": SSH_USER,
    }


__all__ = ["KEY_TRAVELS_WHILE", "SSH_LABEL", "SSH_SERVERS", "SSH_USER", "direct_access_info", "ensure_owner_key",
           "image_ssh_server", "kernel_ssh_keypair", "ssh_hint", "sshd_of", "sshd_service_port"]
