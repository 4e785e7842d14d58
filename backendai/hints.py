"""Hints: "look again now", from any process to whoever holds the agent.

A hint carries no state (the protocol is level-triggered: the agent's next
sync reads everything from the database), so a lost hint costs latency and
nothing else.  :func:`hint_agents` is the one call for "this agent's desired
state changed"; it reaches:

1. long-poll syncs held *in this process* (:class:`Subscription`, a
   thread-safe registry: no event loop or channel layer needed);
2. the agent's channel-layer group (:func:`agent_group`): the agent's link
   consumer, which tells the daemon to sync;
3. with a channel layer that crosses processes (Redis), the agent's *waiter*
   group (:func:`waiter_group`): one listener per web process (a thread with
   its own event loop and its own layer instance, :class:`_Listener`) joins it
   for every agent it holds syncs for and hands the hint to the registry.  One
   long-lived receive per process, rather than one per held sync that is
   cancelled whenever its wait ends;
4. with the in-memory channel layer (the embedded mode) the layer ends at this
   process, so a process that does not serve agents (the Celery worker, where
   the scheduler runs) **relays** the hint over HTTP to the web process:
   ``POST {INTERNAL_WEB_URL}/internal/hints`` (``backendai.api.hints``), signed
   with an HMAC of ``SECRET_KEY`` over the timestamp and the body.  The relay
   is fire-and-forget: one background thread per process, one keep-alive
   connection, a 2 s timeout, pending hints coalesced into one request.

A process learns that it serves agents (so relaying would only reach itself)
the first time it accepts an agent link or a sync (:func:`serves_agents`).

Hand-written rather than a library: what is needed is a few lines on top of
the channel layer and httpx, and the relay exists only because the in-memory
layer cannot cross processes.
"""
from __future__ import annotations

import asyncio
import atexit
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable

from django.conf import settings
from django.utils.crypto import constant_time_compare, salted_hmac

from backendai import telemetry

log = logging.getLogger(__name__)

#: The channel-layer message of a hint (``AgentLinkConsumer.agent_poke`` handles it).
POKE = {"type": "agent.poke"}
#: The message a process's hint listener gets for an agent (``{"type": WAKE_TYPE, "agent": id}``).
WAKE_TYPE = "agent.hint"
RELAY_PATH = "/internal/hints"
TIMESTAMP_HEADER = "X-BackendAI-Hint-Timestamp"
SIGNATURE_HEADER = "X-BackendAI-Hint-Signature"
#: A relayed hint older (or further in the future) than this is refused.
MAX_SKEW = 30
#: Agents named in one relayed request, at most.
MAX_AGENTS = 1000
RELAY_TIMEOUT = 2.0
_SALT = "backendai.hints.relay"
AGENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def agent_group(agent_id: str) -> str:
    """The channel-layer group of an agent's link consumer."""
    return "agent." + hashlib.sha1(agent_id.encode()).hexdigest()[:20]


def waiter_group(agent_id: str) -> str:
    """The channel-layer group of the processes that hold syncs for an agent (their listeners)."""
    return "agentwait." + hashlib.sha1(agent_id.encode()).hexdigest()[:20]


# --- who serves agents ---------------------------------------------------------------------------

_serving = threading.Event()


def serves_agents() -> None:
    """Mark this process as one that holds agent links and syncs: it never relays."""
    _serving.set()


def _in_memory(layer) -> bool:
    from channels.layers import InMemoryChannelLayer

    return layer is None or isinstance(layer, InMemoryChannelLayer)


# --- sending -------------------------------------------------------------------------------------

def hint_agent(agent_id: str) -> None:
    hint_agents([agent_id])


