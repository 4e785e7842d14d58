"""The agent protocol, shared by the manager and the agent daemon (``docs/agent-protocol.md``).

Everything both sides must agree on lives here and nowhere else:

* the desired kernel the manager sends (:class:`KernelSpec`, whose wire keys are
  :data:`KERNEL_SPEC_FIELDS`) and the kernel state the agent reports
  (:class:`KernelState`, :class:`ReportedStatus`), in a sync or as an event;
* the keys of the manager's sync answer (:data:`ANSWER_KEYS`);
* the link messages (:class:`LinkMessage`) and the binary data frames of the
  byte streams multiplexed over the link (:func:`encode_data`, :func:`decode_data`,
  the flow-control window).

This module imports no Django (the daemon imports it).  Slot amounts travel as
decimal strings; they are parsed into :class:`~decimal.Decimal` here and
formatted back with :func:`format_count`.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any, Mapping

__all__ = [
    "ACK_EVERY", "ANSWER_KEYS", "CHUNK", "DEFAULT_WINDOW", "KERNEL_SPEC_FIELDS", "LOG_LIMIT", "MAX_STREAMS",
    "REASON_LIMIT", "STREAM_KINDS", "KernelSpec", "KernelState", "LinkMessage", "Mount", "RegistryAuth",
    "ReportedStatus", "SSHD_PORT", "SSHD_SERVICE", "ServicePort", "SpecError", "SshKeypair", "ack_threshold",
    "decode_data", "desired_kernel", "encode_data",
    "exit_reason", "format_count", "normalize_architecture", "tail_text", "utcnow_iso", "valid_stream_id",
]

#: The most of a kernel's output reported as ``last_logs`` (bytes of UTF-8).
LOG_LIMIT = 64 * 1024
#: The manager stores at most this many characters of ``reason``.
REASON_LIMIT = 64

_UUIDISH = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,127}")


class ReportedStatus(str, Enum):
    """Kernel statuses as the agent reports them (the manager maps each to its own kernel status)."""

    PULLING = "PULLING"
    PREPARING = "PREPARING"
    RUNNING = "RUNNING"
    TERMINATED = "TERMINATED"
    ERROR = "ERROR"

    @property
    def final(self) -> bool:
        return self in (ReportedStatus.TERMINATED, ReportedStatus.ERROR)


class SpecError(ValueError):
    """A desired kernel from the manager that cannot be understood."""


def utcnow_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def format_count(value: Decimal | int | float) -> str:
    """Format a count the way slots travel: at most 3 decimals, no trailing zeros."""
    amount = Decimal(str(value)).quantize(Decimal("0.001"))
    text = format(amount, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def normalize_architecture(name: str | None) -> str:
    """Docker/Go architecture names to the ones Backend.AI uses (``x86_64``, ``aarch64``)."""
    name = (name or "").lower()
    return {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "arm64/v8": "aarch64"}.get(name, name or "x86_64")


def tail_text(data: bytes | str | None, limit: int = LOG_LIMIT) -> str | None:
    """The last ``limit`` bytes of ``data`` as text (invalid UTF-8 replaced)."""
    if data is None:
        return None
    raw = data.encode("utf-8", "replace") if isinstance(data, str) else bytes(data)
    text = raw[-limit:].decode("utf-8", "replace")
    encoded = text.encode("utf-8")
    if len(encoded) > limit:  # replacement characters can grow the text
        text = encoded[-limit:].decode("utf-8", "ignore")
    return text


def _decimal(value: Any, what: str) -> Decimal:
    try:
        result = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise SpecError(f"{what}: not a number: {value!r}") from None
    if result.is_nan() or result < 0:
        raise SpecError(f"{what}: invalid amount: {value!r}")
    return result


@dataclass
class ServicePort:
    """A service a kernel exposes; ``host_ports`` are filled in by the agent."""

    name: str
    protocol: str
    container_ports: list[int]
    host_ports: list[int | None] = field(default_factory=list)

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> ServicePort:
        try:
            name = str(data["name"])
            protocol = str(data.get("protocol") or "tcp")
            ports = [int(p) for p in data.get("container_ports") or []]
            host_ports = [None if p is None else int(p) for p in data.get("host_ports") or []]
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecError(f"bad service port {data!r}: {exc}") from None
        if not name or not ports or any(not 0 < p < 65536 for p in ports):
            raise SpecError(f"bad service port {data!r}")
        return cls(name=name, protocol=protocol, container_ports=ports, host_ports=host_ports)

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "protocol": self.protocol, "container_ports": list(self.container_ports),
                "host_ports": list(self.host_ports)}


@dataclass(frozen=True)
class Mount:
    host_path: str
    container_path: str
    mode: str = "rw"

    @property
    def read_only(self) -> bool:
        return self.mode == "ro"


#: The SSH server of an image listens on this container port (Backend.AI's reserved sshd port).
SSHD_PORT = 2200
#: The service port name of that server (``backend.ai app <s> sshd``, ``session ssh``).
SSHD_SERVICE = "sshd"
_SSH_KEY_LIMIT = 16 * 1024


@dataclass(frozen=True)
class SshKeypair:
    """The session's SSH keypair (OpenSSH text): the agent writes the private key into the
    kernel's work directory as ``id_container`` and the public one into ``.ssh/authorized_keys``.
    Its ``repr`` leaves the private key out (specs may be logged)."""

    public_key: str
    private_key: str = field(repr=False)

    @classmethod
    def from_wire(cls, data: Any) -> SshKeypair | None:
        """``{"public_key", "private_key"}`` or ``None``; raises :class:`SpecError` for anything else."""
        if data is None:
            return None
        if not isinstance(data, Mapping):
            raise SpecError("ssh_keypair is not an object")
        public, private = data.get("public_key"), data.get("private_key")
        for name, value in (("public_key", public), ("private_key", private)):
            if not isinstance(value, str) or not value.strip() or len(value) > _SSH_KEY_LIMIT:
                raise SpecError(f"ssh_keypair.{name} must be a non-empty string of at most {_SSH_KEY_LIMIT} characters")
        if "\n" in public.strip() or not public.startswith(("ssh-", "ecdsa-")):
            raise SpecError("ssh_keypair.public_key is not one OpenSSH public key line")
        if "PRIVATE KEY-----" not in private:
            raise SpecError("ssh_keypair.private_key is not a PEM/OpenSSH private key")
        return cls(public_key=public.strip() + "\n", private_key=private.strip() + "\n")

    def to_wire(self) -> dict[str, str]:
        return {"public_key": self.public_key, "private_key": self.private_key}


@dataclass(frozen=True)
class RegistryAuth:
    url: str | None
    username: str | None
    password: str | None


@dataclass
class KernelSpec:
    """One entry of ``desired`` in the manager's sync answer."""

    kernel_id: str
    session_id: str | None
    image: str
    session_name: str | None = None
    session_type: str = "interactive"
    cluster_role: str = "main"
    cluster_idx: int = 1
    cluster_hostname: str | None = None
    architecture: str | None = None
    registry: RegistryAuth | None = None
    slots: dict[str, Decimal] = field(default_factory=dict)
    resource_opts: dict[str, Any] = field(default_factory=dict)
    environ: dict[str, str] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    service_ports: list[ServicePort] = field(default_factory=list)
    startup_command: str | None = None
    bootstrap_script: str | None = None
    batch_timeout: float | None = None
    #: Only while the kernel is being created (the manager leaves it out once the kernel runs).
    ssh_keypair: SshKeypair | None = field(default=None, repr=False)

    @property
    def sshd(self) -> bool:
        """Whether the image carries an SSH server to start on :data:`SSHD_PORT` (the manager
        gave the kernel the ``sshd`` service port on it)."""
        return any(p.name == SSHD_SERVICE and SSHD_PORT in p.container_ports for p in self.service_ports)

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> KernelSpec:
        """Parse a desired kernel; raises :class:`SpecError` (with the kernel id when known)."""
        if not isinstance(data, Mapping):
            raise SpecError(f"desired kernel is not an object: {data!r}")
        kernel_id = str(data.get("kernel_id") or "")
        if not _UUIDISH.fullmatch(kernel_id):
            raise SpecError(f"bad kernel_id {data.get('kernel_id')!r}")
        image = data.get("image")
        if not image or not isinstance(image, str):
            raise SpecError("image is missing")
        slots = {str(k): _decimal(v, f"slot {k}") for k, v in (data.get("slots") or {}).items()}
        registry = data.get("registry")
        auth = None
        if isinstance(registry, Mapping):
            auth = RegistryAuth(url=registry.get("url"), username=registry.get("username"),
                                password=registry.get("password"))
        mounts = []
        for item in data.get("mounts") or []:
            try:
                mode = str(item.get("mode") or "rw")
                mounts.append(Mount(host_path=str(item["host_path"]), container_path=str(item["container_path"]),
                                    mode="ro" if mode == "ro" else "rw"))
            except (KeyError, TypeError, AttributeError):
                raise SpecError(f"bad mount {item!r}") from None
        timeout = data.get("batch_timeout")
        if timeout is not None:
            timeout = float(_decimal(timeout, "batch_timeout"))
            if timeout <= 0 or math.isinf(timeout):
                timeout = None
        try:
            cluster_idx = int(data.get("cluster_idx") or 1)
        except (TypeError, ValueError):
            raise SpecError(f"bad cluster_idx {data.get('cluster_idx')!r}") from None
        return cls(
            kernel_id=kernel_id,
            session_id=str(data["session_id"]) if data.get("session_id") else None,
            image=image,
            session_name=data.get("session_name"),
            session_type=str(data.get("session_type") or "interactive"),
            cluster_role=str(data.get("cluster_role") or "main"),
            cluster_idx=cluster_idx,
            cluster_hostname=data.get("cluster_hostname") or None,
            architecture=data.get("architecture"),
            registry=auth,
            slots=slots,
            resource_opts=dict(data.get("resource_opts") or {}),
            environ={str(k): str(v) for k, v in (data.get("environ") or {}).items()},
            mounts=mounts,
            service_ports=[ServicePort.from_wire(p) for p in data.get("service_ports") or []],
            startup_command=data.get("startup_command") or None,
            bootstrap_script=data.get("bootstrap_script") or None,
            batch_timeout=timeout,
            ssh_keypair=SshKeypair.from_wire(data.get("ssh_keypair")),
        )

    # -- convenient views on the slots --------------------------------------------------
    @property
    def cpu(self) -> Decimal:
        return self.slots.get("cpu", Decimal(0))

    @property
    def mem(self) -> int:
        mem = self.slots.get("mem", Decimal(0))
        return 0 if mem.is_infinite() else int(mem)

    @property
    def shmem(self) -> int:
        value = self.resource_opts.get("shmem")
        if value in (None, ""):
            return 0
        return int(_decimal(value, "resource_opts.shmem"))

    @property
    def cuda_devices(self) -> int:
        amount = self.slots.get("cuda.device", Decimal(0))
        if amount != amount.to_integral_value():
            raise SpecError(f"cuda.device must be a whole number, got {amount}")
        return int(amount)

    @property
    def is_batch(self) -> bool:
        return self.session_type == "batch"

    def environment(self) -> dict[str, str]:
        """The manager's environment plus the ``BACKENDAI_*`` variables every kernel gets."""
        env = dict(self.environ)
        env.update({
            "BACKENDAI_KERNEL_ID": self.kernel_id,
            "BACKENDAI_SESSION_ID": self.session_id or "",
            "BACKENDAI_SESSION_NAME": self.session_name or "",
            "BACKENDAI_SESSION_TYPE": self.session_type,
            "BACKENDAI_CLUSTER_ROLE": self.cluster_role,
            "BACKENDAI_CLUSTER_IDX": str(self.cluster_idx),
            "BACKENDAI_CLUSTER_HOST": self.cluster_hostname or "",
        })
        return env


