"""The app proxy's signing scheme, shared by the coordinator and the worker.

Pure Python (no Django): the standalone worker imports it too.

Two kinds of signed values, both ``<base64url(JSON claims)>.<base64url(HMAC-SHA256)>``
made with the worker's secret (handed to the worker at registration, kept in
the coordinator's database):

* the **setup token** (``purpose = "setup"``): short-lived, one-time, bound to a
  circuit and the user it was issued to; it travels in the setup URL;
* the **permit** (``purpose = "permit"``): the value of the cookie the worker
  sets at setup, bound to the same user and circuit, living days;
* the **endpoint token** (``purpose = "endpoint"``): a model-serving endpoint's API token,
  signed with the inference circuit's own ``token_secret`` (not the worker's secret) and
  bound to the endpoint id (the ``circuit`` claim) and the user it was issued to.

The purpose is part of the signed message, so a permit is never accepted as a
setup token or the other way round.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

__all__ = ["Claims", "TokenError", "PERMIT_COOKIE_PREFIX", "permit_cookie_name", "sign", "verify",
           "make_setup_token", "make_permit", "make_endpoint_token", "verify_endpoint_token", "sign_hint", "verify_hint", "redirect_problem", "token_digest"]

PERMIT_COOKIE_PREFIX = "appproxy_permit_"
MAX_TOKEN_LENGTH = 2048
MAX_REDIRECT_LENGTH = 1024


class TokenError(ValueError):
    """A token or permit that must be refused; the message says why (shown to the user)."""


@dataclass(frozen=True)
class Claims:
    circuit: str
    user: str
    expires: float
    nonce: str = ""
    redirect: str = "/"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, purpose: str, body: str) -> bytes:
    return hmac.new(secret.encode(), f"{purpose}.{body}".encode(), hashlib.sha256).digest()


def sign(secret: str, purpose: str, claims: dict) -> str:
    body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    return f"{body}.{_b64(_mac(secret, purpose, body))}"


def verify(secret: str, purpose: str, token: str, now: float | None = None) -> Claims:
    """The claims of a valid, unexpired ``token``; :class:`TokenError` otherwise."""
    if not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
        raise TokenError("malformed token")
    body, _, signature = token.partition(".")
    try:
        given = _unb64(signature)
    except (ValueError, TypeError):
        raise TokenError("malformed token") from None
    if not hmac.compare_digest(given, _mac(secret, purpose, body)):
        raise TokenError("bad signature")
    try:
        data = json.loads(_unb64(body))
        claims = Claims(circuit=str(data["c"]), user=str(data["u"]), expires=float(data["e"]),
                        nonce=str(data.get("n", "")), redirect=str(data.get("r", "/")))
    except (ValueError, TypeError, KeyError):
        raise TokenError("malformed token") from None
    if claims.expires < (time.time() if now is None else now):
        raise TokenError("expired")
    return claims


def redirect_problem(redirect: object) -> str | None:
    """Why ``redirect`` is not a safe same-origin path for the setup redirect (None: it is).

    The value ends up in a ``Location`` header after the app's origin, so it must
    be a path: one leading ``/`` (never ``//`` or ``/\\``, which browsers read as
    another host), printable ASCII only (no CR/LF or other control characters,
    no spaces, no backslashes; percent-encode anything else), and not too long.
    """
    if not isinstance(redirect, str) or not redirect:
        return "must be a path starting with '/'"
    if len(redirect) > MAX_REDIRECT_LENGTH:
        return f"must be at most {MAX_REDIRECT_LENGTH} characters"
    if any(not 0x21 <= ord(ch) <= 0x7E for ch in redirect):
        return "must be printable ASCII without spaces or control characters (percent-encode the rest)"
    if "\\" in redirect:
        return "must not contain backslashes"
    if not redirect.startswith("/") or redirect.startswith("//"):
        return "must be a path on the app's own site, starting with a single '/'"
    return None


def token_digest(token: str) -> str:
    """The SHA-256 of a token: how the coordinator remembers a setup token without keeping it."""
    return hashlib.sha256(token.encode()).hexdigest()


def make_setup_token(secret: str, circuit: str, user: str, ttl: float, redirect: str = "/",
                     now: float | None = None) -> str:
    problem = redirect_problem(redirect)
    if problem:
        raise ValueError(f"redirect {problem}")
    issued = time.time() if now is None else now
    return sign(secret, "setup", {"c": circuit, "u": user, "e": int(issued + ttl), "n": secrets.token_hex(8),
                                  "r": redirect})


def make_permit(secret: str, circuit: str, user: str, ttl: float, now: float | None = None) -> str:
    issued = time.time() if now is None else now
    return sign(secret, "permit", {"c": circuit, "u": user, "e": int(issued + ttl)})


def make_endpoint_token(secret: str, endpoint_id, user, ttl: float, now: float | None = None) -> str:
    """An API token for a model-serving endpoint: ``Authorization: BackendAI <token>`` (or
    ``Bearer``) at the endpoint's URL.  ``ttl`` seconds from ``now``; a nonce keeps two tokens
    issued in the same second distinct."""
    if not secret:
        raise ValueError("an endpoint token needs the circuit's token secret")
    issued = time.time() if now is None else now
    return sign(secret, "endpoint", {"c": str(endpoint_id), "u": str(user), "e": int(issued + ttl),
                                     "n": secrets.token_hex(8)})


def verify_endpoint_token(secret: str, endpoint_id: str, token: str, now: float | None = None) -> Claims:
    """The claims of a valid, unexpired endpoint token for ``endpoint_id``; :class:`TokenError` otherwise."""
    if not secret:
        raise TokenError("the endpoint takes no tokens")
    claims = verify(secret, "endpoint", token, now)
    if claims.circuit != str(endpoint_id):
        raise TokenError("the token is for another endpoint")
    return claims


def permit_cookie_name(circuit: str) -> str:
    """One cookie per circuit: in port mode all circuits share the host, and cookies ignore ports."""
    return PERMIT_COOKIE_PREFIX + circuit.replace("-", "")


def sign_hint(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """``X-AppProxy-Signature`` of a coordinator → worker hint: ``t=<unix>,s=<hex hmac>``."""
    when = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"hint.{when}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={when},s={mac}"


def verify_hint(secret: str, body: bytes, header: str, max_skew: float = 300, now: float | None = None) -> bool:
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        when = int(fields["t"])
        given = fields["s"]
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - when) > max_skew:
        return False
    expected = hmac.new(secret.encode(), f"hint.{when}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(given, expected)
