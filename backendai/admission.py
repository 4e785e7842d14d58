"""How many requests of a web process run their Python at once (``WEB_REQUEST_THREADS``).

``backendai.asgi_handler`` runs every HTTP request inside ``running()``; code that makes a request wait
on purpose for something other than the CPU wraps that wait in ``waiting()``.  No Django here: the
plumbing layer, importable from every app.
"""
from __future__ import annotations

import contextlib
import threading


class Admission:
    """At most ``size`` requests of a process run their Python at once; the others wait on a lock.

    Sixteen request threads of one process all runnable at once share one GIL: each hands it over
    at every database round trip and on the interpreter's switch interval, and the hand-overs, the
    lost caches and the kernel's scheduling cost CPU that serves no request (measured:
    docs/performance.md, "API reads").  A request that waits on purpose, not on the CPU (the
    agents' long poll, a session start it waits for, code it runs in a kernel, a file transfer)
    does so inside ``waiting()``, which gives its place to another request meanwhile, so such waits
    never hold the others up.  ``size`` 0: no limit."""

    def __init__(self, size: int):
        self._slots = threading.BoundedSemaphore(size) if size > 0 else None
        self._held = threading.local()

    @contextlib.contextmanager
    def running(self):
        if self._slots is None or getattr(self._held, "slot", False):
            yield
            return
        self._slots.acquire()
        self._held.slot = True
        try:
            yield
        finally:
            self._held.slot = False
            self._slots.release()

    @contextlib.contextmanager
    def waiting(self):
        if self._slots is None or not getattr(self._held, "slot", False):
            yield
            return
        self._held.slot = False
        self._slots.release()
        try:
            yield
        finally:
            self._slots.acquire()
            self._held.slot = True


_admission = Admission(0)


def configure(size: int) -> None:
    """Set the web process's limit (``settings.WEB_REQUEST_THREADS``), before its first request."""
    global _admission
    _admission = Admission(size)


def running():
    """A request's own work (``backendai.asgi_handler`` wraps each request in it)."""
    return _admission.running()


def waiting():
    """A region of a request that waits for something other than the CPU: see ``Admission``.
    Outside a request (a Celery task, a management command) it changes nothing."""
    return _admission.waiting()