def exit_reason(session_type: str | None, exit_code: int | None) -> str:
    """Why a kernel ended on its own: batch tasks finish or fail, others self-terminate."""
    if session_type == "batch":
        return "task-finished" if exit_code == 0 else "task-failed"
    return "self-terminated"


@dataclass
class KernelState:
    """A kernel as the agent has it: one entry of ``kernels`` in a sync, or one event."""

    kernel_id: str
    session_id: str | None
    status: ReportedStatus
    container_id: str | None = None
    host: str | None = None
    service_ports: list[ServicePort] = field(default_factory=list)
    exit_code: int | None = None
    reason: str | None = None
    last_logs: str | None = None
    stats: dict[str, str] | None = None
    restart_id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The sync entry (see the protocol's ``kernels`` list); ``restart_id`` only once a restart was applied."""
        entry = {
            "kernel_id": self.kernel_id,
            "session_id": self.session_id,
            "status": self.status.value,
            "container_id": self.container_id,
            "host": self.host,
            "service_ports": [p.to_wire() for p in self.service_ports],
            "exit_code": self.exit_code,
            "reason": self.reason[:REASON_LIMIT] if self.reason else self.reason,
            "last_logs": self.last_logs,
            "stats": self.stats,
        }
        if self.restart_id is not None:
            entry["restart_id"] = self.restart_id
        return entry

    def to_event(self, timestamp: str | None = None) -> dict[str, Any]:
        """The same entry as an event (no stats, with a timestamp)."""
        entry = self.to_wire()
        entry.pop("stats")
        entry["timestamp"] = timestamp or utcnow_iso()
        return entry


#: The wire keys of one desired kernel, in the order the manager writes them.
KERNEL_SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(KernelSpec))


