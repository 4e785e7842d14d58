"""The web UI's code console (``templates/sessions/_execute.html``, ``static/sessions/execute.js``):
``POST /ui/sessions/<id>/execute/`` with the login cookie and the CSRF token, the same requests and
rules as ``POST /session/{s}`` (``sessions.execution``), answered with the execution result as JSON
(errors as problem+json).  The page loops ``continue`` while the run goes on."""
from __future__ import annotations

import json
import logging

from asgiref.sync import async_to_sync
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.views.decorators.http import require_POST

from backendai import admission
from backendai.api import errors
from backendai.api.errors import BackendAIError
from sessions import execution
from sessions.kernel_io import KernelIOError
from sessions.streams import http_target

log = logging.getLogger(__name__)

#: The largest request body the console sends (the code plus a little JSON).
MAX_BODY = execution.MAX_CODE * 2 + 4096


@login_required
@require_POST
def session_execute(request, session_id):
    try:
        if len(request.body) > MAX_BODY:
            raise errors.InvalidAPIParameters(f"the request is larger than {MAX_BODY} bytes")
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            raise errors.InvalidAPIParameters("the body must be JSON") from None
        parsed = execution.parse_request(body)
        if parsed.mode == "complete":
            raise errors.InvalidAPIParameters("mode: the console runs query, continue and input")
        target = http_target(request.user, request.user.main_keypair, str(session_id))
        try:
            with admission.waiting():
                result = async_to_sync(execution.execute)(target, parsed)
        except KernelIOError as exc:
            log.info("console execute %s in session %s (kernel %s on %s) failed: %s", parsed.mode,
                     target.session_name, target.kernel_id, target.agent_id, exc.message)
            raise execution.api_error(exc, target) from None
        execution.record_query(target.session_id, parsed)
    except BackendAIError as exc:
        return exc.as_response()
    return JsonResponse({"result": result})
