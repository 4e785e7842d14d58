"""Session mode: the API with the login cookie instead of a signature.

Backend.AI's webserver lets a client log in once (``POST /server/login``,
``accounts.api.webserver``) and then call the manager API under ``/func/``
with the session cookie it got; the official client does this when
``BACKEND_ENDPOINT_TYPE=session``.  ``backendai.urls`` serves every API route
a second time under ``/func/`` (the same views, the same permission rules),
and ``WebSessionAuthentication`` (in ``REST_FRAMEWORK``'s authentication
classes, after the signature) accepts the cookie there and nowhere else: the
signed API at the root never reads cookies.

The cookie is Django's session cookie, so a browser logged in to the web UI
holds one too.  A cookie-authenticated call must not be forgeable from another
site (CSRF), so it is refused unless

* it carries ``X-BackendAI-Version`` (the client sends it on every call; a
  cross-site form cannot set a header, and a cross-site script that sets one
  needs a CORS preflight this server never grants), and
* its ``Origin`` (sent by browsers) names this server's host or is one of
  ``CSRF_TRUSTED_ORIGINS``, and ``Sec-Fetch-Site`` (sent by browsers), if
  present, is ``same-origin`` or ``none``.

The keypair of a cookie session is the one ``/server/login`` chose (stored in
the session), else the user's main keypair; it passes the same checks as a
signed call (``accounts.api.authentication.admit``: active keypair and user,
allowed client address, rate limit).
"""
from __future__ import annotations

import logging
from urllib.parse import urlsplit

from django.conf import settings
from rest_framework.authentication import BaseAuthentication

from accounts import services as accounts_services
from accounts.api.authentication import admit
from backendai.api import errors

log = logging.getLogger(__name__)

#: Where the API is served for cookie sessions (the client prefixes every path but ``/server/*``).
FUNC_PREFIX = "/func/"
#: The session key holding the access key ``/server/login`` chose.
ACCESS_KEY_SESSION_KEY = "backendai_access_key"
SAFE_FETCH_SITES = ("same-origin", "none")


def is_session_mode(request) -> bool:
    """Whether ``request`` (Django's or DRF's) came in under ``/func/``."""
    return getattr(request, "path", "").startswith(FUNC_PREFIX)


def _names_this_host(origin: str, request) -> bool:
    """``origin`` is this server's host under either scheme (a TLS proxy in front may hide the
    scheme from us), as the websockets check it (``sessions.streams``)."""
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False
    return bool(netloc) and netloc == request.get_host().lower()


def cross_site_reason(request) -> str | None:
    """Why a browser may have been made to send this request from another site, or None.

    ``Origin`` and ``Sec-Fetch-Site`` are set by browsers and cannot be forged by a page;
    a non-browser client (the official CLI) sends neither."""
    meta = request.META
    origin = meta.get("HTTP_ORIGIN")
    if origin is not None:
        trusted = {value.lower().rstrip("/") for value in (settings.CSRF_TRUSTED_ORIGINS or [])}
        given = origin.lower().rstrip("/")
        if not _names_this_host(given, request) and given not in trusted:
            # "null" (a sandboxed frame, a redirect) and foreign origins alike
            return f"a request from another site ({origin[:100]}) may not use the login cookie"
    fetch_site = meta.get("HTTP_SEC_FETCH_SITE")
    if fetch_site is not None and fetch_site.lower() not in SAFE_FETCH_SITES:
        return f"a {fetch_site[:20]} request may not use the login cookie"
    return None


def session_keypair(request, user):
    """The keypair a cookie session acts with: the one its login chose, else the user's main one."""
    session = getattr(request, "session", None)
    access_key = session.get(ACCESS_KEY_SESSION_KEY) if session is not None else None
    if access_key:
        keypair = accounts_services.keypair_for_authentication(access_key)
        if keypair is not None and keypair.user_id == user.pk:
            return keypair
    return user.main_keypair


class WebSessionAuthentication(BaseAuthentication):
    """The login cookie, under ``/func/`` only (see the module docstring)."""

    def authenticate_header(self, request):
        return "Cookie"  # a 401 here means "log in first" (DRF answers 401 only with a challenge)

    def authenticate(self, request):
        django_request = getattr(request, "_request", request)
        if not is_session_mode(django_request):
            return None
        user = getattr(django_request, "user", None)  # django.contrib.auth's middleware, from the cookie
        if user is None or not user.is_authenticated:
            return None
        reason = cross_site_reason(django_request)
        if reason is None and not django_request.META.get("HTTP_X_BACKENDAI_VERSION"):
            reason = "a call with the login cookie must carry the X-BackendAI-Version header"
        if reason is not None:
            log.info("cookie session of user %s refused on %s: %s", user.pk, django_request.path, reason)
            raise errors.InsufficientPrivilege(f"Refused: {reason}.")
        keypair = session_keypair(django_request, user)
        if keypair is None:
            raise errors.AuthorizationFailed("The user has no keypair.")
        return admit(request, keypair)
