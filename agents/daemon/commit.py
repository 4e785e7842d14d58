"""The ``commit`` stream kind: snapshot a running kernel into a new image on this node.

The manager opens a stream of kind ``commit`` (``docs/agent-protocol.md``,
"Streams over the link") with these fields in the open frame:

* ``repository``: the new image's repository, a Docker repository path without a
  registry host (lowercase, ``[a-z0-9]`` parts joined by ``.``, ``_``, ``__`` or
  ``-``, separated by ``/``; at most 200 characters);
* ``tag``: its tag (``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``);
* ``labels``: image labels to add (an object of at most 32 string pairs, keys of
  at most 128 characters, values of at most 1024, no line breaks).

The answer is JSON lines: ``{"type": "progress", "current", "total", "message"}``
while it works (one every ``HEARTBEAT`` seconds during the engine's commit, which
reports nothing itself), then one ``{"type": "result", "image", "digest", "size",
"architecture", "labels"}`` (``image`` is ``repository:tag``; the fields are those
the agent's sync reports for the image, so the manager's catalogue entry and the
sync agree).  A failure ends with ``{"type": "error", "reason", "message"}`` and
exit code 1.  Refusals before any work (bad fields, a kernel that is not running
here, a backend that cannot commit) are ``stream.error``.

Only the Docker backend commits (``docker commit``, pausing the container while
its filesystem is copied); the local backend refuses with ``not-supported``.
What the kernel's container adds to its image's configuration is not kept: labels
the agent set (kernel and session ids, ports, batch timeout, GPUs) and
environment variables the session set are reset (to their value in the source
image, or to an empty value: Docker can override but not delete them), and so is
the command (a startup command is the session's, not the image's).  One commit
at a time per kernel.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

from agents.protocol import normalize_architecture

from .backends.base import Backend, ChunksEndpoint, KernelError, StreamEndpoint
from .streams import register_kind

__all__ = ["HEARTBEAT", "commit_changes", "open_commit", "validate_fields"]

log = logging.getLogger(__name__)

REPOSITORY_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
MAX_REPOSITORY = 200
MAX_LABELS = 32
MAX_LABEL_KEY = 128
MAX_LABEL_VALUE = 1024
#: Seconds between two progress lines while the engine commits.
HEARTBEAT = 5.0
_ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
TOTAL_STEPS = 3

_busy: set[str] = set()
_busy_lock = threading.Lock()


def _refuse(detail: str) -> KernelError:
    return KernelError("bad-request", detail)


def validate_fields(frame: dict[str, Any]) -> tuple[str, str, dict[str, str]]:
    """``(repository, tag, labels)`` of a commit open frame; raises :class:`KernelError` (``bad-request``)."""
    repository, tag, labels = frame.get("repository"), frame.get("tag"), frame.get("labels", {})
    if not isinstance(repository, str) or len(repository) > MAX_REPOSITORY or not REPOSITORY_RE.fullmatch(repository):
        raise _refuse("repository: a lowercase Docker repository path without a registry host")
    if not isinstance(tag, str) or not TAG_RE.fullmatch(tag):
        raise _refuse("tag: 1-128 characters of letters, digits, '_', '.', '-' (not starting with '.' or '-')")
    if labels is None:
        labels = {}
    if not isinstance(labels, dict) or len(labels) > MAX_LABELS:
        raise _refuse(f"labels: an object of at most {MAX_LABELS} string pairs")
    for key, value in labels.items():
        if (not isinstance(key, str) or not isinstance(value, str) or not key or len(key) > MAX_LABEL_KEY
                or len(value) > MAX_LABEL_VALUE or any(c in key + value for c in "\r\n\0")):
            raise _refuse(f"labels: keys of 1-{MAX_LABEL_KEY} and values of at most {MAX_LABEL_VALUE} characters, "
                          "strings without line breaks")
    return repository, tag, dict(labels)


def _quote(value: str) -> str:
    """A Dockerfile double-quoted word (no variable expansion)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def _env_map(env: list[str] | None) -> dict[str, str]:
    result = {}
    for item in env or []:
        key, _, value = item.partition("=")
        result[key] = value
    return result


def commit_changes(container_config: dict[str, Any], image_config: dict[str, Any],
                   add_labels: dict[str, str]) -> list[str]:
    """The Dockerfile instructions (``docker commit --change``) that give the new image its source
    image's labels, environment and command back, plus ``add_labels``."""
    changes = []
    image_labels = image_config.get("Labels") or {}
    for key, value in sorted((container_config.get("Labels") or {}).items()):
        if key in add_labels or image_labels.get(key) == value:
            continue
        original = image_labels.get(key, "")
        if any(c in key + original for c in "\r\n\0"):
            log.warning("commit: cannot reset the label %r (a line break in it)", key)
            continue
        changes.append(f"LABEL {_quote(key)}={_quote(original)}")
    for key, value in sorted(add_labels.items()):
        changes.append(f"LABEL {_quote(key)}={_quote(value)}")
    image_env = _env_map(image_config.get("Env"))
    for key, value in sorted(_env_map(container_config.get("Env")).items()):
        if image_env.get(key) == value:
            continue
        original = image_env.get(key, "")
        if not _ENV_KEY_RE.fullmatch(key) or any(c in original for c in "\r\n\0"):
            log.warning("commit: cannot reset the environment variable %r", key)
            continue
        changes.append(f"ENV {key}={_quote(original)}")
    if (container_config.get("Cmd") or None) != (image_config.get("Cmd") or None):
        changes.append("CMD " + json.dumps(list(image_config.get("Cmd") or [])))
    return changes


