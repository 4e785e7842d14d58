"""Errors as ``application/problem+json`` with the manager's Backend.AI type slugs, so the
manager can re-raise them unchanged.  The slugs, statuses and titles are the same strings as
``backendai/api/errors.py`` (not imported: that module needs Django)."""
from __future__ import annotations

import json

from aiohttp import web

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "https://api.backend.ai/probs/"


class ProxyError(Exception):
    status = 500
    slug = "internal-server-error"
    title = "Internal server error."

    def __init__(self, msg: str | None = None, data=None, *, title: str | None = None, headers=None):
        super().__init__(msg or self.title)
        self.msg = msg
        self.data = data
        self.headers = dict(headers or {})
        if title is not None:
            self.title = title

    def body(self) -> dict:
        body = {"type": PROBLEM_BASE + self.slug, "title": self.title}
        if self.msg is not None:
            body["msg"] = self.msg
        if self.data is not None:
            body["data"] = self.data
        return body

    def response(self, extra_headers=None) -> web.Response:
        headers = {**self.headers, **(extra_headers or {})}
        return web.Response(status=self.status, text=json.dumps(self.body()), content_type=PROBLEM_CONTENT_TYPE,
                            headers=headers)


def _error(name: str, status: int, slug: str, title: str) -> type[ProxyError]:
    return type(name, (ProxyError,), {"status": status, "slug": slug, "title": title})


URLNotFound = _error("URLNotFound", 404, "url-not-found", "Unknown URL path.")
ObjectNotFound = _error("ObjectNotFound", 404, "object-not-found", "No such object.")
InvalidAPIParameters = _error("InvalidAPIParameters", 400, "invalid-api-params", "Missing or invalid API parameters.")
AuthorizationFailed = _error("AuthorizationFailed", 401, "auth-failed", "Credential/signature mismatch.")
GenericForbidden = _error("GenericForbidden", 403, "generic-forbidden", "Forbidden operation.")
MethodNotAllowed = _error("MethodNotAllowed", 405, "method-not-allowed", "HTTP Method Not Allowed.")
QuotaExceeded = _error("QuotaExceeded", 412, "quota-exceeded", "Quota exceeded.")
InternalServerError = _error("InternalServerError", 500, "internal-server-error", "Internal server error.")
VFolderOperationFailed = _error("VFolderOperationFailed", 400, "vfolder-operation-failed",
                                "Virtual folder operation has failed.")
UploadOffsetConflict = _error("UploadOffsetConflict", 409, "upload-offset-conflict", "The upload offset does not match.")
PayloadTooLarge = _error("PayloadTooLarge", 413, "payload-too-large", "Request payload too large.")
UnsupportedMediaType = _error("UnsupportedMediaType", 415, "unsupported-media-type", "Unsupported media type.")
RangeNotSatisfiable = _error("RangeNotSatisfiable", 416, "range-not-satisfiable", "Requested range not satisfiable.")
UnsupportedTusVersion = _error("UnsupportedTusVersion", 412, "unsupported-tus-version",
                               "Unsupported tus protocol version.")


class UploadQuotaExceeded(QuotaExceeded):
    """``quota-exceeded`` on the client API's tus PATCH: 413, the body did not fit (the partial
    upload is removed).  The manager API's refusals before an upload starts (``request-upload``
    past the limit, a clone) keep the manager's 412; ``payload-too-large`` (a body past the
    declared size or the chunk limit) is 413 too, told apart by its slug."""

    status = 413


def not_found(kind: str, msg: str | None = None) -> ProxyError:
    """``object-not-found`` titled after the object, as the manager titles it."""
    return ObjectNotFound(msg, title=f"No such {kind}.")
