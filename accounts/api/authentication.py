"""DRF authentication for Backend.AI-signed requests (HMAC-SHA256).

The signature covers the raw request target, the raw Date header, the Host
header, the media type and the API version header (see ``backendai.signing``).
After the signature, the keypair and its user must be active, the caller's
address must be in the user's allowed client IPs, and the key's rolling rate
limit must not be exceeded; a refused call never reaches the view.
"""
from __future__ import annotations

import logging

from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request
from rest_framework.settings import api_settings

from accounts import services as accounts_services
from backendai import requestctx, signing
from backendai.api import errors, ratelimit
from backendai.api.authentication import address_allowed, client_address, raw_request_target

log = logging.getLogger(__name__)


class HMACAuthentication(BaseAuthentication):
    www_authenticate = "BackendAI"

    def authenticate_header(self, request):
        return self.www_authenticate

    def authenticate(self, request):
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
        return admit(request, keypair)


def admit(request, keypair):
    """The checks every authenticated API call passes after its credential (a signature, or
    the login cookie of session mode): the keypair and its user are active, the caller's
    address is allowed, the key's rate limit is not exceeded.  Returns ``(user, keypair)``."""
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
    getattr(request, "_request", request).ratelimit = state
    if state.exceeded:
        raise errors.RateLimitExceeded(f"Over {state.limit} requests in {state.window} seconds")
    accounts_services.record_keypair_use(keypair)
    requestctx.bind(user_id=user.pk, access_key=keypair.access_key)  # every later log line of the request
    return user, keypair


def authenticate_plain_request(request):
    """Authenticate a plain Django request (for views outside DRF, like SSE and
    websockets) with the API's authentication classes (a signature; under ``/func/``
    also the login cookie); returns (user, keypair) or raises a BackendAIError."""
    authenticators = [cls() for cls in api_settings.DEFAULT_AUTHENTICATION_CLASSES]
    drf_request = Request(request, authenticators=authenticators)
    for authenticator in authenticators:
        result = authenticator.authenticate(drf_request)
        if result is not None:
            return result
    raise errors.AuthorizationFailed("Unauthorized access")