def _line(data: dict[str, Any]) -> bytes:
    return (json.dumps(data) + "\n").encode()


def _error_line(exc: BaseException) -> bytes:
    if isinstance(exc, KernelError):
        return _line({"type": "error", "reason": exc.reason, "message": exc.detail or str(exc)})
    return _line({"type": "error", "reason": "commit-failed", "message": f"{type(exc).__name__}: {exc}"})


def _docker_commit(backend: Any, kernel_id: str, container: Any, repository: str, tag: str,
                   labels: dict[str, str]) -> Iterator[bytes]:
    import docker.errors  # the Docker backend is in use: the SDK is there

    image_name = f"{repository}:{tag}"
    try:
        yield _line({"type": "progress", "current": 0, "total": TOTAL_STEPS,
                     "message": f"reading the configuration of kernel {kernel_id}"})
        try:
            container.reload()
        except docker.errors.NotFound:
            raise KernelError("kernel-not-running", f"kernel {kernel_id} is gone") from None
        if container.status != "running":
            raise KernelError("kernel-not-running", f"kernel {kernel_id} stopped before the commit")
        source = backend.client.images.get(container.attrs["Image"])
        changes = commit_changes(container.attrs.get("Config") or {}, source.attrs.get("Config") or {}, labels)
        yield _line({"type": "progress", "current": 1, "total": TOTAL_STEPS,
                     "message": f"committing the container to {image_name} (paused meanwhile)"})
        outcome: dict[str, Any] = {}

        def commit() -> None:
            try:
                outcome["image"] = container.commit(repository=repository, tag=tag, changes=changes, pause=True,
                                                    message=f"Backend.AI kernel {kernel_id}")
            except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
                outcome["error"] = exc

        worker = threading.Thread(target=commit, daemon=True, name=f"commit-{kernel_id[:8]}")
        started = time.monotonic()
        worker.start()
        while worker.is_alive():
            worker.join(HEARTBEAT)
            if worker.is_alive():
                yield _line({"type": "progress", "current": 1, "total": TOTAL_STEPS,
                             "message": f"committing ({time.monotonic() - started:.0f}s)"})
        if "error" in outcome:
            exc = outcome["error"]
            if isinstance(exc, docker.errors.APIError):
                raise KernelError("commit-failed", str(exc.explanation or exc)) from exc
            raise exc
        image = outcome["image"]
        image.reload()
        yield _line({"type": "progress", "current": 2, "total": TOTAL_STEPS,
                     "message": f"committed {image_name} ({image.short_id})"})
        attrs = image.attrs
        backend.log.info("kernel %s committed to %s (%s, %s bytes) in %.1fs", kernel_id, image_name, image.id,
                         attrs.get("Size"), time.monotonic() - started)
        yield _line({"type": "progress", "current": TOTAL_STEPS, "total": TOTAL_STEPS, "message": "done"})
        yield _line({"type": "result", "image": image_name, "digest": image.id, "size": int(attrs.get("Size") or 0),
                     "architecture": normalize_architecture(attrs.get("Architecture")),
                     "labels": dict((attrs.get("Config") or {}).get("Labels") or {})})
    finally:
        with _busy_lock:
            _busy.discard(kernel_id)


def open_commit(backend: Backend, kernel_id: str, frame: dict[str, Any]) -> StreamEndpoint:
    """The opener of the ``commit`` kind (see the module's docstring)."""
    repository, tag, labels = validate_fields(frame)
    if backend.name != "docker":
        raise KernelError("not-supported", f"the {backend.name} backend cannot commit a kernel to an image "
                                           "(only Docker kernels can be committed)")
    container = backend._running_container(kernel_id)  # type: ignore[attr-defined] - the Docker backend's
    with _busy_lock:
        if kernel_id in _busy:
            raise KernelError("commit-in-progress", f"kernel {kernel_id} is being committed already")
        _busy.add(kernel_id)
    log.info("kernel %s: commit to %s:%s requested", kernel_id, repository, tag)
    started = False

    def chunks() -> Iterator[bytes]:
        nonlocal started
        started = True
        return _docker_commit(backend, kernel_id, container, repository, tag, labels)

    class _Endpoint(ChunksEndpoint):
        def close(self) -> None:
            super().close()
            if not started:  # closed before the first read: nothing will free the kernel
                with _busy_lock:
                    _busy.discard(kernel_id)

    return _Endpoint(chunks, error_chunk=_error_line)


register_kind("commit", open_commit)
