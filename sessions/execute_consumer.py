"""``/stream/session/{s}/execute``: Backend.AI's streaming execute loop over a websocket.

The client (the SDK's ``stream_execute``, the CLI's ``backend.ai run``) sends
one text frame ``{"code", "mode", "options"}`` (``mode`` ``query`` or
``batch``); the server then runs the loop itself and sends each execution
result as a JSON text frame (``{status, runId, exitCode, console, options,
files}``): after ``continued``, ``build-finished`` or ``clean-finished`` it asks
for more (``continue``), after ``waiting-input`` it waits for the client's next
text frame (the input line, sent as is) and sends it (``input``), after
``finished`` it closes (1000).  Each request is one ``execute`` stream over the
agent link (``sessions.execution``).

Refusals: no or bad credentials, someone else's or no such session -> closed
before the handshake completes (HTTP 403); a session not running -> 4409; a
bad first frame -> ``{"status": "error", ...}`` and 4400; the image without a
code runtime or another refusal -> ``{"status": "error", "console":
[["stderr", message]]}`` and 4500; a lost or silent agent -> the same and
1011, as terminals (``backendai.asgi`` lets daphne send it).  A client that goes away during a run
interrupts it.
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from backendai import telemetry
from backendai.api.errors import BackendAIError
from sessions import execution, streams
from sessions.kernel_io import KernelIOError
from sessions.streams import CLOSE_AGENT, CLOSE_BAD_REQUEST, CLOSE_NORMAL, NotAllowed, StreamRefused

log = logging.getLogger(__name__)

#: The longest input line taken from the client.
MAX_INPUT = execution.MAX_CODE
#: Close code for a run the kernel's side refused (an unreachable agent closes with ``CLOSE_AGENT``, 1011).
CLOSE_FAILED = 4500


class ExecuteConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.target = None
        self.loop_task: asyncio.Task | None = None
        self.inputs: asyncio.Queue[str] = asyncio.Queue()
        self.waiting_input = False
        self.run_id = ""
        self.finished = False
        principal = await database_sync_to_async(streams.authenticate_scope)(self.scope)
        if principal is None:
            await self.close()  # HTTP 403
            return
        user, keypair = principal
        name = self.scope["url_route"]["kwargs"]["name"]
        params = streams.query_params(self.scope)
        try:
            self.target = await database_sync_to_async(streams.resolve_target)(user, keypair, name, "execute", params)
        except NotAllowed as exc:
            log.info("execute stream refused for %s: %s", user.email, exc)
            await self.close()
            return
        except StreamRefused as exc:
            await self.accept()
            await self.close(code=exc.code, reason=exc.message[:120])
            return
        self.user = user
        await self.accept()
        log.info("execute stream into session %s (kernel %s on %s) for %s", self.target.session_name,
                 self.target.kernel_id, self.target.agent_id, user.email)

    async def receive(self, text_data=None, bytes_data=None):
        if self.target is None or self.finished:
            return
        if self.loop_task is None:
            await self._start(text_data if text_data is not None else (bytes_data or b"").decode("utf-8", "replace"))
            return
        text = text_data if text_data is not None else (bytes_data or b"").decode("utf-8", "replace")
        if len(text) > MAX_INPUT:
            await self._error(f"the input is longer than {MAX_INPUT} characters", CLOSE_BAD_REQUEST)
            return
        await self.inputs.put(text)

    async def _start(self, text: str) -> None:
        try:
            first = json.loads(text)
            if not isinstance(first, dict):
                raise ValueError("not an object")
        except ValueError:
            await self._error("the first frame must be a JSON object {code, mode, options}", CLOSE_BAD_REQUEST)
            return
        if first.get("mode", "query") not in ("query", "batch"):
            await self._error(f"mode: must be query or batch (got {first.get('mode')!r})", CLOSE_BAD_REQUEST)
            return
        try:
            request = execution.parse_request({"mode": first.get("mode", "query"), "code": first.get("code"),
                                               "options": first.get("options"), "runId": secrets.token_hex(8)})
        except BackendAIError as exc:
            await self._error(str(exc.msg or exc.error_title), CLOSE_BAD_REQUEST)
            return
        self.run_id = request.run_id
        self.loop_task = telemetry.spawn(self._loop(request), "execute_loop")

    async def _loop(self, request: execution.ExecuteRequest) -> None:
        target = self.target
        try:
            await database_sync_to_async(execution.record_query)(target.session_id, request)
            while True:
                result = await execution.execute(target, request, flush_timeout=execution.STREAM_FLUSH_TIMEOUT)
                await self.send(text_data=json.dumps(result))
                status = result.get("status")
                if status == "finished":
                    self.finished = True
                    await self.close(code=CLOSE_NORMAL)
                    return
                if status == "waiting-input":
                    self.waiting_input = True
                    code = await self.inputs.get()
                    self.waiting_input = False
                    request = execution.ExecuteRequest("input", self.run_id, code)
                    await database_sync_to_async(execution.record_query)(target.session_id, request)
                else:
                    request = execution.ExecuteRequest("continue", self.run_id, "")
        except KernelIOError as exc:
            error = execution.api_error(exc, target)
            log.info("execute stream into session %s (kernel %s on %s) failed: %s", target.session_name,
                     target.kernel_id, target.agent_id, exc.message)
            code = CLOSE_AGENT if error.status_code == 503 else CLOSE_FAILED
            await self._error(str(error.msg or error.error_title), code, kind=error.error_type)

    async def _error(self, message: str, code: int, kind: str = "invalid-api-params") -> None:
        self.finished = True
        try:
            await self.send(text_data=json.dumps({"status": "error", "runId": self.run_id or None, "error": kind,
                                                  "message": message, "exitCode": None,
                                                  "console": [["stderr", message + "\n"]], "options": {},
                                                  "files": []}))
        except Exception:  # noqa: BLE001 - the client may be gone already
            pass
        await self.close(code=code, reason=message[:120])

    async def disconnect(self, code):
        task = self.loop_task
        if task is None or task.done():
            return
        task.cancel()
        if self.finished:
            return
        log.info("execute stream into session %s: the client left during run %s; interrupting it",
                 self.target.session_name, self.run_id)
        try:  # best effort: the run would otherwise go on with nobody to read it
            await execution.execute(self.target, execution.ExecuteRequest("continue", self.run_id, ""),
                                    flush_timeout=0.05, mode="interrupt")
        except KernelIOError as exc:
            log.info("could not interrupt run %s: %s", self.run_id, exc.message)