def hint_agents(agent_ids: Iterable[str]) -> None:
    """Tell these agents to sync now, from any process (best effort, never raises)."""
    ids = list(dict.fromkeys(str(a) for a in agent_ids if a))
    if not ids:
        return
    layer = deliver_local(ids)
    if _in_memory(layer) and not _serving.is_set():
        url = getattr(settings, "INTERNAL_WEB_URL", None)
        if url:
            _relay.submit(url, ids)
        elif not _warned_no_url.is_set():
            _warned_no_url.set()
            log.info("hints from this process (pid %d) cannot reach the agents' links: the channel layer is "
                     "in-memory and INTERNAL_WEB_URL is not set; agents see changes at their next sync", os.getpid())


_warned_no_url = threading.Event()


def deliver_local(agent_ids: list[str]):
    """Deliver hints in this process: held syncs, then the channel layer.  Returns the layer."""
    _waiters.notify(agent_ids)
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        return None

    sends = [(agent_group(a), dict(POKE)) for a in agent_ids]
    if not _in_memory(layer):  # held syncs of other processes (their listeners)
        sends += [(waiter_group(a), {"type": WAKE_TYPE, "agent": a}) for a in agent_ids]

    layer_name = "memory" if _in_memory(layer) else "redis"  # backendai_layer_operation_*{operation="hint_send"}

    async def send(group: str, message: dict) -> None:
        with telemetry.layer_operation(layer_name, "hint_send"):
            await layer.group_send(group, message)

    async def send_all():
        results = await asyncio.gather(*(send(group, message) for group, message in sends),
                                       return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            log.debug("could not hint %d of %d agent(s): %s", len(failed), len(agent_ids), failed[0])

    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    try:
        if running is not None:  # called from async code: do not block its loop
            running.create_task(send_all())
        else:
            from asgiref.sync import async_to_sync

            async_to_sync(send_all)()
    except Exception as exc:  # noqa: BLE001 - a lost hint is harmless: agents sync on a timer
        log.debug("could not hint agents %s: %s", agent_ids[:5], exc)
    return layer


# --- the relay's signature -----------------------------------------------------------------------

def signature(body: bytes, timestamp: str, secret: str | None = None) -> str:
    """HMAC-SHA256 (keyed from ``SECRET_KEY`` with a salt of its own) of ``timestamp\\nbody``."""
    return salted_hmac(_SALT, timestamp.encode("ascii") + b"\n" + body, secret=secret or settings.SECRET_KEY,
                       algorithm="sha256").hexdigest()


def signed_headers(body: bytes, now: float | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() if now is None else now))
    return {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(body, timestamp)}


def refusal(body: bytes, timestamp: str | None, sig: str | None, now: float | None = None) -> str | None:
    """Why a relayed hint is refused (None: it is authentic and fresh)."""
    if not timestamp or not sig:
        return "missing hint signature"
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return "malformed hint timestamp"
    if abs((time.time() if now is None else now) - int(timestamp)) > MAX_SKEW:
        return "stale hint timestamp"
    if not constant_time_compare(signature(body, timestamp), sig.strip()):
        return "bad hint signature"
    return None


