"""Worker tokens: the credentials proxy workers call the coordinator with.  The
model-independent half (hashing, issuing, lookup) is ``backendai.daemons``, shared with agents."""
from __future__ import annotations

import logging
from datetime import datetime

from appproxy.models import WorkerToken
from backendai import daemons
from backendai.api import errors

log = logging.getLogger(__name__)

TOKEN_PREFIX = "bpt_"


hash_token = daemons.hash_token


def issue_token(name: str, *, authority: str = "") -> tuple[WorkerToken, str]:
    """A new worker token; the raw value is returned once and only its hash is kept."""
    token, raw = daemons.issue_token(WorkerToken, TOKEN_PREFIX, name, authority=authority)
    log.info("issued proxy worker token %s (%s)", token.pk, token)
    return token, raw


def revoke_tokens(tokens_) -> int:
    return daemons.revoke_tokens(WorkerToken, tokens_)


def token_for(raw: str) -> WorkerToken | None:
    return daemons.token_for(WorkerToken, raw)


def check_token_allows(token: WorkerToken, authority: str) -> None:
    if token.authority and token.authority != authority:
        raise errors.GenericForbidden(f"This token is bound to worker {token.authority}")


def touch_token(token: WorkerToken, now: datetime) -> None:
    daemons.touch_token(token, now)
