"""``POST /session/{s}`` (execute), ``/complete`` and ``/interrupt``: code in a session (``sessions.execution``).
Thin: parse, call, render."""
from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from rest_framework.response import Response
from rest_framework.views import APIView

from backendai import admission
from sessions import execution
from sessions.kernel_io import KernelIOError
from sessions.streams import http_target

log = logging.getLogger(__name__)


def _owner(request) -> str | None:
    return request.query_params.get("owner_access_key") or None


def _run(target, parsed, **kwargs):
    try:
        with admission.waiting():  # the code runs in the kernel meanwhile
            return async_to_sync(execution.execute)(target, parsed, **kwargs)
    except KernelIOError as exc:
        log.info("execute %s in session %s (kernel %s on %s) failed: %s", kwargs.get("mode") or parsed.mode,
                 target.session_name, target.kernel_id, target.agent_id, exc.message)
        raise execution.api_error(exc, target) from None


class SessionCompleteView(APIView):
    """``POST /session/{s}/complete`` (the SDK's ``complete``): ``{code, options: {row, col, line, post}}``
    -> ``{"result": {"status": "finished", "completions": [...]}}``."""

    def post(self, request, name):
        body = request.data if isinstance(request.data, dict) else None
        parsed = execution.parse_request({**body, "mode": "complete"} if body is not None else request.data)
        target = http_target(request.user, request.auth, name, _owner(request))
        result = _run(target, parsed)
        execution.record_query(target.session_id, parsed)
        return Response({"result": {"status": result.get("status", "finished"),
                                    "completions": result.get("completions") or []}})


class SessionInterruptView(APIView):
    """``POST /session/{s}/interrupt``: a KeyboardInterrupt in the run going on (a batch command is killed); 204."""

    def post(self, request, name):
        target = http_target(request.user, request.auth, name, _owner(request))
        _run(target, execution.ExecuteRequest("interrupt", "", ""), flush_timeout=0.05)
        execution.record_query(target.session_id, execution.ExecuteRequest("interrupt", "", ""))
        return Response(status=204)


def execute(request, name: str, owner_access_key: str | None) -> Response:
    """The body ``{mode, runId, code, options}`` -> ``{"result": {status, runId, exitCode, console, options, files}}``."""
    parsed = execution.parse_request(request.data)
    target = http_target(request.user, request.auth, name, owner_access_key)
    result = _run(target, parsed)
    execution.record_query(target.session_id, parsed)
    return Response({"result": result})
