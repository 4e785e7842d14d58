"""Who is doing what right now: the request (or task, or daemon pass) the running code
serves, for logs and the audit trail.

One contextvar holds a :class:`RequestContext`.  The request middleware
(``backendai.requestlog``) sets it for each HTTP request, websocket consumers set it in
``connect``, and Celery tasks and daemon passes set it with :func:`using`.  Code further
down adds the ids it learns (``bind(session_id=...)``) so every log line written while
serving that request carries them.  Contextvars follow the code into ``async`` tasks and
``sync_to_async`` threads, so the same calls work in sync, async and Celery code.

Nothing here imports Django: any layer may use it.
"""
from __future__ import annotations

import contextvars
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

VIAS = ("api", "graphql", "webui", "admin", "daemon", "task", "cli")

#: the fields that logs lift out of ``extra`` as their own keys
ID_FIELDS = ("session_id", "agent_id", "kernel_id")

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass
class RequestContext:
    request_id: str
    via: str = "api"
    remote_addr: str | None = None
    user_agent: str | None = None
    user_id: str | None = None
    access_key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        """The context as flat log fields (only those known)."""
        out: dict[str, Any] = {"request_id": self.request_id, "via": self.via}
        for name in ("remote_addr", "user_id", "access_key"):
            value = getattr(self, name)
            if value:
                out[name] = value
        for key, value in self.extra.items():
            if value is not None and value != "":
                out[key] = value
        return out


_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "backendai_request_context", default=None)


def new_request_id() -> str:
    return uuid.uuid4().hex


def sane_request_id(value: str | None) -> str | None:
    """``value`` when it is a request id we can echo and log safely (1-64 characters
    of ``[A-Za-z0-9._-]``), otherwise None."""
    if value and _SANE_REQUEST_ID.fullmatch(value):
        return value
    return None


def current() -> RequestContext | None:
    return _current.get()


def bind(**fields: Any) -> None:
    """Add ids to the current context; ``user_id``/``access_key``/``remote_addr``/
    ``user_agent`` set the attributes, anything else lands in ``extra``.  Without a
    current context this does nothing (never raises)."""
    ctx = _current.get()
    if ctx is None:
        return
    for key, value in fields.items():
        if key in ("user_id", "access_key", "remote_addr", "user_agent"):
            setattr(ctx, key, None if value is None else str(value))
        elif key in ("request_id", "via"):
            continue  # fixed for the life of the context
        else:
            ctx.extra[key] = None if value is None else str(value)


def set_current(ctx: RequestContext | None) -> contextvars.Token:
    return _current.set(ctx)


def reset(token: contextvars.Token) -> None:
    try:
        _current.reset(token)
    except ValueError:  # token from another context (e.g. a thread hop): just clear
        _current.set(None)


@contextmanager
def using(ctx: RequestContext) -> Iterator[RequestContext]:
    """Make ``ctx`` the current context for the ``with`` block."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        reset(token)


def for_task(name: str, *, request_id: str | None = None, via: str = "task") -> RequestContext:
    """A context for a Celery task or daemon pass (``name`` goes to ``extra['task']``)."""
    return RequestContext(request_id=sane_request_id(request_id) or new_request_id(), via=via,
                          extra={"task": name})
