"""What agents and app proxy workers share as daemons that call the manager in.

Both kinds of daemon authenticate with a bearer token the manager issued (only
its hash is kept), report a heartbeat, and are marked LOST when they fall
silent.  This module holds that once, parametrised by the concrete models:

* :class:`DaemonToken`, the abstract token model (``agents.AgentToken`` and
  ``appproxy.WorkerToken`` add what a token is bound to), and the token helpers
  :func:`hash_token`, :func:`issue_token`, :func:`revoke_tokens`,
  :func:`token_for` and :func:`touch_token`;
* :class:`StatusMoves`, a transition map (which status may move to which) with
  the checks and the guarded set-based write built from it, and
  :class:`MovesByMap`, the model mixin whose ``move_to`` is the one door a
  daemon row's status goes through;
* :func:`mark_silent_lost`, the set-based "heartbeat too old: LOST" write.

Plumbing: imports Django and nothing of the project's apps.
"""
from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

ALIVE, LOST, TERMINATED = "ALIVE", "LOST", "TERMINATED"
# A token's last use is written at most this often (a write per call would be a write per heartbeat).
TOUCH_EVERY = timedelta(minutes=1)


# --- tokens ----------------------------------------------------------------------------------

class DaemonToken(models.Model):
    """A credential for a daemon.  Only its hash is kept; the raw value is shown once."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=128)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    token_prefix = models.CharField(max_length=12, editable=False, help_text="The first characters, to recognise it.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.name} ({self.scope}{', revoked' if self.revoked_at else ''})"

    @property
    def scope(self) -> str:
        """What the token is bound to, in words (the concrete model says)."""
        raise NotImplementedError

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def issue_token(model: type[DaemonToken], prefix: str, name: str, **binding) -> tuple[DaemonToken, str]:
    """A new token of ``model`` bound by ``binding``; the raw value is returned once and only its hash is kept."""
    raw = prefix + secrets.token_urlsafe(32)
    token = model.objects.create(name=name, token_hash=hash_token(raw), token_prefix=raw[:12], **binding)
    return token, raw


def revoke_tokens(model: type[DaemonToken], tokens: Iterable[DaemonToken]) -> int:
    """Revoke the tokens not revoked yet; how many were."""
    return model.objects.filter(pk__in=[t.pk for t in tokens], revoked_at__isnull=True).update(
        revoked_at=timezone.now())


def token_for(model: type[DaemonToken], raw: str, *related: str) -> DaemonToken | None:
    """The active token whose hash matches ``raw`` (None when unknown or revoked)."""
    query = model.objects.filter(token_hash=hash_token(raw))
    if related:
        query = query.select_related(*related)
    token = query.first()
    if token is None or token.revoked_at is not None:
        return None
    return token


def touch_token(token: DaemonToken, now: datetime, *, always: bool = False) -> None:
    """Remember that the token was used (``always``, or when its last use is older than a minute)."""
    if always or token.last_used is None or now - token.last_used > TOUCH_EVERY:
        type(token).objects.filter(pk=token.pk).update(last_used=now)


# --- statuses --------------------------------------------------------------------------------

class IllegalStatusMove(ValueError):
    """A status change the transition map does not allow."""


class StatusMoves:
    """A transition map: ``moves[current]`` are the statuses ``current`` may move to.

    Staying in the same status is not a move: the door leaves the row as it is.
    A LOST daemon is stamped with ``lost_at``; back to ALIVE clears it.
    """

    def __init__(self, what: str, moves: Mapping[str, Iterable[str]]):
        self.what = what
        self.moves = {str(current): frozenset(str(new) for new in news) for current, news in moves.items()}

    def allows(self, current: str, new: str) -> bool:
        return str(new) in self.moves.get(str(current), ())

    def sources(self, new: str) -> frozenset[str]:
        """The statuses that may move to ``new``: the guard of a set-based write."""
        return frozenset(current for current, news in self.moves.items() if str(new) in news)

    def check(self, current: str, new: str) -> None:
        if not self.allows(current, new):
            raise IllegalStatusMove(f"{self.what} cannot move from {current} to {new}")

    def fields(self, new: str, now: datetime) -> dict:
        """The columns a move to ``new`` writes."""
        fields = {"status": str(new), "status_changed": now}
        if new == LOST:
            fields["lost_at"] = now
        elif new == ALIVE:
            fields["lost_at"] = None
        return fields

    def move_fields(self, current: str, new: str, now: datetime) -> dict:
        """The columns to write for a move from ``current`` (checked; empty when it stays)."""
        if str(current) == str(new):
            return {}
        self.check(current, new)
        return self.fields(new, now)

    def update(self, query: models.QuerySet, new: str, now: datetime | None = None) -> int:
        """Move the rows of ``query`` that may move to ``new`` (one guarded ``UPDATE``); how many moved."""
        return query.filter(status__in=self.sources(new)).update(**self.fields(new, now or timezone.now()))


class MovesByMap:
    """Mixin for a model with ``status``/``status_changed``/``lost_at``: ``move_to`` is its status door."""

    status_moves: StatusMoves

    def move_to(self, new: str, now: datetime | None = None) -> bool:
        """Set the new status in memory (the caller saves the row); False when it stays,
        :class:`IllegalStatusMove` when the map refuses the move."""
        fields = self.status_moves.move_fields(self.status, new, now or timezone.now())
        for name, value in fields.items():
            setattr(self, name, value)
        return bool(fields)


def mark_silent_lost(model: type[models.Model], moves: StatusMoves, timeout: timedelta, now: datetime, *,
                     key: str = "pk", never_seen_is_silent: bool = False) -> list:
    """Rows whose last heartbeat is older than ``timeout`` move to LOST, guarded by the
    map (only statuses that may become LOST); returns the ``key`` of each moved row.

    A row whose daemon is calling right now (its row locked by that call) is skipped:
    it is alive, only slow.  ``never_seen_is_silent`` counts a row that never sent a
    heartbeat as silent."""
    silent = Q(last_heartbeat__lt=now - timeout)
    if never_seen_is_silent:
        silent |= Q(last_heartbeat__isnull=True)
    sources = moves.sources(LOST)
    with transaction.atomic():
        keys = list(model.objects.select_for_update(skip_locked=True).filter(silent, status__in=sources)
                    .order_by(key).values_list(key, flat=True))
        if keys:
            model.objects.filter(**{f"{key}__in": keys}, status__in=sources).update(**moves.fields(LOST, now))
    return keys


METRICS_ADDRESS_RE = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]{1,253}):[0-9]{1,5}$"


def metrics_target(reported: str, fallback_host: str) -> str:
    """The ``host:port`` Prometheus scrapes a daemon's ``/metrics`` at, from what it reported
    (already matched against ``METRICS_ADDRESS_RE``): a wildcard bind host (``0.0.0.0``, ``[::]``)
    becomes the daemon's own address; empty stays empty (no metrics endpoint)."""
    if not reported:
        return ""
    host, _, port = reported.rpartition(":")
    if not 1 <= int(port) <= 65535:
        return ""
    if host in ("0.0.0.0", "[::]", "::", "") and fallback_host:
        host = f"[{fallback_host}]" if ":" in fallback_host and not fallback_host.startswith("[") else fallback_host
    return f"{host}:{port}"
