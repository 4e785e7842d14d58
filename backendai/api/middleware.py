"""Request plumbing shared by every API endpoint.

* ``X-BackendAI-Version`` negotiation: a listed version (v4 to v8, and
  ``v9.20250722``, which client 26.09 sends when it cannot negotiate) is
  accepted and recorded on the request; an unknown one is refused with 400
  before any view runs.  ``GET /`` keeps announcing v8 (``signing.LATEST_API_VERSION``)
  while not every v9 difference is served (``docs/client-compat.md`` lists them).
* ``X-Method-Override`` re-routes a request as another HTTP method.  The
  signature is checked over the EFFECTIVE method, so an override is valid only
  when the client signed the overridden method (a captured signed GET replayed
  with ``X-Method-Override: DELETE`` fails the signature).  Other spellings
  (``X-HTTP-Method-Override``, ``_method``) are ignored.
* Limits before any work: a ``Host`` outside ``ALLOWED_HOSTS`` is a 400, a
  ``Content-Length`` above ``settings.API_MAX_BODY`` a 413 (the streamed file
  transfer paths excepted), a NUL character in the path a 404 (no object has
  such a name), in the query a 400.
* Every API response carries ``Server: BackendAI`` and the
  ``X-RateLimit-*`` headers (anonymous calls get the fixed anonymous figures).
"""
from __future__ import annotations

import re

from urllib.parse import unquote

from django.conf import settings
from django.core.exceptions import DisallowedHost

from backendai import signing
from backendai.api import errors, ratelimit

NON_API_PREFIXES = ("/ui/", "/admin/", "/static/", "/healthz", "/readyz", "/metrics", "/favicon.ico")
API_UNDER_ADMIN = ("/admin/gql", "/admin/graphql")
OVERRIDABLE_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
#: Accepted in requests but not announced: the v9 differences are not all served yet.
NEWER_ACCEPTED_VERSIONS = ("v9.20250722",)
ACCEPTED_API_VERSIONS = frozenset(signing.API_VERSIONS + NEWER_ACCEPTED_VERSIONS)
#: Session file transfers (``sessions.api.files_views``): streamed, with their own size limit
#: (``SESSION_UPLOAD_MAX_SIZE``), also under the session-mode ``/func/`` prefix; and the web UI's
#: file download (``sessions.files_ui``).
SESSION_TRANSFER = re.compile(r"^(?:(?:/func)?/session/[^/]+/(?:upload|download|download_single)"
                              r"|/ui/sessions/[0-9a-f-]{32,36}/files/download/)$")


def is_transfer_path(path: str) -> bool:
    """A streamed transfer: its body is not an API body (no ``API_MAX_BODY``), its response may be large.
    (Folder files never pass the manager: clients send and fetch them at the storage proxy.)"""
    return SESSION_TRANSFER.match(path) is not None


def is_api_path(path: str) -> bool:
    if path.startswith(API_UNDER_ADMIN):
        return True
    return not (path.startswith(NON_API_PREFIXES) or path == "/ui")


class BackendAIAPIMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not is_api_path(request.path):
            return self.get_response(request)
        refused = self._refuse_early(request)
        if refused is not None:
            return self._finish(request, refused)
        version = request.META.get("HTTP_X_BACKENDAI_VERSION") or request.META.get("HTTP_X_SORNA_VERSION")
        if version is not None:
            if version not in ACCEPTED_API_VERSIONS:
                return self._finish(request, errors.problem_response(
                    400, "generic-bad-request", "Unsupported API version.", f"Unsupported API version: {version}"))
            request.api_version = version
        else:
            request.api_version = signing.LATEST_API_VERSION
        override = request.META.get("HTTP_X_METHOD_OVERRIDE")
        if override and override.upper() in OVERRIDABLE_METHODS:
            # the signature is verified over this effective method (HMACAuthentication reads request.method)
            request.method = override.upper()
        return self._finish(request, self.get_response(request))

    @staticmethod
    def _refuse_early(request):
        try:
            request.get_host()
        except DisallowedHost:
            return errors.GenericBadRequest("The Host header names a host this server does not serve").as_response()
        if "\x00" in request.path:  # no object is named with a NUL (and no column could store one)
            return errors.ObjectNotFound("No object is named with a NUL character").as_response()
        if "\x00" in unquote(request.META.get("QUERY_STRING", "")):
            field = next((key for key, values in request.GET.lists()
                          if "\x00" in key or any("\x00" in value for value in values)), "query")
            return errors.InvalidAPIParameters(f"{field}: NUL characters are not allowed").as_response()
        if is_transfer_path(request.path):
            return None
        length = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(length)
        except ValueError:
            length = -1
        if length < 0:
            return errors.GenericBadRequest("Invalid Content-Length").as_response()
        if length > settings.API_MAX_BODY:
            return errors.PayloadTooLarge(f"The request body is larger than {settings.API_MAX_BODY} bytes").as_response()
        return None

    @staticmethod
    def _finish(request, response):
        state = getattr(request, "ratelimit", None) or ratelimit.ANONYMOUS_STATE
        for key, value in state.headers().items():
            response[key] = value
        response["Server"] = "BackendAI"
        return response
