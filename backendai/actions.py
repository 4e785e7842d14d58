"""State-changing actions: the audit trail and the ``backendai_action_*`` metrics.

Every service function that changes state is wrapped::

    @audited("session", "destroy", target="session")
    def destroy(actor, session, ...): ...

or runs its body in ``with action("vfolder", "delete", actor=user, target=folder):``.
Either way one :class:`~backendai.models.AuditEntry` row is written per action (one
INSERT) with who (the ``actor`` argument, else the request context, else ``system``),
how (``via``: api, graphql, webui, admin, daemon, task, from ``backendai.requestctx``),
what (``entity.operation``), to which object (``target``), from where (request id,
address, user agent) and the outcome:

* ``success``: the function returned;
* ``refused``: it raised one of the API's problem errors below 500, Django's
  ``PermissionDenied``/``ValidationError``/``ObjectDoesNotExist``/``Http404`` or a
  DRF error below 500 (the caller asked for something it may not or cannot have);
* ``failed``: anything else (a crash, a 5xx problem).

Nested actions (a service that calls another wrapped service) record only the
outermost one; every level still counts in the metrics.

Writing the entry never fails the action: a failed INSERT is logged and counted
(``backendai_audit_write_failures_total``) and the action's result or exception goes
on unchanged.  Transactions: a success inside a caller's ``transaction.atomic`` is
written ``on_commit`` (a rolled-back change is not logged as done); a refusal or
failure inside one is written over a separate connection so the rollback that
follows does not take the entry with it (SQLite, which has one writer: once the
request is answered); outside any atomic block the row is written directly.

Requests refused before any service ran (a view's or resolver's permission check)
are recorded by :class:`backendai.auditlog.AuditRefusalMiddleware`, which uses
:func:`request_scope`/:func:`recorded_in_request` so a request whose service already
recorded its refusal is not recorded twice.

This module is plumbing: it imports no app (actors and targets are read by duck typing).
"""
from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from backendai import requestctx

log = logging.getLogger(__name__)

SUCCESS, REFUSED, FAILED = "success", "refused", "failed"

_MAX = {"actor": 255, "actor_id": 64, "access_key": 64, "actor_domain": 64, "via": 16, "action": 100,
        "entity": 48, "target_type": 48, "target": 255, "target_domain": 64, "detail": 500,
        "request_id": 64, "remote_addr": 64, "user_agent": 255}

#: argument names that hold the acting user (or keypair), tried in this order
ACTOR_ARGUMENTS = ("actor", "user", "requester", "owner", "actor_keypair", "keypair", "token")

_depth: contextvars.ContextVar[int] = contextvars.ContextVar("backendai_action_depth", default=0)
_request_scope: contextvars.ContextVar[RequestScope | None] = contextvars.ContextVar("backendai_audit_request",
                                                                                    default=None)

try:  # the counter of lost audit rows (multiprocess-safe via prometheus_client's own mode)
    from prometheus_client import Counter
    AUDIT_WRITE_FAILURES = Counter("backendai_audit_write_failures", "Audit log entries that could not be written.")
except Exception:  # pragma: no cover - a duplicate registration on reload
    AUDIT_WRITE_FAILURES = None


def _cut(name: str, value: Any) -> str:
    text = "" if value is None else str(value)
    return text[:_MAX[name]]


# --- classification -------------------------------------------------------------------------

def outcome_of(exc: BaseException) -> str:
    """``refused`` for the errors that answer the caller 4xx, ``failed`` for the rest."""
    from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, ValidationError
    from django.http import Http404
    from rest_framework.exceptions import APIException

    if isinstance(exc, (PermissionDenied, ValidationError, ObjectDoesNotExist, Http404)):
        return REFUSED
    if isinstance(exc, APIException):
        return REFUSED if 400 <= int(getattr(exc, "status_code", 500) or 500) < 500 else FAILED
    status = getattr(exc, "status_code", None) or getattr(exc, "status", None)
    if isinstance(status, int) and 400 <= status < 500:
        return REFUSED
    return FAILED


def describe_error(exc: BaseException) -> str:
    kind = getattr(exc, "error_type", None) or type(exc).__name__
    message = getattr(exc, "msg", None) or str(exc)
    return f"{kind}: {message}" if message else str(kind)


# --- actors and targets (duck typed: no app import) -----------------------------------------

