"""Hints to workers: "sync now", pushed after a commit.  Fire and forget: a worker
also re-reads its table on a timer, so a lost hint costs a few seconds, never a route."""
from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor

import httpx
from django.db import transaction

from appproxy import tokens
from appproxy.models import Worker

log = logging.getLogger(__name__)


_hint_pool: ThreadPoolExecutor | None = None


def _post_hint(authority: str, url: str, secret: str, revision: int) -> None:
    body = json.dumps({"revision": revision}).encode()
    try:
        httpx.post(url, content=body, timeout=2.0, headers={
            "Content-Type": "application/json", "X-AppProxy-Signature": tokens.sign_hint(secret, body)})
    except httpx.HTTPError as exc:
        log.debug("hint to proxy worker %s at %s failed: %s (it resyncs on its timer)", authority, url, exc)


def send_hint(authority: str, url: str, secret: str, revision: int) -> None:
    """Fire and forget: a lost hint is harmless."""
    global _hint_pool
    if _hint_pool is None:
        _hint_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="appproxy-hint")
    _hint_pool.submit(_post_hint, authority, url, secret, revision)


def hint_worker(worker_id) -> None:
    """After the current transaction commits, tell the worker to sync now."""
    def push():
        row = Worker.objects.filter(pk=worker_id).values("authority", "hint_url", "secret", "revision").first()
        if row and row["hint_url"]:
            send_hint(row["authority"], row["hint_url"], row["secret"], row["revision"])

    transaction.on_commit(push)
