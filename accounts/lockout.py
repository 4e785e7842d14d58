"""Brute-force protection of every password login, with django-axes.

The web login form and the Django admin's login go through
``django.contrib.auth.authenticate``, where ``AxesStandaloneBackend`` (first
in ``AUTHENTICATION_BACKENDS``) refuses a locked-out account or address and
axes' signal handlers count the failures.  ``POST /auth/authorize`` checks the
password in ``accounts.services.authorize``; ``guarded_authorize`` wraps it
with the same axes bookkeeping, so all three doors share one counter.

``settings.LOGIN_FAILURE_LIMIT`` failures for one account (from any address)
or from one client address (for any account) lock that account / address for
``settings.LOGIN_LOCKOUT_SECONDS``; a correct password is refused meanwhile.
The settings wire these callables into axes:

* ``login_name``: the e-mail, trimmed and lower-cased (logins are
  case-insensitive, so are the counters);
* ``client_ip``: the peer address, believing forwarded headers only from
  ``TRUSTED_PROXIES`` (``backendai.api.authentication.client_address``);
* ``lockout_response``: problem+json 429 ``rate-limit-exceeded`` on API
  paths, the login form again with the message on web and admin pages.
"""
from __future__ import annotations

from axes.handlers.proxy import AxesProxyHandler
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.shortcuts import render

from accounts import services
from accounts.forms import LoginForm
from backendai.api import errors
from backendai.api.authentication import client_address
from backendai.api.middleware import is_api_path

LOCKOUT_TITLE = "Too many failed logins."


def lockout_message() -> str:
    minutes = max(1, round(settings.LOGIN_LOCKOUT_SECONDS / 60))
    return (f"Too many failed logins for this account or from this address. Logging in is blocked for "
            f"{minutes} minute{'s' if minutes != 1 else ''}; try again later.")


def login_name(request, credentials=None) -> str | None:
    credentials = credentials or {}
    value = credentials.get("username") or credentials.get("email")
    if value is None and request is not None and request.method == "POST":
        value = request.POST.get("username")
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip().lower()[:255]


def client_ip(request) -> str | None:
    return client_address(request) or None


def _django_request(request):
    return getattr(request, "_request", request)  # a DRF Request wraps the HttpRequest


def lockout_response(request, original_response=None, credentials=None):
    """What a locked-out login attempt gets (``AXES_LOCKOUT_CALLABLE``)."""
    request = _django_request(request)
    message = lockout_message()
    if is_api_path(request.path):
        return errors.problem_response(429, "rate-limit-exceeded", LOCKOUT_TITLE, message)
    posted = request.POST.get("username", "") if request.method == "POST" else ""
    if request.path.startswith("/admin/"):
        return _admin_login_page(request, posted, message)


    # an unbound form: binding it would run authenticate() (and count a failure) again
    context = {"form": LoginForm(request, initial={"username": posted}), "lockout_message": message,
               "next": request.POST.get("next", "") if request.method == "POST" else ""}
    return render(request, "accounts/login.html", context, status=429)


def _admin_login_page(request, posted: str, message: str):
    context = {
        **admin.site.each_context(request), "lockout_message": message,  # templates/admin/login.html shows it
        "title": "Log in", "subtitle": None, "app_path": request.get_full_path(),
        "form": AdminAuthenticationForm(request, initial={"username": posted}),
        "username": request.user.get_username() if getattr(request, "user", None) else "",
        REDIRECT_FIELD_NAME: request.POST.get(REDIRECT_FIELD_NAME, "") if request.method == "POST" else "",
    }
    return render(request, admin.site.login_template or "admin/login.html", context, status=429)


def guarded_authorize(request, domain_name: str, email: str, password: str, announce_success: bool = True):
    """``accounts.services.authorize`` behind the lockout: 429 while locked, failures counted.

    ``announce_success=False``: the caller logs the user in with ``django.contrib.auth.login``,
    which sends ``user_logged_in`` itself (``/server/login``), so it is not sent twice."""
    django_request = _django_request(request)
    credentials = {"username": email}
    if not AxesProxyHandler.is_allowed(django_request, credentials):
        # counted like any failure (axes extends the lock), then refused whatever the password
        user_login_failed.send(sender=__name__, credentials=credentials, request=django_request)
        raise errors.RateLimitExceeded(lockout_message())
    try:
        user, keypair = services.authorize(domain_name, email, password)
    except errors.AuthorizationFailed:
        user_login_failed.send(sender=__name__, credentials=credentials, request=django_request)
        if getattr(django_request, "axes_locked_out", False):
            raise errors.RateLimitExceeded(lockout_message()) from None
        raise
    if announce_success:
        user_logged_in.send(sender=user.__class__, request=django_request, user=user)
    return user, keypair
