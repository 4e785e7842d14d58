"""Browser hardening that Django's own settings can't express per request.

* Every response says ``X-Frame-Options: DENY`` (also the ones that leave
  before ``XFrameOptionsMiddleware``, such as static files and refused API
  calls); ``nosniff`` and ``Referrer-Policy`` come from Django's
  ``SecurityMiddleware`` and the Content-Security-Policy from django-csp.
* Cookies (session, CSRF, messages) are marked ``Secure`` when
  ``settings.SECURE_COOKIES`` is on OR this request came over TLS
  (``request.is_secure()``, which believes ``X-Forwarded-Proto`` only from a
  trusted proxy).  Django's ``SESSION_COOKIE_SECURE`` is one static value; a
  deployment reached over both http (a local health check) and https (users
  through the proxy) needs the per-request answer.
* ``allow_form_targets(response, origins)``: a page whose forms post to a
  view that redirects to another origin (the app proxy's setup link) lists
  those origins in its ``form-action``, since browsers check redirects of a
  form submission against the page's ``form-action``.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings


def _harden(request, response):
    if "X-Frame-Options" not in response:
        response["X-Frame-Options"] = "DENY"
    if response.cookies and (settings.SECURE_COOKIES or request.is_secure()):
        for morsel in response.cookies.values():
            morsel["secure"] = True
    return response


class BrowserHardeningMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        return _harden(request, self.get_response(request))

    async def __acall__(self, request):
        return _harden(request, await self.get_response(request))


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an absolute http(s) URL, else None."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c in parts.netloc for c in " ;,'\"\r\n"):
        return None
    return f"{parts.scheme}://{parts.netloc}"


def allow_form_targets(response, urls) -> None:
    """Add the origins of ``urls`` to this response's CSP ``form-action`` (django-csp's update hook)."""
    origins = sorted({o for o in (origin_of(u) for u in urls) if o})  # "host:*" and "*.domain" pass as they are
    if not origins:
        return
    update = dict(getattr(response, "_csp_update", None) or {})
    update["form-action"] = list(update.get("form-action", [])) + origins
    response._csp_update = update
