"""The audit log around ``backendai.actions``: who may read it, its retention, and the
two recorders that catch what no wrapped service sees.

* :func:`visible_entries`: superadmins read every entry; a domain admin the entries
  whose actor or target belongs to their domain; anyone else is refused
  (``InsufficientPrivilege``), for monitors and users alike.
* :func:`prune`: deletes entries older than ``AUDIT_RETENTION_DAYS`` (beat runs
  ``backendai.tasks.prune_audit_log`` hourly); 0 keeps everything.
* :class:`AuditRefusalMiddleware`: a state-changing request (not GET/HEAD/OPTIONS;
  a GraphQL POST only when it is a mutation) answered 4xx by a view or resolver before
  any wrapped service recorded something for it is recorded as ``request.<route
  name>``, outcome ``refused``, target = the path.
* :func:`record_admin_log`: the Django admin's add/change/delete (its ``LogEntry``
  rows, single and bulk) recorded as ``<app>.<model>.add|change|delete`` via ``admin``,
  unless a wrapped service already recorded that request.
"""
from __future__ import annotations

import json
import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from backendai import actions
from backendai.api import errors
from backendai.models import AuditEntry

log = logging.getLogger(__name__)

SAFE_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE")
GRAPHQL_PATHS = ("/admin/gql", "/admin/graphql", "/func/admin/gql", "/func/admin/graphql")


# --- reading ----------------------------------------------------------------------------------

def visible_entries(actor):
    """The entries ``actor`` may read (see the module docstring)."""
    if getattr(actor, "is_superadmin", False):
        return AuditEntry.objects.all()
    if getattr(actor, "is_domain_admin", False):
        from django.db.models import Q
        domain = actor.domain_id
        return AuditEntry.objects.filter(Q(actor_domain=domain) | Q(target_domain=domain))
    raise errors.InsufficientPrivilege("Only superadmins and domain admins may read the audit log.")


def filtered(query, *, action=None, entity=None, outcome=None, actor=None, target=None, via=None,
             request_id=None, since=None, until=None):
    """Narrow ``query`` by exact ``action``/``entity``/``outcome``/``via``/``request_id``, an
    ``actor``/``target`` substring and a ``since``/``until`` time range."""
    texts = {"action": action, "entity": entity, "outcome": outcome, "via": via, "request_id": request_id,
             "actor": actor, "target": target}
    for name, value in texts.items():
        if value is not None and (len(value) > 255 or "\x00" in value):
            raise errors.InvalidAPIParameters(f"{name}: at most 255 characters, no NUL")
    for column, value in (("action", action), ("entity", entity), ("outcome", outcome), ("via", via),
                          ("request_id", request_id)):
        if value:
            query = query.filter(**{column: value})
    if actor:
        query = query.filter(actor__icontains=actor)
    if target:
        query = query.filter(target__icontains=target)
    if since is not None:
        query = query.filter(created_at__gte=since)
    if until is not None:
        query = query.filter(created_at__lt=until)
    return query


# --- retention --------------------------------------------------------------------------------

def prune(now=None, days: int | None = None) -> int:
    """Delete the entries older than ``days`` (default ``AUDIT_RETENTION_DAYS``); the count deleted."""
    days = settings.AUDIT_RETENTION_DAYS if days is None else days
    if not days:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    deleted, _ = AuditEntry.objects.filter(created_at__lt=cutoff).delete()
    return deleted


# --- requests refused before a service --------------------------------------------------------

def _is_graphql_mutation(request) -> bool:
    from backendai.api.gqlkit import MAX_QUERY_CHARS, MAX_TOKENS
    try:
        body = json.loads(request.body or b"{}")
        query = body.get("query") or ""
        if len(query) > MAX_QUERY_CHARS:  # refused by the cost limits before anything runs
            return False
        from graphql import OperationType, parse
        document = parse(query, max_tokens=MAX_TOKENS)
    except Exception:
        return False
    name = body.get("operationName")
    for definition in document.definitions:
        operation = getattr(definition, "operation", None)
        if operation is None:
            continue
        if name and getattr(definition.name, "value", None) != name:
            continue
        return operation == OperationType.MUTATION
    return False