def desired_kernel(**fields: Any) -> dict[str, Any]:
    """One entry of ``desired`` as the manager sends it: exactly the keys of
    :data:`KERNEL_SPEC_FIELDS` (a missing or unknown key is a programming error)."""
    missing = set(KERNEL_SPEC_FIELDS) - set(fields)
    unknown = set(fields) - set(KERNEL_SPEC_FIELDS)
    if missing or unknown:
        raise TypeError(f"desired kernel: missing {sorted(missing)}, unknown {sorted(unknown)}")
    return {name: fields[name] for name in KERNEL_SPEC_FIELDS}


#: What the manager's sync answer asks of the agent (the answer also carries
#: ``agent_id``, ``status``, ``schedulable``, ``sync_interval``, ``fingerprint`` and ``max_wait``).
ANSWER_KEYS = ("desired", "stop", "restart", "want_logs")


# --- the link and its byte streams -------------------------------------------------------------
#
# Text frames on the link are JSON objects whose ``type`` is a :class:`LinkMessage`;
# binary frames carry stream data: one byte ``n``, the stream id (``n`` ASCII
# bytes), then the payload.  Flow control is a window of data frames: a side
# sends at most ``window`` data frames of a stream that the other side has not
# acknowledged yet (``stream.ack`` with ``n`` frames consumed), so every buffer on
# the way (the link, the manager's channel layer, the writer queues) stays bounded.