@dataclass
class Actor:
    name: str = ""
    user_id: str = ""
    access_key: str = ""
    domain: str = ""


def _cached_relation(obj, name: str):
    state = getattr(obj, "_state", None)
    cache = getattr(state, "fields_cache", None) or {}
    return cache.get(name)


def actor_of(obj) -> Actor | None:
    """An actor from a user (``email``), a keypair (``access_key`` + its user when loaded),
    an agent token or a plain string; None when ``obj`` is none of these.  Reads only
    loaded attributes (no query)."""
    if obj is None:
        return None
    if isinstance(obj, str):
        return Actor(name=obj) if obj else None
    if isinstance(obj, Actor):
        return obj
    email = getattr(obj, "email", None)
    if isinstance(email, str) and email:
        return Actor(name=email, user_id=str(getattr(obj, "pk", "") or ""),
                     domain=str(getattr(obj, "domain_id", "") or ""))
    access_key = getattr(obj, "access_key", None)
    if isinstance(access_key, str) and access_key:
        user = _cached_relation(obj, "user")
        found = actor_of(user) if user is not None else None
        if found is None:
            found = Actor(name=access_key, user_id=str(getattr(obj, "user_id", "") or ""))
        found.access_key = access_key
        return found
    if hasattr(obj, "token_hash"):  # a daemon token (agents, proxy workers): its scope and name
        agent_id, authority = getattr(obj, "agent_id", None), getattr(obj, "authority", None)
        if agent_id:
            return Actor(name=f"agent:{agent_id}")
        if authority:
            return Actor(name=f"proxy-worker:{authority}")
        return Actor(name=f"token:{getattr(obj, 'name', '') or getattr(obj, 'token_prefix', '')}")
    return None


def _context_actor(ctx: requestctx.RequestContext | None) -> Actor:
    if ctx is None:
        return Actor(name="system")
    if ctx.user_id or ctx.access_key:
        return Actor(name=str(ctx.extra.get("user_email") or ctx.user_id or ctx.access_key),
                     user_id=ctx.user_id or "", access_key=ctx.access_key or "",
                     domain=str(ctx.extra.get("user_domain") or ""))
    if ctx.extra.get("agent_id") and ctx.via in ("daemon", "api"):
        return Actor(name=f"agent:{ctx.extra['agent_id']}")
    return Actor(name="system")


def target_of(value) -> tuple[str, str]:
    """``(identity, domain)`` of a target: a model instance's name or primary key (and its
    domain when it has one), a list of them, or the text of a plain value."""
    if value is None:
        return "", ""
    if hasattr(value, "_result_cache") and hasattr(value, "model"):  # a QuerySet: no query of its own
        if value._result_cache is None:
            return f"{value.model._meta.model_name} (a filtered set)", ""
        value = value._result_cache
    if isinstance(value, (list, tuple, set, frozenset)):
        parts = [target_of(item) for item in list(value)[:20]]
        domains = {d for _, d in parts if d}
        return ",".join(p for p, _ in parts if p), (domains.pop() if len(domains) == 1 else "")
    meta = getattr(value, "_meta", None)
    if meta is not None and hasattr(value, "pk"):
        name = ""
        for attribute in ("name", "email", "access_key", "hostname"):
            candidate = getattr(value, attribute, None)
            if isinstance(candidate, str) and candidate:
                name = candidate
                break
        pk = str(value.pk) if value.pk is not None else ""
        identity = f"{name} ({pk})" if name and pk and name != pk else (name or pk)
        domain = getattr(value, "domain_name", None) or getattr(value, "domain_id", None)
        if meta.model_name == "domain":
            domain = pk
        return identity, (domain if isinstance(domain, str) else "")
    return str(value), ""


# --- the per-request scope (de-duplication with the refusal middleware) ---------------------

@dataclass
class RequestScope:
    """One request being served: its HTTP request (whose authenticated user is the actor
    when a service takes none) and the ``(source, outcome)`` of every entry recorded for
    it (a mutable object, so it is seen across ``sync_to_async`` hops)."""

    request: Any = None
    marks: list = field(default_factory=list)
    pending: list = field(default_factory=list)  # SQLite: refusals to write once the transaction is over


@contextmanager
def request_scope(request=None) -> Iterator[list]:
    scope = RequestScope(request=request)
    token = _request_scope.set(scope)
    try:
        yield scope.marks
    finally:
        _request_scope.reset(token)
        for values in scope.pending:  # the request is answered: no transaction of its is open any more
            _insert(values)


