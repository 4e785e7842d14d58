"""Request plumbing shared by every API endpoint.

* ``X-BackendAI-Version`` negotiation: a listed version (v4 to v8) is
  accepted and recorded on the request; an unknown one is refused with 400
  before any view runs.
* ``X-Method-Override`` re-routes a request as another HTTP method.
* Every API response carries ``Server: BackendAI`` and the
  ``X-RateLimit-*`` headers (anonymous calls get the fixed anonymous figures).
"""
from __future__ import annotations

from backendai import signing
from backendai.api import errors, ratelimit

NON_API_PREFIXES = ("/ui/", "/admin/", "/static/", "/healthz", "/readyz", "/metrics", "/favicon.ico")
API_UNDER_ADMIN = ("/admin/gql", "/admin/graphql")
OVERRIDABLE_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}


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
        version = request.META.get("HTTP_X_BACKENDAI_VERSION") or request.META.get("HTTP_X_SORNA_VERSION")
        if version is not None:
            if signing.parse_version(version) is None:
                return self._finish(request, errors.problem_response(
                    400, "generic-bad-request", "Unsupported API version.", f"Unsupported API version: {version}"))
            request.api_version = version
        else:
            request.api_version = signing.LATEST_API_VERSION
        override = request.META.get("HTTP_X_METHOD_OVERRIDE")
        if override and override.upper() in OVERRIDABLE_METHODS:
            request.wire_method = request.method  # the signature covers the method actually sent
            request.method = override.upper()
        return self._finish(request, self.get_response(request))

    @staticmethod
    def _finish(request, response):
        state = getattr(request, "ratelimit", None) or ratelimit.ANONYMOUS_STATE
        for key, value in state.headers().items():
            response[key] = value
        response["Server"] = "BackendAI"
        return response