class LinkMessage(str, Enum):
    """The ``type`` of a JSON message on the agent link."""

    PING = "ping"
    PONG = "pong"
    POKE = "poke"  # manager -> agent: sync now
    STREAM_OPEN = "stream.open"
    STREAM_OPENED = "stream.opened"
    STREAM_RESIZE = "stream.resize"
    STREAM_ACK = "stream.ack"
    STREAM_CLOSE = "stream.close"
    STREAM_ERROR = "stream.error"
    STREAM_EOF = "stream.eof"  # manager -> agent: no more data on this stream (the endpoint may answer, then close)

    def __str__(self) -> str:
        return self.value


#: What a ``stream.open`` may ask for: a terminal in the kernel, a TCP relay to one of its ports, and the
#: request/response kinds of work inside a session (``docs/agent-protocol.md``): ``execute`` (a run of
#: the in-kernel code runner), ``files`` (a directory listing), ``download`` (a tar of paths), ``upload``
#: (one file's bytes, then ``stream.eof``) and ``commit`` (a snapshot of the kernel into an image).
STREAM_KINDS = ("pty", "tcp", "execute", "files", "download", "upload", "commit")
#: The most bytes in one data frame.
CHUNK = 32 * 1024
#: Data frames a side may have in flight per stream when ``stream.open`` names no ``window``.
DEFAULT_WINDOW = 16
#: Acknowledge after consuming this many frames (a quarter of the default window).
ACK_EVERY = 4
#: Streams one agent serves at once.
MAX_STREAMS = 256
_MAX_STREAM_ID = 64


def ack_threshold(window: int) -> int:
    """How many consumed frames to acknowledge at once for a ``window`` (always below the window)."""
    return max(1, min(ACK_EVERY, window // 2))


def valid_stream_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_STREAM_ID and value.isascii() and value.isprintable()


def encode_data(stream_id: str, payload: bytes) -> bytes:
    """A binary data frame: ``len(id)`` as one byte, the id, the payload."""
    raw = stream_id.encode("ascii")
    return bytes((len(raw),)) + raw + payload


def decode_data(frame: bytes) -> tuple[str, bytes]:
    """``(stream id, payload)`` of a binary data frame; raises ``ValueError`` when malformed."""
    if not frame:
        raise ValueError("empty data frame")
    size = frame[0]
    if size == 0 or len(frame) < 1 + size:
        raise ValueError("truncated data frame")
    return frame[1:1 + size].decode("ascii"), bytes(frame[1 + size:])
