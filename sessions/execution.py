"""Running code in a session (``docs/api.md``, "Execute"): ``POST /session/{s}`` and the
``/stream/session/{s}/execute`` websocket, the web UI's code console.

Every request is one ``execute`` stream over the agent link
(``sessions.kernel_io.KernelIO``; ``docs/agent-protocol.md``, "Execute"): its
open frame carries ``mode``, ``run_id``, ``code``, ``options`` and
``flush_timeout``, the agent answers one JSON document (Backend.AI's execution
result: ``status``, ``runId``, ``exitCode``, ``console``, ``options``,
``files``) and ends the stream.  The agent keeps the run's output between
requests, so a ``continue`` may come through any web process.

:func:`parse_request` checks a request before any work; :func:`execute` sends
it and returns the result; refusals by the agent become API errors
(:func:`api_error`): an image without a code runtime is ``unsupported``
(400), an unknown run or a run not waiting for input is 400.
"""
from __future__ import annotations

import json
import logging
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from django.db.models import F
from django.utils import timezone

from backendai.actions import audited
from backendai.api import errors
from sessions.kernel_io import KernelIO, KernelIOError
from sessions.models import Session
from sessions.streams import StreamTarget

log = logging.getLogger(__name__)

__all__ = ["MODES", "ExecuteRequest", "ExecutionUnsupported", "api_error", "execute", "parse_request",
           "record_query"]

#: The modes a client may ask for (``interrupt`` is the manager's own, for a websocket client gone away).
MODES = ("query", "batch", "complete", "continue", "input")
RUN_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: The largest code (or input line) a request may carry.
MAX_CODE = 1024 * 1024
MAX_OPTION_TEXT = 4096
#: How long the agent waits for output before answering ``continued``; the websocket's and the UI's.
FLUSH_TIMEOUT = 2.0
STREAM_FLUSH_TIMEOUT = 1.0
#: The largest answer taken from the agent (it sends at most about 1 MiB of output per answer).
MAX_ANSWER = 8 * 1024 * 1024
ANSWER_TIMEOUT = 60.0
BATCH_OPTIONS = ("clean", "build", "exec")
COMPLETE_OPTIONS = ("row", "col", "line", "post")


class ExecutionUnsupported(errors.BackendAIError):
    status_code = 400
    error_type = "unsupported"
    error_title = "The session's image does not support code execution."


@dataclass
class ExecuteRequest:
    mode: str
    run_id: str
    code: str
    options: dict[str, Any] = field(default_factory=dict)

    def fields(self, flush_timeout: float = FLUSH_TIMEOUT) -> dict[str, Any]:
        return {"mode": self.mode, "run_id": self.run_id, "code": self.code, "options": self.options,
                "flush_timeout": flush_timeout}


def parse_request(body: Any) -> ExecuteRequest:
    """Check an execute request (the client's JSON body) before any work; raises ``InvalidAPIParameters``.

    ``mode`` is one of :data:`MODES` (the SDK's ``execute(mode="complete")``
    sends none, only ``code`` and ``options`` with ``row``/``col``: that is a
    completion); ``runId`` is 1-64 letters, digits, ``_ . -`` (a new
    ``query``/``batch`` without one gets a fresh id); ``code`` a string of at
    most :data:`MAX_CODE` characters; ``options`` an object (``batch``: string
    or null ``clean``/``build``/``exec``; ``complete``: numbers and strings)."""
    if not isinstance(body, dict):
        raise errors.InvalidAPIParameters("the body must be a JSON object")
    mode = body.get("mode")
    options = body.get("options")
    if mode is None and isinstance(options, dict) and any(k in options for k in COMPLETE_OPTIONS):
        mode = "complete"
    if mode not in MODES:
        raise errors.InvalidAPIParameters(f"mode: must be one of {', '.join(MODES)} (got {mode!r})")
    run_id = body.get("runId", body.get("run_id"))
    if run_id is None or run_id == "":
        if mode in ("continue", "input"):
            raise errors.InvalidAPIParameters(f"runId: is required in {mode} mode")
        run_id = secrets.token_hex(8)
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise errors.InvalidAPIParameters("runId: must be 1-64 letters, digits, '_', '.' or '-'")
    code = body.get("code")
    if code is None:
        code = ""
    if not isinstance(code, str):
        raise errors.InvalidAPIParameters("code: must be a string")
    if len(code) > MAX_CODE:
        raise errors.InvalidAPIParameters(f"code: longer than {MAX_CODE} characters")
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise errors.InvalidAPIParameters("options: must be an object")
    if mode == "batch":
        options = _batch_options(options)
    elif mode == "complete":
        options = _complete_options(options)
    else:
        options = {}
    return ExecuteRequest(mode, run_id, code, options)


