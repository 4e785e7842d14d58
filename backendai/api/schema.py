"""OpenAPI description of our authentication scheme for drf-spectacular."""
import functools

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class HMACAuthenticationExtension(OpenApiAuthenticationExtension):
    target_class = "accounts.api.authentication.HMACAuthentication"
    name = "BackendAISignature"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": (
                "BackendAI signMethod=HMAC-SHA256, credential=<ACCESS_KEY>:<SIGNATURE>, "
                "with Date and X-BackendAI-Version headers covered by the signature."
            ),
        }


class WebSessionAuthenticationExtension(OpenApiAuthenticationExtension):
    """Session mode: the same API under ``/func/`` with the cookie of ``POST /server/login``."""

    target_class = "accounts.api.websession.WebSessionAuthentication"
    name = "BackendAISessionCookie"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "cookie",
            "name": "sessionid",
            "description": ("Session mode: the cookie of POST /server/login, accepted on the /func/ copy of the "
                            "API only, with an X-BackendAI-Version header and no cross-site Origin."),
        }


def drop_session_mode_copies(endpoints):
    """``SPECTACULAR_SETTINGS["PREPROCESSING_HOOKS"]``: the ``/func/`` copy of every route (session
    mode) is the same API; the schema describes it once, at the root."""
    return [endpoint for endpoint in endpoints if not endpoint[0].startswith("/func/")]


#: The daemons' side of the API (agents, app proxy workers, the hint relay): signed with their
#: own tokens, never called by a user or a client SDK.  ``/spec/openapi`` leaves them out;
#: ``/spec/internal/openapi`` describes only them.
INTERNAL_PREFIXES = ("/agent-api/", "/appproxy-api/", "/internal/")


def is_internal_path(path: str) -> bool:
    return path.startswith(INTERNAL_PREFIXES)


def drop_internal_endpoints(endpoints):
    """``PREPROCESSING_HOOKS`` of the user schema: the daemons' endpoints live in the internal one."""
    return [endpoint for endpoint in endpoints if not is_internal_path(endpoint[0])]


def internal_endpoints_only(endpoints):
    """``PREPROCESSING_HOOKS`` of ``/spec/internal/openapi``: the agents' and proxy workers' endpoints."""
    return [endpoint for endpoint in endpoints if is_internal_path(endpoint[0])]


INTERNAL_SCHEMA_SETTINGS = {
    "TITLE": "Backend.AI-compatible manager: internal API of the daemons",
    "DESCRIPTION": ("Endpoints the agents, the app proxy workers and the hint relay call on the manager, each "
                    "with its own daemon token. Users and client SDKs use the API of /spec/docs instead."),
    "PREPROCESSING_HOOKS": ["backendai.api.schema.internal_endpoints_only"],
}



@functools.cache
def _problem_serializer():
    """One ``Problem`` component (a second class of the same name would make spectacular warn)."""
    from drf_spectacular.utils import inline_serializer
    from rest_framework import serializers

    return inline_serializer("Problem", {
        "type": serializers.CharField(help_text="https://api.backend.ai/probs/<slug>"),
        "title": serializers.CharField(), "msg": serializers.CharField(required=False),
        "data": serializers.JSONField(required=False)})


PROBLEM_MEANINGS = {400: "Invalid parameters", 401: "Not authenticated", 403: "Not allowed for the caller",
                    404: "Not found", 429: "Rate limit exceeded"}


def problem_responses(*statuses: int) -> dict:
    """``extend_schema(responses=...)`` entries for the failures a view answers: each an
    ``application/problem+json`` body (``backendai.api.errors``)."""
    from drf_spectacular.utils import OpenApiResponse

    return {(status, "application/problem+json"):
            OpenApiResponse(_problem_serializer(), description=PROBLEM_MEANINGS.get(status, "Failure"))
            for status in statuses}
