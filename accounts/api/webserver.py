"""``/server/*``: what Backend.AI's webserver adds so the client can work in session mode.

* ``POST /server/login`` ``{"username", "password"[, "otp"][, "domain"][, "force"]}`` checks
  the password like ``POST /auth/authorize`` (the same django-axes lockout counter as the
  web and admin logins, ``accounts.lockout``), logs the browser session in
  (``django.contrib.auth.login``: a fresh session key) and answers
  ``{"authenticated": true, "data": {...}}`` with the session cookie.  A wrong password is
  ``{"authenticated": false, "data": {"type", "title", "details"}}`` with 200, as the
  webserver answers (the client prints ``details``); a locked-out account or address is
  the 429 problem the other logins give.
* Clients 24.09+ talking plain http send the login body "encoded"
  (``X-BackendAI-Encoded: true``, ``iv:base64(AES-256-CBC(json))`` with a key derived from
  the endpoint URL the client was configured with; see ``decode_login_body``).  That is
  obfuscation, not protection: the key is derivable from the URL; use TLS.
* ``POST /server/logout`` ends the session (200 whether or not there was one).
* ``GET|POST /server/login-check`` says whether the cookie is logged in.

Login and logout are refused when a browser sends them from another site (login CSRF
would log a victim into the attacker's account; ``accounts.api.websession.cross_site_reason``).
"""
from __future__ import annotations

import base64
import binascii

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from django.conf import settings
from django.contrib.auth import get_user, login as django_login, logout as django_logout
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import lockout
from accounts.api.websession import ACCESS_KEY_SESSION_KEY, cross_site_reason, session_keypair
from backendai.api import errors, parsers

LOGIN_BACKEND = "accounts.backends.EmailBackend"
ENCODED_HEADER = "HTTP_X_BACKENDAI_ENCODED"
#: The longest login field we read (an e-mail is at most 64 characters; passwords are bounded too).
FIELD_MAX = 1024


# --- the encoded login body of clients 24.09+ -----------------------------------------------------

def endpoint_candidates(request) -> list[str]:
    """The endpoint URLs the client may have been configured with, as ``str(yarl.URL)`` prints
    them: this server's scheme and Host (and ``http``: a TLS proxy in front still leaves the
    client on https, which sends plain JSON), with and without a trailing slash."""
    host = request.get_host()
    prefix = request.META.get("SCRIPT_NAME", "").rstrip("/")
    bases = [f"{scheme}://{host}{prefix}" for scheme in dict.fromkeys((request.scheme, "http"))]
    return [variant for base in bases for variant in (base, base + "/")]


def _decrypt(endpoint: str, iv: bytes, ciphertext: bytes) -> bytes | None:
    key = (base64.b64encode(endpoint.encode("utf-8")) + iv + iv)[:32]
    if len(ciphertext) == 0 or len(ciphertext) % 16:
        return None
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(decryptor.update(ciphertext) + decryptor.finalize()) + unpadder.finalize()
    except ValueError:  # bad padding: not this key
        return None


def decode_login_body(raw: bytes, endpoints: list[str]) -> dict:
    """The JSON object inside an encoded login body (``iv + b":" + base64(ciphertext)``),
    trying each candidate endpoint as the key's source; 400 when none decodes it."""
    iv, sep, encoded = raw.strip().partition(b":")
    if not sep or len(iv) != 16:
        raise errors.InvalidAPIParameters("The encoded login body must be 'iv:base64' with a 16-byte iv")
    try:
        ciphertext = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise errors.InvalidAPIParameters("The encoded login body is not base64") from None
    for endpoint in endpoints:
        plain = _decrypt(endpoint, iv, ciphertext)
        if plain is None:
            continue
        try:
            return parsers.loads(plain)
        except (ParseError, errors.BackendAIError):  # a wrong key that happened to unpad: try the next one
            continue
    raise errors.InvalidAPIParameters(
        "The encoded login body could not be decoded (is the client's endpoint this server's URL?)")


class EncodedLoginParser(BaseParser):
    """``application/octet-stream`` login bodies sent with ``X-BackendAI-Encoded: true``."""

    media_type = "application/octet-stream"

    def parse(self, stream, media_type=None, parser_context=None):
        request = parser_context["request"]
        raw = parsers.read_limited(stream, settings.API_MAX_BODY)
        if (request.META.get(ENCODED_HEADER) or "").lower() not in ("true", "1", "yes"):
            raise errors.InvalidAPIParameters("An octet-stream login body must be sent with X-BackendAI-Encoded: true")
        return decode_login_body(raw, endpoint_candidates(request))


# --- the views ---------------------------------------------------------------------------------

def _text_field(data: dict, name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise errors.InvalidAPIParameters(f"{name} is required (a non-empty string)")
    if len(value) > FIELD_MAX:
        raise errors.InvalidAPIParameters(f"{name}: at most {FIELD_MAX} characters")
    return value


def _refuse_cross_site(request) -> None:
    reason = cross_site_reason(request)
    if reason is not None:
        raise errors.InsufficientPrivilege(f"Refused: {reason}.")


def login_data(user, keypair) -> dict:
    """What a logged-in answer says about the account (no secret: the cookie is the credential)."""
    return {"access_key": keypair.access_key if keypair is not None else None, "email": user.email,
            "full_name": user.full_name, "role": user.role, "status": user.status, "domain_name": user.domain_id}


class ServerLoginView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]
    parser_classes = [parsers.HardenedJSONParser, parsers.TextAsJSONParser, EncodedLoginParser]

    def post(self, request):
        _refuse_cross_site(request)
        data = request.data if isinstance(request.data, dict) else {}
        email = _text_field(data, "username").strip()
        password = _text_field(data, "password")
        domain = data.get("domain")
        if domain is not None and not isinstance(domain, str):
            raise errors.InvalidAPIParameters("domain must be a string")
        try:
            user, keypair = lockout.guarded_authorize(request, domain or None, email, password,
                                                      announce_success=False)
        except errors.AuthorizationFailed as exc:
            return Response({"authenticated": False, "data": {
                "type": errors.PROBLEM_BASE + exc.error_type, "title": exc.error_title,
                "details": exc.msg or exc.error_title}})
        django_request = request._request
        django_login(django_request, user, backend=LOGIN_BACKEND)  # a new session key; user_logged_in once
        django_request.session[ACCESS_KEY_SESSION_KEY] = keypair.access_key
        return Response({"authenticated": True, "data": login_data(user, keypair)})


class ServerLogoutView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]

    def post(self, request):
        _refuse_cross_site(request)
        django_logout(request._request)  # flushes the session (and its cookie's data) if there was one
        return Response({"logged_out": True})


class ServerLoginCheckView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]

    def get(self, request):
        django_request = request._request
        # from the session itself: with no authentication class DRF has set request.user to None
        user = get_user(django_request)
        if not user.is_authenticated or not user.is_active:
            return Response({"authenticated": False, "data": None})
        return Response({"authenticated": True, "data": login_data(user, session_keypair(django_request, user))})

    def post(self, request):
        return self.get(request)
