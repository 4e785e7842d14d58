"""Sequencers: in which order the pending sessions of the top priority band are
tried (reference §3.1).  Each session is tried at most once per pass; a session
that cannot be placed never stops the sessions behind it.

* ``fifo``: oldest first.  With ``config.num_retries_to_skip = N > 0``,
  sessions that already failed N or more passes go behind the others (so a
  session that cannot fit does not get the first claim on capacity freed for
  the queue behind it), still oldest first among themselves.
* ``lifo``: newest first.
* ``drf``: dominant resource fairness between access keys.  A key's dominant
  share is the largest, over the slots, of its sessions' summed usage in this
  scaling group divided by the group's capacity; the key with the smallest
  share goes next (ties: the key whose oldest pending session is older) with
  its oldest pending session, and its share grows as soon as that session is
  placed, so one pass alternates fairly.  Backend.AI 24.09 keeps the *maximum*
  of per-session shares instead of the sum; the sum is the textbook DRF and is
  what makes "a user with many running sessions waits behind a user with none"
  hold.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
import heapq
from collections import deque
from collections.abc import Iterator

NAMES = ("fifo", "lifo", "drf")


class Sequencer(ABC):
    """Yields pending sessions one by one; told what happened to each."""

    def __init__(self, sessions: list):
        self.sessions = sessions

    @abstractmethod
    def __iter__(self) -> Iterator:
        """The sessions in the order this policy tries them."""

    def placed(self, session) -> None:
        """Called when ``session`` was placed (DRF raises its owner's share)."""


class FIFO(Sequencer):
    def __init__(self, sessions: list, num_retries_to_skip: int = 0):
        super().__init__(sessions)
        self.num_retries_to_skip = max(int(num_retries_to_skip or 0), 0)

    def __iter__(self):
        ordered = sorted(self.sessions, key=lambda s: (s.created_at, str(s.id)))
        n = self.num_retries_to_skip
        if n <= 0:
            return iter(ordered)
        head = [s for s in ordered if s.retries < n]
        skipped = [s for s in ordered if s.retries >= n]
        return iter(head + skipped)


class LIFO(Sequencer):
    def __iter__(self):
        return iter(sorted(self.sessions, key=lambda s: (s.created_at, str(s.id)), reverse=True))


class DRF(Sequencer):
    """``usage``: access key -> current usage vector in this group; ``capacity``:
    the group's total capacity vector (both in the pass's slot space)."""

    def __init__(self, sessions: list, usage: dict, capacity: tuple):
        super().__init__(sessions)
        self.capacity = capacity
        self.usage = {k: list(v) for k, v in usage.items()}
        self.queues: dict[str, deque] = {}
        for s in sorted(sessions, key=lambda s: (s.created_at, str(s.id))):
            self.queues.setdefault(s.access_key or "", deque()).append(s)

    def share(self, key: str) -> float:
        usage = self.usage.get(key)
        if not usage:
            return 0.0
        best = 0.0
        for used, cap in zip(usage, self.capacity):
            if cap and cap != float("inf") and used:
                best = max(best, used / cap)
        return best

    def __iter__(self):
        heap = [(self.share(k), q[0].created_at, str(q[0].id), k) for k, q in self.queues.items()]
        heapq.heapify(heap)
        while heap:
            _, _, _, key = heapq.heappop(heap)
            queue = self.queues[key]
            session = queue.popleft()
            yield session  # the dispatcher decides, calling placed() on success, before we resume
            if queue:
                heapq.heappush(heap, (self.share(key), queue[0].created_at, str(queue[0].id), key))

    def placed(self, session) -> None:
        key = session.access_key or ""
        usage = self.usage.setdefault(key, [0] * len(self.capacity))
        for d, v in enumerate(session.request):
            usage[d] += v


def make(name: str, sessions: list, *, num_retries_to_skip: int = 0, usage: dict | None = None,
         capacity: tuple | None = None) -> Sequencer:
    if name == "lifo":
        return LIFO(sessions)
    if name == "drf":
        return DRF(sessions, usage or {}, capacity or ())
    return FIFO(sessions, num_retries_to_skip)