def _problem_detail(response) -> str:
    try:
        if "json" in response.get("Content-Type", ""):
            body = json.loads(response.content)
            slug = str(body.get("type", "")).rsplit("/", 1)[-1]
            return f"{response.status_code} {slug}: {body.get('msg') or body.get('title') or ''}".strip()
    except Exception:
        pass
    return str(response.status_code)


def _request_actor(request):
    user = getattr(request, "user", None)
    if getattr(user, "is_authenticated", False):
        return user
    return None


class AuditRefusalMiddleware:
    """Records 4xx answers to state-changing requests that no wrapped service recorded."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.method in SAFE_METHODS:
            return self.get_response(request)
        mutation = None
        if request.path in GRAPHQL_PATHS:
            mutation = _is_graphql_mutation(request)  # reads the body now (DRF reads the cached copy)
        with actions.request_scope(request) as marks:
            response = self.get_response(request)
        try:
            if (400 <= response.status_code < 500 and mutation is not False and not marks
                    and getattr(request, "resolver_match", None) is not None):
                match = request.resolver_match
                operation = match.url_name or match.route or "unnamed"
                if mutation:
                    operation = "graphql-mutation"
                actions.record("request", operation, outcome=actions.REFUSED, actor=_request_actor(request),
                               target=request.path[:255], target_type="path", detail=_problem_detail(response), source="request")
        except Exception:
            log.exception("could not record a refused request")
        return response


# --- the Django admin -------------------------------------------------------------------------

_FLAGS = {1: "add", 2: "change", 3: "delete"}


def record_admin_log(entry) -> None:
    """One admin ``LogEntry`` as an audit entry (skipped when a service recorded the request)."""
    marks = actions.current_marks()
    if marks and actions.recorded_in_request(marks, "service"):
        return
    try:
        content_type = entry.content_type
        entity = f"{content_type.app_label}.{content_type.model}" if content_type else "admin"
        target = f"{entry.object_repr} ({entry.object_id})" if entry.object_id else entry.object_repr
        actions.record(entity, _FLAGS.get(entry.action_flag, "change"), outcome=actions.SUCCESS,
                       actor=entry.user, target=target, target_type=entity, via="admin", source="admin",
                       detail=str(entry.get_change_message())[:500])
    except Exception:
        log.exception("could not record an admin change")


def on_log_entry_saved(sender, instance, created, raw=False, **kwargs) -> None:
    if created and not raw:
        record_admin_log(instance)


# --- logins and logouts (web UI, admin, /server/login, /auth/authorize all send these) -------

def on_logged_in(sender, request=None, user=None, **kwargs) -> None:
    actions.record("user", "login", outcome=actions.SUCCESS, actor=user, target=user)


def on_logged_out(sender, request=None, user=None, **kwargs) -> None:
    if user is not None:
        actions.record("user", "logout", outcome=actions.SUCCESS, actor=user, target=user)


def on_login_failed(sender, credentials=None, request=None, **kwargs) -> None:
    name = str((credentials or {}).get("username") or (credentials or {}).get("email") or "")[:255]
    actions.record("user", "login", outcome=actions.REFUSED, actor=name or None, target=name,
                   detail="invalid credentials or locked out")


def install() -> None:
    """Connect the recorders (``BackendAIConfig.ready``): the login signals, the admin's
    ``LogEntry``; bulk deletions in the admin (``LogEntry`` written with ``bulk_create``,
    which sends no signal) are recorded by wrapping ``ModelAdmin.log_deletions``."""
    from django.contrib.admin.models import LogEntry
    from django.contrib.admin.options import ModelAdmin
    from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
    from django.db.models.signals import post_save

    user_logged_in.connect(on_logged_in, dispatch_uid="backendai.audit.login")
    user_logged_out.connect(on_logged_out, dispatch_uid="backendai.audit.logout")
    user_login_failed.connect(on_login_failed, dispatch_uid="backendai.audit.login_failed")
    post_save.connect(on_log_entry_saved, sender=LogEntry, dispatch_uid="backendai.audit.logentry")
    original = ModelAdmin.log_deletions
    if getattr(original, "audited", False):
        return

    def log_deletions(self, request, queryset):
        written = original(self, request, queryset)
        if isinstance(written, list) and len(written) > 1:
            for entry in written:
                record_admin_log(entry)
        return written

    log_deletions.audited = True
    ModelAdmin.log_deletions = log_deletions