def current_marks() -> list | None:
    scope = _request_scope.get()
    return scope.marks if scope is not None else None


def _request_user():
    scope = _request_scope.get()
    user = getattr(getattr(scope, "request", None), "user", None)
    return user if getattr(user, "is_authenticated", False) else None


def recorded_in_request(marks: list, source: str = "service") -> bool:
    """Whether an entry of ``source`` was recorded in the scope ``marks``."""
    return any(mark[0] == source for mark in marks)


# --- writing ---------------------------------------------------------------------------------

def _in_callers_atomic(using: str = "default") -> bool:
    """True inside a ``transaction.atomic`` block of the code (not the test case's own)."""
    from django.db import connections
    connection = connections[using]
    return any(not getattr(block, "_from_testcase", False) for block in connection.atomic_blocks)


def _row(values: dict):
    from backendai.models import AuditEntry
    return AuditEntry(**{key: _cut(key, value) if key in _MAX else value for key, value in values.items()})


def _insert(values: dict) -> None:
    from django.db import connection, transaction
    try:
        if connection.in_atomic_block:  # a test case's (or, on SQLite, the caller's): a failed INSERT must not poison it
            with transaction.atomic():
                _row(values).save(force_insert=True)
        else:
            _row(values).save(force_insert=True)
    except Exception:
        _lost(values)


def _insert_detached(values: dict) -> None:
    """Write over a connection of its own (autocommit): survives the caller's rollback."""
    from django.db import connections
    connection = None
    try:
        connection = connections.create_connection("default")
        row = _row(values)
        from backendai.models import AuditEntry
        fields = [f for f in AuditEntry._meta.concrete_fields if not f.primary_key]
        with connection.cursor() as cursor:
            columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
            marks = ", ".join(["%s"] * len(fields))
            cursor.execute(f"INSERT INTO {connection.ops.quote_name(AuditEntry._meta.db_table)} ({columns}) "
                           f"VALUES ({marks})",
                           [f.get_db_prep_save(getattr(row, f.attname), connection) for f in fields])
    except Exception:
        _lost(values)
    finally:
        if connection is not None:
            try:
                connection.close()
            except Exception:
                pass


def _lost(values: dict) -> None:
    log.exception("could not write the audit entry of %s (%s)", values.get("action"), values.get("outcome"))
    if AUDIT_WRITE_FAILURES is not None:
        try:
            AUDIT_WRITE_FAILURES.inc()
        except Exception:
            pass


def record(entity: str, operation: str, *, outcome: str, actor=None, target=None, target_type: str | None = None,
           detail: str = "", via: str | None = None, source: str = "service") -> None:
    """Write one audit entry now (never raises).  ``actor``: a user, keypair, token, ``Actor``
    or string (default: the request context's caller, else ``system``); ``target``: a model
    instance, a list of them or a string.  ``source`` tags the entry in the request scope
    (``service``, ``admin``, ``request``) for the recorders' de-duplication."""
    try:
        ctx = requestctx.current()
        who = actor_of(actor) or actor_of(_request_user()) or _context_actor(ctx)
        if ctx is not None and ctx.access_key and not who.access_key and ctx.user_id and ctx.user_id == who.user_id:
            who.access_key = ctx.access_key  # the keypair the acting user signed with
        identity, target_domain = target_of(target)
        values = dict(actor=who.name, actor_id=who.user_id, access_key=who.access_key, actor_domain=who.domain,
                      via=via or (ctx.via if ctx is not None else "task"), entity=entity,
                      action=f"{entity}.{operation}", target_type=target_type or entity, target=identity,
                      target_domain=target_domain, outcome=outcome, detail=detail,
                      request_id=ctx.request_id if ctx else "", remote_addr=(ctx.remote_addr or "") if ctx else "",
                      user_agent=(ctx.user_agent or "") if ctx else "")
        marks = current_marks()
        if marks is not None:
            marks.append((source, outcome))
        if _in_callers_atomic():
            from django.db import connection, transaction
            scope = _request_scope.get()
            if outcome == SUCCESS:
                transaction.on_commit(lambda: _insert(values))
            elif connection.vendor != "sqlite":
                _insert_detached(values)
            elif scope is not None:
                # SQLite has one writer: a second connection would wait for this transaction's lock
                scope.pending.append(values)
            else:
                _insert(values)  # in a savepoint: kept when the caller commits
        else:
            _insert(values)
    except Exception:
        _lost({"action": f"{entity}.{operation}", "outcome": outcome})


