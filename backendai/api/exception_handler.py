"""DRF's exception handler: every API failure leaves as ``application/problem+json``
(``backendai.api.errors``), and a failure for want of a database connection as a
503 with ``Retry-After`` (``backendai.api.unavailable``)."""
from __future__ import annotations

import logging

from django.core.exceptions import DisallowedHost, RequestDataTooBig
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import DataError
from django.http import Http404
from rest_framework import exceptions as drf_exceptions
from rest_framework.exceptions import APIException

from backendai.api import unavailable
from backendai.api.errors import (
    AuthorizationFailed,
    BackendAIError,
    GenericBadRequest,
    GenericForbidden,
    InsufficientPrivilege,
    InternalServerError,
    InvalidAPIParameters,
    PayloadTooLarge,
    MethodNotAllowed,
    ObjectNotFound,
    RateLimitExceeded,
    problem_response,
)

log = logging.getLogger(__name__)


def _validation_message(detail) -> str:
    if isinstance(detail, dict):
        parts = []
        for field, errors in detail.items():
            text = _validation_message(errors)
            parts.append(text if field == "non_field_errors" else f"{field}: {text}")
        return "; ".join(parts)
    if isinstance(detail, list):
        return " ".join(_validation_message(item) for item in detail)
    return str(detail)


def problem_exception_handler(exc, context):
    """DRF exception handler: map every exception to problem+json."""
    if isinstance(exc, BackendAIError):
        return exc.as_response()
    if isinstance(exc, drf_exceptions.ValidationError):
        return problem_response(400, "invalid-api-params", InvalidAPIParameters.error_title,
                                _validation_message(exc.detail), exc.detail)
    if isinstance(exc, drf_exceptions.NotAuthenticated):
        return problem_response(401, "auth-failed", AuthorizationFailed.error_title, "Unauthorized access")
    if isinstance(exc, drf_exceptions.AuthenticationFailed):
        return problem_response(401, "auth-failed", AuthorizationFailed.error_title, str(exc.detail))
    if isinstance(exc, drf_exceptions.PermissionDenied):
        return problem_response(403, "insufficient-privilege", InsufficientPrivilege.error_title, str(exc.detail))
    if isinstance(exc, drf_exceptions.NotFound):
        return problem_response(404, "object-not-found", ObjectNotFound.error_title, str(exc.detail))
    if isinstance(exc, drf_exceptions.MethodNotAllowed):
        return problem_response(405, "method-not-allowed", MethodNotAllowed.error_title, str(exc.detail))
    if isinstance(exc, drf_exceptions.ParseError):
        return problem_response(400, "invalid-api-params", InvalidAPIParameters.error_title, f"Malformed request body: {exc.detail}")
    if isinstance(exc, drf_exceptions.UnsupportedMediaType):
        return problem_response(400, "invalid-api-params", InvalidAPIParameters.error_title, str(exc.detail))
    if isinstance(exc, drf_exceptions.Throttled):
        return problem_response(429, "rate-limit-exceeded", RateLimitExceeded.error_title, str(exc.detail))
    if isinstance(exc, APIException):
        return problem_response(exc.status_code, "generic-bad-request", GenericBadRequest.error_title, str(exc.detail))
    request = context.get("request")
    if isinstance(exc, RequestDataTooBig):
        return PayloadTooLarge(str(exc) or None).as_response()
    if isinstance(exc, DisallowedHost):
        return problem_response(400, "generic-bad-request", GenericBadRequest.error_title,
                                "The Host header names a host this server does not serve")
    if isinstance(exc, DataError):
        # the database refused a value (too long for its column, numeric out of range): a validator is missing
        log.warning("database refused a value on %s %s (missing validator?): %s",
                    getattr(request, "method", "?"), getattr(request, "path", "?"), exc)
        return problem_response(400, "invalid-api-params", InvalidAPIParameters.error_title,
                                "A value is out of range or too long")
    if isinstance(exc, Http404):
        return problem_response(404, "object-not-found", ObjectNotFound.error_title, str(exc) or None)
    if isinstance(exc, DjangoPermissionDenied):
        return problem_response(403, "generic-forbidden", GenericForbidden.error_title, str(exc) or None)
    refused = unavailable.refusal_for(request, exc)  # no database connection now: 503 with Retry-After
    if refused is not None:
        return refused
    log.exception("unhandled API error on %s %s", getattr(request, "method", "?"), getattr(request, "path", "?"))
    return problem_response(500, "internal-server-error", InternalServerError.error_title)
