"""Bearer-token authentication for agent daemons."""
from dataclasses import dataclass

from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission

from agents import services
from agents.models import AgentToken
from backendai.api import errors


@dataclass
class AgentPrincipal:
    token: AgentToken
    is_authenticated: bool = True


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


class AgentTokenAuthentication(BaseAuthentication):
    def authenticate_header(self, request):
        return "Bearer"

    def authenticate(self, request):
        raw = bearer_token(request.META.get("HTTP_AUTHORIZATION"))
        if raw is None:
            raise errors.AuthorizationFailed("Missing agent token (Authorization: Bearer ...)")
        token = services.token_for(raw)
        if token is None:
            raise errors.AuthorizationFailed("Unknown or revoked agent token")
        return AgentPrincipal(token), token


class IsAgent(BasePermission):
    def has_permission(self, request, view):
        return isinstance(request.user, AgentPrincipal)
