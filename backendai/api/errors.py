"""API errors as ``application/problem+json`` with Backend.AI's type slugs.

Every API failure, whether raised by our services, by DRF (validation,
authentication, parsing, method) or by Django's URL resolver, leaves through
``problem_response`` so the client always sees the same shape::

    {"type": "https://api.backend.ai/probs/<slug>", "title": "...", "msg"?: ..., "data"?: ...}
"""
from __future__ import annotations


from django.http import JsonResponse
from rest_framework.exceptions import APIException


PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "https://api.backend.ai/probs/"


def problem_response(status: int, slug: str, title: str, msg=None, data=None, headers=None) -> JsonResponse:
    body = {"type": PROBLEM_BASE + slug, "title": title}
    if msg is not None:
        body["msg"] = msg
    if data is not None:
        body["data"] = data
    response = JsonResponse(body, status=status, content_type=PROBLEM_CONTENT_TYPE)
    for key, value in (headers or {}).items():
        response[key] = value
    return response


class BackendAIError(APIException):
    """Base of the API errors.  Subclasses fix the status, slug and title."""

    status_code = 500
    error_type = "internal-server-error"
    error_title = "Internal server error."

    def __init__(self, msg: str | None = None, data=None):
        self.msg = msg
        self.data = data
        super().__init__(detail=msg or self.error_title)

    def as_response(self) -> JsonResponse:
        return problem_response(self.status_code, self.error_type, self.error_title, self.msg, self.data)


def _error(name: str, status: int, slug: str, title: str) -> type[BackendAIError]:
    return type(name, (BackendAIError,), {"status_code": status, "error_type": slug, "error_title": title})


URLNotFound = _error("URLNotFound", 404, "url-not-found", "Unknown URL path.")
ObjectNotFound = _error("ObjectNotFound", 404, "object-not-found", "No such object.")
GenericBadRequest = _error("GenericBadRequest", 400, "generic-bad-request", "Bad request.")
InvalidAPIParameters = _error("InvalidAPIParameters", 400, "invalid-api-params", "Missing or invalid API parameters.")
InvalidAuthParameters = _error("InvalidAuthParameters", 400, "invalid-auth-params", "Missing or invalid authorization parameters.")
InvalidCredentials = _error("InvalidCredentials", 400, "invalid-credentials", "Invalid credentials for authentication.")
AuthorizationFailed = _error("AuthorizationFailed", 401, "auth-failed", "Credential/signature mismatch.")
PasswordExpired = _error("PasswordExpired", 401, "password-expired", "Password has expired.")
GenericForbidden = _error("GenericForbidden", 403, "generic-forbidden", "Forbidden operation.")
InsufficientPrivilege = _error("InsufficientPrivilege", 403, "insufficient-privilege", "Insufficient privilege.")
MethodNotAllowed = _error("MethodNotAllowed", 405, "method-not-allowed", "HTTP Method Not Allowed.")
QuotaExceeded = _error("QuotaExceeded", 412, "quota-exceeded", "Quota exceeded.")
SessionAlreadyExists = _error("SessionAlreadyExists", 400, "session-already-exists", "The session already exists but you requested to create a new one.")
TooManySessionsMatched = _error("TooManySessionsMatched", 404, "too-many-sessions-matched", "Too many sessions matched.")
InstanceNotAvailable = _error("InstanceNotAvailable", 503, "instance-not-available", "There is no available instance.")
RateLimitExceeded = _error("RateLimitExceeded", 429, "rate-limit-exceeded", "Rate limit exceeded.")
InternalServerError = _error("InternalServerError", 500, "internal-server-error", "Internal server error.")
ServiceUnavailable = _error("ServiceUnavailable", 503, "service-unavailable", "Serivce unavailable.")


def object_not_found(kind: str, msg: str | None = None) -> BackendAIError:
    """``ObjectNotFound`` titled after the object, as the real manager does."""
    error = ObjectNotFound(msg)
    error.error_title = f"No such {kind}."
    return error


# --- virtual folders (appended by the vfolders app) --------------------------------------------
TooManyVFoldersFound = _error("TooManyVFoldersFound", 404, "too-many-vfolders", "Multiple virtual folders found.")
VFolderCreationFailed = _error("VFolderCreationFailed", 400, "vfolder-creation-failed", "Virtual folder creation has failed.")
VFolderAlreadyExists = _error("VFolderAlreadyExists", 400, "vfolder-already-exists", "Virtual folder already exists with the same name.")
VFolderOperationFailed = _error("VFolderOperationFailed", 400, "vfolder-operation-failed", "Virtual folder operation has failed.")
VFolderPermissionError = _error("VFolderPermissionError", 400, "vfolder-permission-error", "The virtual folder does not permit the specified permission.")
UploadOffsetConflict = _error("UploadOffsetConflict", 409, "upload-offset-conflict", "The upload offset does not match.")
PayloadTooLarge = _error("PayloadTooLarge", 413, "payload-too-large", "Request payload too large.")
UnsupportedMediaType = _error("UnsupportedMediaType", 415, "unsupported-media-type", "Unsupported media type.")
RangeNotSatisfiable = _error("RangeNotSatisfiable", 416, "range-not-satisfiable", "Requested range not satisfiable.")
UnsupportedTusVersion = _error("UnsupportedTusVersion", 412, "unsupported-tus-version", "Unsupported tus protocol version.")
