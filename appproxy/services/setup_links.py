"""Setup links: the one-time URL that opens an app on its worker (which then sets the
app's permit cookie), issued here and redeemed by the worker exactly once."""
from __future__ import annotations

import logging
from datetime import timedelta

from django.utils import timezone

from appproxy import tokens
from appproxy.models import Circuit, SetupToken, WorkerToken
from appproxy.services.exceptions import SetupTokenInvalid, SetupTokenUsed
from appproxy.services.serialise import frontend_url
from appproxy.services.timeouts import setup_token_ttl
from appproxy.services.worker_tokens import check_token_allows, touch_token
from appproxy.services.workers import get_worker

log = logging.getLogger(__name__)


def issue_setup(circuit: Circuit, user, redirect: str = "/") -> dict:
    """A one-time setup URL for ``user`` on the circuit's worker (valid for a short while)."""
    worker = circuit.worker
    issued = timezone.now()
    ttl = setup_token_ttl()
    token = tokens.make_setup_token(worker.secret, str(circuit.pk), str(user.pk), ttl, redirect,
                                    now=issued.timestamp())
    # the row is the link's memory: a worker redeems it once (redeem_setup_token), whatever restarts
    SetupToken.objects.create(token_hash=tokens.token_digest(token), worker=worker, circuit=circuit,
                              user_id=str(user.pk), expires_at=issued + timedelta(seconds=ttl + 1))
    api = worker.api_endpoint.rstrip("/")
    return {"token": token, "wsproxy_addr": api, "url": f"{api}/setup?token={token}",
            "circuit_id": str(circuit.pk), "app": circuit.app, "protocol": circuit.protocol,
            "app_url": frontend_url(circuit, worker)}


def redeem_setup_token(token: WorkerToken, authority: str, raw: str) -> dict:
    """A worker redeems a setup link: the claims of a valid link issued for this worker,
    used for the first time now; :class:`SetupTokenUsed` when it was used before (by any
    worker, before any restart), :class:`SetupTokenInvalid` when it is forged, expired or
    unknown.  One guarded ``UPDATE`` marks it used, so two redemptions can't both win."""
    check_token_allows(token, authority)
    worker = get_worker(authority)
    try:
        claims = tokens.verify(worker.secret, "setup", raw)
    except tokens.TokenError as exc:
        raise SetupTokenInvalid(f"This app link is not valid ({exc})") from None
    now = timezone.now()
    digest = tokens.token_digest(raw)
    won = SetupToken.objects.filter(token_hash=digest, worker=worker, used_at__isnull=True,
                                    expires_at__gt=now).update(used_at=now)
    if not won:
        row = SetupToken.objects.filter(token_hash=digest, worker=worker).only("used_at").first()
        if row is not None and row.used_at is not None:
            log.warning("proxy worker %s: setup link for circuit %s replayed (used at %s)", authority,
                        claims.circuit, row.used_at.isoformat())
            raise SetupTokenUsed("This app link was already used. Open the app again from the session page.")
        raise SetupTokenInvalid("This app link is not known (it expired or its app was closed)")
    touch_token(token, now)
    return {"circuit": claims.circuit, "user": claims.user, "expires": claims.expires, "redirect": claims.redirect}