def _observe(entity: str, operation: str, success: bool, seconds: float, error_detail: str) -> None:
    try:
        from backendai import telemetry
        telemetry.observe_action(entity, operation, success=success, seconds=seconds, error_detail=error_detail)
    except Exception:  # metrics never fail the action
        log.debug("observe_action failed", exc_info=True)


# --- the two ways to wrap an action ---------------------------------------------------------

@dataclass
class Action:
    """What the ``with action(...)`` body may fill in as it learns it."""

    entity: str
    operation: str
    actor: Any = None
    target: Any = None
    target_type: str | None = None
    detail: str = ""
    skip: bool = False  # set by the body: a success that changed nothing (a sweep that found nothing)
    extra: dict = field(default_factory=dict)


@contextmanager
def action(entity: str, operation: str, *, actor=None, target=None, target_type: str | None = None,
           via: str | None = None) -> Iterator[Action]:
    """Run the ``with`` body as one audited action; the body may set ``a.target``/``a.actor``
    once it knows them (e.g. the created object)."""
    current = Action(entity, operation, actor=actor, target=target, target_type=target_type)
    depth = _depth.get()
    token = _depth.set(depth + 1)
    started = time.perf_counter()
    try:
        yield current
    except BaseException as exc:
        _depth.reset(token)
        outcome = outcome_of(exc) if isinstance(exc, Exception) else FAILED
        error_type = getattr(exc, "error_type", None) or type(exc).__name__
        _observe(entity, operation, False, time.perf_counter() - started, str(error_type))
        if depth == 0:
            record(entity, operation, outcome=outcome, actor=current.actor, target=current.target,
                   target_type=current.target_type, detail=current.detail or describe_error(exc), via=via)
        raise
    _depth.reset(token)
    _observe(entity, operation, True, time.perf_counter() - started, "")
    if depth == 0 and not current.skip:
        record(entity, operation, outcome=SUCCESS, actor=current.actor, target=current.target,
               target_type=current.target_type, detail=current.detail, via=via)


TargetSpec = "str | Callable[[tuple, dict, Any], Any] | None"


def audited(entity: str, operation: str, target: TargetSpec = None, *, actor: str | None = None,
            target_type: str | None = None, when: Callable[[Any], bool] | None = None):
    """Decorate a service function as one audited action.

    ``target``: the name of the argument that names the object, or a callable
    ``(args, kwargs, result) -> object or text`` (``result`` is None when the call
    raised); left out, the returned object is the target.  ``actor``: the name of the
    argument holding the acting user/keypair (default: the first of
    ``ACTOR_ARGUMENTS`` the function takes, else the request context).  ``when``: a
    success is recorded only if ``when(result)`` is true (periodic sweeps: only when they
    changed something); refusals and failures always are."""
    def decorate(fn: Callable) -> Callable:
        signature = inspect.signature(fn)
        actor_argument = actor or next((name for name in ACTOR_ARGUMENTS if name in signature.parameters), None)

        def argument(args, kwargs, name):
            if name is None:
                return None
            try:
                return signature.bind_partial(*args, **kwargs).arguments.get(name)
            except TypeError:
                return kwargs.get(name)

        def resolve_target(args, kwargs, result):
            try:
                if callable(target):
                    return target(args, kwargs, result)
                if isinstance(target, str):
                    return argument(args, kwargs, target)
                return result
            except Exception:
                return None

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with action(entity, operation, actor=argument(args, kwargs, actor_argument), target_type=target_type) as a:
                try:
                    result = fn(*args, **kwargs)
                except BaseException:
                    a.target = resolve_target(args, kwargs, None)
                    raise
                a.target = resolve_target(args, kwargs, result)
                if when is not None:
                    try:
                        a.skip = not when(result)
                    except Exception:
                        a.skip = False
                return result

        wrapper.audited_action = f"{entity}.{operation}"
        return wrapper

    return decorate


__all__ = ["audited", "action", "record", "request_scope", "recorded_in_request", "outcome_of", "actor_of",
           "target_of", "SUCCESS", "REFUSED", "FAILED"]