def _batch_options(options: dict[str, Any]) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for key in BATCH_OPTIONS:
        value = options.get(key)
        if value is not None and not isinstance(value, str):
            raise errors.InvalidAPIParameters(f"options.{key}: must be a string or null")
        if value is not None and len(value) > MAX_OPTION_TEXT:
            raise errors.InvalidAPIParameters(f"options.{key}: longer than {MAX_OPTION_TEXT} characters")
        cleaned[key] = value
    cleaned["buildLog"] = bool(options.get("buildLog", False))
    return cleaned


def _complete_options(options: dict[str, Any]) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for key in ("row", "col"):
        value = options.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1_000_000:
            raise errors.InvalidAPIParameters(f"options.{key}: must be a non-negative integer")
        cleaned[key] = value
    for key in ("line", "post"):
        value = options.get(key, "")
        if not isinstance(value, str) or len(value) > MAX_OPTION_TEXT:
            raise errors.InvalidAPIParameters(f"options.{key}: must be a string of at most {MAX_OPTION_TEXT} "
                                              "characters")
        cleaned[key] = value
    return cleaned


_REASONS: dict[str, type[errors.BackendAIError]] = {
    "unsupported": ExecutionUnsupported,
    "unknown-run": errors.InvalidAPIParameters,
    "not-waiting-input": errors.InvalidAPIParameters,
    "invalid-request": errors.InvalidAPIParameters,
    "kernel-not-running": errors.GenericForbidden,
    "too-many-runs": errors.RateLimitExceeded,  # the agent's bounds (agents/daemon/execution.py)
    "too-many-runners": errors.ServiceUnavailable,
}


def api_error(exc: KernelIOError, target: StreamTarget) -> errors.BackendAIError:
    """The API error for a failed execute stream (the agent's ``"<reason>: <detail>"`` refusal)."""
    if exc.lost or exc.timeout:
        return errors.ServiceUnavailable(f"Session {target.session_name}: {exc.message}")
    reason, _, _detail = exc.message.partition(": ")
    return _REASONS.get(reason, errors.ServiceUnavailable)(exc.message)


async def execute(target: StreamTarget, request: ExecuteRequest, *, flush_timeout: float = FLUSH_TIMEOUT,
                  mode: str | None = None) -> dict[str, Any]:
    """Send one request to the session's runner and return its result (raises :class:`KernelIOError`)."""
    fields = request.fields(flush_timeout)
    if mode is not None:
        fields["mode"] = mode
    io = KernelIO(target, "execute", fields)
    await io.open()
    try:
        await io.eof()
        body = await io.read_all(MAX_ANSWER, timeout=ANSWER_TIMEOUT + flush_timeout)
    finally:
        await io.close()
    try:
        result = json.loads(body)
    except ValueError:
        raise KernelIOError(f"the agent's answer is not JSON ({len(body)} bytes)") from None
    if not isinstance(result, dict) or "status" not in result:
        raise KernelIOError("the agent's answer is not an execution result")
    result.setdefault("runId", request.run_id)
    result.setdefault("files", [])
    result.setdefault("options", {})
    result.setdefault("console", [])
    return result


@audited("session", "execute", "session_id")
def record_query(session_id: str, request: ExecuteRequest) -> None:
    """A new query or batch counts as one query of the session; every request is user activity."""
    now = timezone.now()
    if request.mode in ("query", "batch"):
        Session.objects.filter(pk=session_id).update(num_queries=F("num_queries") + 1)
    Session.objects.filter(pk=session_id).exclude(last_access__gte=now).update(last_access=now)
