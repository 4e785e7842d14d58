"""OpenAPI description of our authentication scheme for drf-spectacular."""
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
