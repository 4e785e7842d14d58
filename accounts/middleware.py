"""The web UI's per-user middleware (after ``AuthenticationMiddleware``): on the UI's pages
(``/ui/``, ``/admin/``; never the API, never static files)

* a user whose administrator set "must change password" (``User.need_password_change``) is
  sent to the change-password page from every page but that one and logging out, until they
  change it (which clears the flag: ``accounts.services.profile.set_password``); an htmx request
  is told to load that page (``HX-Redirect``) instead of swapping it into a fragment;
* the user's preferred language and time zone (``accounts.services.preferences``) are
  activated for the request, so dates render in their zone.

The preferences come with the user (the login backend selects them along): no query more.
Reading the user is the request's first query here, so a database that can't serve it now is
answered with ``backendai.api.unavailable``'s 503 from this middleware (nothing below has run)."""
from __future__ import annotations

import logging
import zoneinfo

from django.http import HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone, translation

from accounts.services import preferences
from backendai import requestctx
from backendai.api import unavailable
from backendai.api.middleware import is_api_path

log = logging.getLogger("accounts.middleware")

UI_PREFIXES = ("/ui/", "/admin/")


def is_ui_page(path: str) -> bool:
    return path.startswith(UI_PREFIXES) and not is_api_path(path)


class UserPreferencesMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self._exempt: frozenset[str] | None = None

    def exempt_paths(self) -> frozenset[str]:
        """Where a user who must change their password may still go."""
        if self._exempt is None:
            self._exempt = frozenset({reverse("ui:password"), reverse("ui:logout"), reverse("ui:login"),
                                      reverse("admin:logout")})
        return self._exempt

    def __call__(self, request):
        if not is_ui_page(request.path):
            return self.get_response(request)
        user = getattr(request, "user", None)
        try:  # the request's first query (the login session, the user): no connection now is a 503
            authenticated = user is not None and user.is_authenticated
        except Exception as exc:
            refused = unavailable.refusal_for(request, exc)
            if refused is None:
                raise
            return refused
        if not authenticated:
            return self.get_response(request)
        requestctx.bind(user_id=user.pk)  # the page's log lines name the user (docs/observability.md)
        if user.need_password_change and request.path not in self.exempt_paths():
            return self._to_password_page(request, user)
        prefs = preferences.preferences_for(user)
        try:
            zone = zoneinfo.ZoneInfo(prefs.time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            zone = None
        if zone is not None:
            timezone.activate(zone)
        translation.activate(prefs.language)
        request.LANGUAGE_CODE = translation.get_language()
        try:
            response = self.get_response(request)
        finally:
            timezone.deactivate()
            translation.deactivate()
        response.headers.setdefault("Content-Language", prefs.language)
        return response

    def _to_password_page(self, request, user):
        target = reverse("ui:password")
        log.info("user %s must change their password: %s %s sent to %s", user.pk, request.method,
                 request.path, target)
        if request.headers.get("HX-Request"):
            response = HttpResponse(status=200)
            response["HX-Redirect"] = target
            return response
        return redirect(target)