def parse_relayed(body: bytes) -> list[str]:
    """The agent ids of a relayed hint body ``{"agents": [...]}``; raises ValueError naming the problem."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("the body is not JSON") from None
    if not isinstance(data, dict) or set(data) != {"agents"}:
        raise ValueError('expected {"agents": [agent ids]}')
    agents = data["agents"]
    if not isinstance(agents, list) or not 0 < len(agents) <= MAX_AGENTS:
        raise ValueError(f"agents must be a list of 1 to {MAX_AGENTS} agent ids")
    for agent_id in agents:
        if not isinstance(agent_id, str) or not AGENT_ID.fullmatch(agent_id):
            raise ValueError("agents: each must be an agent id (1-64 letters, digits, '.', '_' or '-')")
    return list(dict.fromkeys(agents))


# --- the relay -----------------------------------------------------------------------------------

class _Relay:
    """One background thread per process POSTs pending hints to the web process."""

    def __init__(self):
        self._cond = threading.Condition()
        self._pending: dict[str, dict[str, None]] = {}  # url -> agent ids (ordered set)
        self._pid: int | None = None
        self._failing = False
        self.sent = 0

    def submit(self, url: str, agent_ids: list[str]) -> None:
        with self._cond:
            self._pending.setdefault(url, {}).update(dict.fromkeys(agent_ids))
            self._start()
            self._cond.notify()

    def start(self) -> None:
        """Start the thread (and its HTTP client) before the first hint (see :func:`warm_relay`)."""
        with self._cond:
            self._start()

    def _start(self) -> None:
        if self._pid != os.getpid():  # first use, or a forked child: the parent's thread is not here
            self._pid = os.getpid()
            threading.Thread(target=self._run, name="hint-relay", daemon=True).start()

    def _take(self, timeout: float | None) -> dict[str, list[str]]:
        with self._cond:
            if not self._pending:
                self._cond.wait(timeout)
            batch = {url: list(ids) for url, ids in self._pending.items()}
            self._pending.clear()
            return batch

    def _run(self) -> None:
        import httpx

        client = httpx.Client(timeout=httpx.Timeout(RELAY_TIMEOUT, connect=1.0), trust_env=False)
        while True:
            for url, ids in self._take(None).items():
                self._post(client, url, ids)

    def _post(self, client, url: str, ids: list[str]) -> None:
        for start in range(0, len(ids), MAX_AGENTS):
            chunk = ids[start:start + MAX_AGENTS]
            body = json.dumps({"agents": chunk}).encode()
            try:
                response = client.post(url + RELAY_PATH, content=body, headers=signed_headers(body))
                ok = response.status_code == 204
                problem = f"HTTP {response.status_code}"
            except Exception as exc:  # noqa: BLE001 - fire and forget
                ok, problem = False, f"{type(exc).__name__}: {exc}"
            if ok:
                self.sent += 1
                if self._failing:
                    log.info("relaying hints to %s works again", url)
                self._failing = False
                log.debug("relayed a hint for %d agent(s) to %s", len(chunk), url)
            else:
                level = logging.DEBUG if self._failing else logging.WARNING
                self._failing = True
                log.log(level, "could not relay a hint for agents %s to %s (%s); they see the change at their "
                               "next sync", chunk[:5], url, problem)

    def flush(self, timeout: float = 1.0) -> None:
        """Send what is pending from this thread (at exit: the daemon thread may not get to it)."""
        if self._pid != os.getpid():
            return
        with self._cond:
            batch = {url: list(ids) for url, ids in self._pending.items()}
            self._pending.clear()
        if not batch:
            return
        import httpx

        with httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 1.0)), trust_env=False) as client:
            for url, ids in batch.items():
                self._post(client, url, ids)


_relay = _Relay()
atexit.register(_relay.flush)


def warm_relay() -> None:
    """In a process that would relay (the Celery worker of the embedded mode), start the relay's
    thread and HTTP client now: the first session after a start no longer waits for them."""
    from channels.layers import get_channel_layer

    try:
        if getattr(settings, "INTERNAL_WEB_URL", None) and not _serving.is_set() and _in_memory(get_channel_layer()):
            _relay.start()
    except Exception as exc:  # noqa: BLE001 - the first hint starts it
        log.debug("could not start the hint relay: %s", exc)


# --- waiting for a hint (the long poll) ----------------------------------------------------------

class _Waiters:
    def __init__(self):
        self._lock = threading.Lock()
        self._by_agent: dict[str, set[Subscription]] = {}

    def add(self, sub: Subscription) -> None:
        with self._lock:
            self._by_agent.setdefault(sub.agent_id, set()).add(sub)

    def remove(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._by_agent.get(sub.agent_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_agent[sub.agent_id]

    def notify(self, agent_ids: Iterable[str]) -> None:
        with self._lock:
            subs = [s for a in agent_ids for s in self._by_agent.get(a, ())]
        for sub in subs:
            sub.wake()

    def count(self, agent_id: str | None = None) -> int:
        with self._lock:
            if agent_id is not None:
                return len(self._by_agent.get(agent_id, ()))
            return sum(len(s) for s in self._by_agent.values())


_waiters = _Waiters()


def waiting(agent_id: str | None = None) -> int:
    """How many subscriptions (held syncs) wait in this process, for one agent or in all."""
    return _waiters.count(agent_id)


class _Listener:
    """The one receiver of a web process for hints sent by other processes (a Redis channel layer).

    It runs in a daemon thread with an event loop and a channel-layer instance
    of its own, so it never competes with daphne's consumers for the shared
    layer's receive, and its channel joins the waiter group of every agent this
    process holds a sync for (memberships are kept: a later sync for the same
    agent needs them again, and channels_redis expires them after a day)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._pid: int | None = None
        self.channel: str | None = None
        self.received = 0

    def started(self) -> str | None:
        """The listener's channel when it runs in this process already."""
        return self.channel if self._pid == os.getpid() and self._ready.is_set() else None

    def channel_name(self, timeout: float = 5.0) -> str | None:
        """The listener's channel (starting it on first use); None if it could not start in time."""
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._ready.clear()
                self.channel = None
                threading.Thread(target=self._thread, name="hint-listener", daemon=True).start()
        self._ready.wait(timeout)
        return self.channel

    def _thread(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

        layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
        self.channel = await layer.new_channel()
        self._ready.set()
        failures = 0
        while True:
            try:
                message = await layer.receive(self.channel)
                failures = 0
            except Exception as exc:  # noqa: BLE001 - Redis away for a while: held syncs end at their wait
                failures += 1
                delay = min(30.0, 0.5 * 2 ** min(failures, 6))
                log.log(logging.WARNING if failures == 1 else logging.DEBUG,
                        "the hint listener cannot receive (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            if isinstance(message, dict) and message.get("type") == WAKE_TYPE and isinstance(message.get("agent"), str):
                self.received += 1
                _waiters.notify([message["agent"]])


_listener = _Listener()


class Subscription:
    """``async with Subscription(agent_id) as sub: ... await sub.wait(timeout)``.

    Subscribe *before* reading the state a hint would change, so that no hint
    falls between the read and the wait.  Hints sent in this process arrive
    through the registry; with a channel layer that crosses processes (Redis)
    the process's listener also joins the agent's waiter group.  It holds no
    database connection and no thread while it waits."""

    def __init__(self, agent_id: str):
        self.agent_id = agent_id
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def wake(self) -> None:
        """Called from any thread."""
        loop, event = self._loop, self._event
        if loop is None or event is None:
            return
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:  # its loop is closed: nobody waits any more
            pass

    @property
    def hinted(self) -> bool:
        return self._event is not None and self._event.is_set()

    async def __aenter__(self) -> Subscription:
        from channels.layers import get_channel_layer

        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        _waiters.add(self)
        layer = get_channel_layer()
        if not _in_memory(layer):
            try:
                channel = _listener.started()
                if channel is None:  # the first held sync of this process: start the listener (no blocking here)
                    channel = await self._loop.run_in_executor(None, _listener.channel_name)
                if channel is None:
                    raise RuntimeError("the hint listener did not start")
                await layer.group_add(waiter_group(self.agent_id), channel)
            except Exception as exc:  # noqa: BLE001 - then only this process's hints wake it
                log.warning("agent %s: cannot subscribe to hints on the channel layer (%s); a held sync "
                            "answers at the end of its wait", self.agent_id, exc)
        return self

    async def __aexit__(self, *exc_info) -> None:
        _waiters.remove(self)

    async def wait(self, timeout: float) -> bool:
        """True when a hint came (possibly before the call), False when ``timeout`` elapsed."""
        try:
            await asyncio.wait_for(self._event.wait(), max(0.0, timeout))
            return True
        except asyncio.TimeoutError:
            return self._event.is_set()
