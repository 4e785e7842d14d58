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
