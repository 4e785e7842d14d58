"""DRF authentication for Backend.AI-signed requests (HMAC-SHA256).

The signature covers the raw request target, the raw Date header, the Host
header, the media type and the API version header (see ``backendai.signing``).
After the signature, the keypair and its user must be active, the caller's
address must be in the user's allowed client IPs, and the key's rolling rate
limit must not be exceeded; a refused call never reaches the view.
"""
from __future__ import annotations

import ipaddress
import logging
from urllib.parse import quote

from rest_framework.authentication import BaseAuthentication

from backendai import signing
from backendai.api import clientip, errors, ratelimit

log = logging.getLogger(__name__)

_PATH_SAFE = "/:@!$&'()*+,;=-._~%"


def raw_request_target(request) -> str:
    """The request target exactly as the client sent it (path and query)."""
    scope = getattr(request, "scope", None)
    if scope is not None and scope.get("raw_path") is not None:
        target = scope["raw_path"].decode("latin-1")
        query = scope.get("query_string", b"").decode("latin-1")
        return f"{target}?{query}" if query else target
    meta = request.META
    raw = meta.get("RAW_URI") or meta.get("REQUEST_URI")
    if raw:
        return raw
    # wsgiref and the test client keep only the decoded path: re-encode it.
    path = quote(meta.get("SCRIPT_NAME", "") + meta.get("PATH_INFO", "/"), safe=_PATH_SAFE)
    query = meta.get("QUERY_STRING", "")
    return f"{path}?{query}" if query else path


def client_address(request) -> str:
    """The client's address; forwarded headers are believed only from TRUSTED_PROXIES
    (the one rule in ``backendai.api.clientip``, under ASGI and WSGI alike)."""
    return clientip.client_address(request)


def address_allowed(address: str, allowed: list[str] | None) -> bool:
    if not allowed:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for entry in allowed:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


class HMACAuthentication(BaseAuthentication):
    www_authenticate = "BackendAI"

    def authenticate_header(self, request):
        return self.www_authenticate

    def authenticate(self, request):
        from accounts import services as accounts_services

        header = request.META.get("HTTP_AUTHORIZATION")
        if not header:
            return None
        try:
            credential = signing.parse_authorization(header)
        except signing.MalformedAuthorization as exc:
            raise errors.InvalidAuthParameters(str(exc)) from None
        signed = signing.SignedRequest(
            # the EFFECTIVE method (after X-Method-Override): a signature covers what the request does
            method=request.method,
            target=raw_request_target(request),
            date_value=request.META.get("HTTP_X_BACKENDAI_DATE") or request.META.get("HTTP_DATE") or "",
            host=request.META.get("HTTP_HOST", ""),
            content_type=request.META.get("CONTENT_TYPE"),
            api_version=request.META.get("HTTP_X_BACKENDAI_VERSION") or request.META.get("HTTP_X_SORNA_VERSION", ""),
        )
        try:
            request_date = signing.parse_request_date(signed.date_value)
        except signing.MalformedAuthorization as exc:
            raise errors.InvalidAuthParameters(str(exc)) from None
        if not signing.within_skew(request_date):
            raise errors.InvalidAuthParameters("Date/time sync error")
        keypair = accounts_services.keypair_for_authentication(credential.access_key)
        if keypair is None:
            log.info("signed request with unknown access key %s", credential.access_key)
            raise errors.AuthorizationFailed("Access key not found")
        try:
            signing.verify(keypair.secret_key, credential, signed)
        except signing.MalformedAuthorization as exc:
            raise errors.InvalidAuthParameters(str(exc)) from None
        except signing.SignatureMismatch:
            log.info("signature mismatch for access key %s on %s %s", keypair.access_key, request.method, request.path)
            raise errors.AuthorizationFailed("Signature mismatch") from None
        user = keypair.user
        if not keypair.is_active:
            raise errors.AuthorizationFailed("The keypair is inactive")
        if not user.is_active:
            raise errors.AuthorizationFailed("The user is inactive")
        address = client_address(request)
        if not address_allowed(address, user.allowed_client_ip):
            log.info("client address %s refused for user %s", address, user.pk)
            raise errors.AuthorizationFailed("Access from this client address is not allowed")

        state = ratelimit.check(keypair.access_key, keypair.rate_limit)
        request._request.ratelimit = state
        if state.exceeded:
            raise errors.RateLimitExceeded(f"Over {state.limit} requests in {state.window} seconds")
        accounts_services.record_keypair_use(keypair)
        return user, keypair




def authenticate_plain_request(request):
    """HMAC-authenticate a plain Django request (for views outside DRF, like SSE
    and websockets); returns (user, keypair) or raises a BackendAIError."""
    from rest_framework.request import Request

    drf_request = Request(request, authenticators=[HMACAuthentication()])
    result = HMACAuthentication().authenticate(drf_request)
    if result is None:
        raise errors.AuthorizationFailed("Unauthorized access")
    return result


# --- bearer tokens of daemons (agents, proxy workers) ----------------------------------------------

def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


class DaemonPrincipal:
    """The authenticated caller of a daemon API: the token it presented."""

    is_authenticated = True

    def __init__(self, token):
        self.token = token


class BearerTokenAuthentication(BaseAuthentication):
    """``Authorization: Bearer <token>`` resolved by the subclass's ``lookup`` (a
    service function returning the active token or None) and named by ``what``."""

    what = "token"

    def authenticate_header(self, request):
        return "Bearer"

    def authenticate(self, request):
        raw = bearer_token(request.META.get("HTTP_AUTHORIZATION"))
        if raw is None:
            raise errors.AuthorizationFailed(f"Missing {self.what} (Authorization: Bearer ...)")
        token = self.lookup(raw)
        if token is None:
            raise errors.AuthorizationFailed(f"Unknown or revoked {self.what}")
        return DaemonPrincipal(token), token


class IsDaemon:
    def has_permission(self, request, view):
        return isinstance(request.user, DaemonPrincipal)

    def has_object_permission(self, request, view, obj):
        return self.has_permission(request, view)
