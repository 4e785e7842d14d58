"""The agent sync as a long poll (docs/agent-protocol.md, "Long poll").

A sync that names ``wait`` (seconds) and the ``fingerprint`` of the answer the
agent last applied is recorded as usual (heartbeat, capacity, kernel reports:
``sessions.agent_sync.sync``) and then:

* answered at once when the desired state, after this sync's reports, has
  another fingerprint (something changed, or the agent missed an answer);
* otherwise held until a hint for the agent arrives (``backendai.hints``: a
  poke from the scheduler, a destroy, a restart, from any process) or the wait
  elapses, and answered with the desired state as it is then.

While it waits the request holds no database connection (it gives its
thread's connections back first, ``backendai.db.release_connections``) and no
event-loop time: a held sync costs one waiting thread and, with Redis, one
group membership.  The wait is bounded by ``AGENT_SYNC_MAX_WAIT`` and by half
of ``AGENT_HEARTBEAT_TIMEOUT``, because the heartbeat is recorded at the start
of each sync: an agent whose syncs are held is never marked LOST.

A sync without ``wait`` (or without ``fingerprint``) is answered at once, as
before; every answer carries ``fingerprint`` and ``max_wait`` (0: this manager
never holds a sync).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading

from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from prometheus_client import Gauge

from agents.models import Agent
from backendai import admission, hints, telemetry
from backendai.db import release_connections
from sessions import agent_sync

log = logging.getLogger(__name__)

_ANSWER_META = ("fingerprint", "max_wait")
HELD = Gauge("backendai_agent_syncs_held", "Agent syncs held open right now (the long poll)",
             multiprocess_mode="livesum")
_holding_lock = threading.Lock()
_holding: dict[str, int] = {}


def max_wait() -> float:
    """The longest this manager holds a sync (seconds; 0: never)."""
    return max(0.0, min(float(settings.AGENT_SYNC_MAX_WAIT), settings.AGENT_HEARTBEAT_TIMEOUT / 2))


def effective_wait(requested) -> float:
    try:
        requested = float(requested or 0)
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, min(requested, max_wait()))


def fingerprint(answer: dict) -> str:
    """A digest of everything an answer asks of the agent (list order does not matter)."""
    canonical = {k: v for k, v in answer.items() if k not in _ANSWER_META}
    for key, value in canonical.items():
        if isinstance(value, list):
            canonical[key] = sorted(value, key=lambda item: json.dumps(item, sort_keys=True, default=str))
    raw = json.dumps(canonical, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _finish(answer: dict) -> dict:
    answer["fingerprint"] = fingerprint(answer)
    answer["max_wait"] = max_wait()
    return answer


def held(agent_id: str | None = None) -> int:
    """Syncs this process holds right now (for one agent, or all)."""
    with _holding_lock:
        return _holding.get(agent_id, 0) if agent_id is not None else sum(_holding.values())


def sync(token, payload: dict, peer_address: str, *, wait=None, known: str | None = None) -> dict:
    """``sessions.agent_sync.sync``, held while nothing changed (see the module's docstring)."""
    hints.serves_agents()
    seconds = effective_wait(wait)
    with telemetry.layer_operation("agent", "sync" if seconds <= 0 or not known else "sync_held"):
        if seconds <= 0 or not known:
            return _finish(agent_sync.sync(token, payload, peer_address))
        with admission.waiting():  # a held sync leaves its place to other requests
            return async_to_sync(_held)(token, payload, peer_address, seconds, known)


def _record(token, payload: dict, peer_address: str) -> dict:
    try:
        return _finish(agent_sync.sync(token, payload, peer_address))
    finally:
        release_connections()  # nothing is held while the sync waits


def _again(agent_id: str, first: dict) -> dict:
    """The desired state after a hint, keeping the stop orders the reports of this sync produced."""
    try:
        agent = Agent.objects.filter(pk=agent_id).first()
        if agent is None:
            return first
        answer = agent_sync.desired_state(agent)
    finally:
        release_connections()
    known = {item["kernel_id"] for item in answer["stop"]} | {item["kernel_id"] for item in answer["desired"]}
    answer["stop"] += [item for item in first.get("stop") or [] if item.get("kernel_id") not in known]
    return _finish(answer)


@contextlib.asynccontextmanager
async def _propagating():
    """A held sync is an in-process subscriber of hints (``backendai_event_propagator_*``) and an
    asyncio task in flight (``backendai_async_task_count``)."""
    with telemetry.propagating("agent_sync"), telemetry.async_task("agent_sync_held"):
        yield


async def _held(token, payload: dict, peer_address: str, seconds: float, known: str) -> dict:
    agent_id = payload["agent_id"]
    # subscribe first: a hint that comes while the state is read still ends the wait
    async with hints.Subscription(agent_id) as subscription, _propagating():
        first = await sync_to_async(_record)(token, payload, peer_address)
        if first["fingerprint"] != known:
            return first
        with _holding_lock:
            _holding[agent_id] = _holding.get(agent_id, 0) + 1
        HELD.inc()
        try:
            hinted = await subscription.wait(seconds)
        finally:
            HELD.dec()
            with _holding_lock:
                _holding[agent_id] -= 1
                if not _holding[agent_id]:
                    del _holding[agent_id]
    if not hinted:
        log.debug("agent %s: held sync answered after %.1fs without a change", agent_id, seconds)
        return first
    answer = await sync_to_async(_again)(agent_id, first)
    log.debug("agent %s: held sync answered on a hint (%s)", agent_id,
              "changed" if answer["fingerprint"] != known else "unchanged")
    return answer
