"""Bearer-token authentication for proxy workers (tokens issued in the admin)."""
from dataclasses import dataclass

from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission

from agents.api.authentication import bearer_token
from appproxy import services
from appproxy.models import WorkerToken
from backendai.api import errors


@dataclass
class WorkerPrincipal:
    token: WorkerToken
    is_authenticated: bool = True


class WorkerTokenAuthentication(BaseAuthentication):
    def authenticate_header(self, request):
        return "Bearer"

    def authenticate(self, request):
        raw = bearer_token(request.META.get("HTTP_AUTHORIZATION"))
        if raw is None:
            raise errors.AuthorizationFailed("Missing proxy worker token (Authorization: Bearer ...)")
        token = services.token_for(raw)
        if token is None:
            raise errors.AuthorizationFailed("Unknown or revoked proxy worker token")
        return WorkerPrincipal(token), token


class IsWorker(BasePermission):
    def has_permission(self, request, view):
        return isinstance(request.user, WorkerPrincipal)
