"""Authentication of the coordinator's callers: proxy workers (Bearer worker tokens issued in
the admin) and the manager (the shared coordinator secret, on the coordinator's REST API)."""
import hmac

from django.conf import settings
from rest_framework.authentication import BaseAuthentication

from appproxy import services
from backendai.api import errors
from backendai.api.authentication import BearerTokenAuthentication, IsDaemon, bearer_token

__all__ = ["WorkerTokenAuthentication", "IsWorker", "CoordinatorSecretAuthentication",
           "SecretOrWorkerTokenAuthentication", "IsCoordinatorClient", "IsCoordinatorClientOrWorker"]


class WorkerTokenAuthentication(BearerTokenAuthentication):
    what = "proxy worker token"
    lookup = staticmethod(services.token_for)


IsWorker = IsDaemon


class CoordinatorPrincipal:
    """The manager (or an operator's script) holding the coordinator's shared secret."""

    is_authenticated = True
    token = None


class CoordinatorSecretAuthentication(BaseAuthentication):
    """The coordinator's REST API for the manager: ``X-BackendAI-Token: <secret>`` or
    ``Authorization: Bearer <secret>`` with ``settings.APPPROXY_COORDINATOR_SECRET``.
    With ``accept_worker_tokens`` a Bearer that is not the secret is tried as a worker token."""

    accept_worker_tokens = False

    def authenticate_header(self, request):
        return "Bearer"

    def authenticate(self, request):
        expected = getattr(settings, "APPPROXY_COORDINATOR_SECRET", "") or ""
        given = request.META.get("HTTP_X_BACKENDAI_TOKEN")
        bearer = bearer_token(request.META.get("HTTP_AUTHORIZATION"))
        if given is None and bearer is not None:
            if expected and hmac.compare_digest(bearer.encode(), expected.encode()):
                return CoordinatorPrincipal(), None
            if self.accept_worker_tokens:
                return WorkerTokenAuthentication().authenticate(request)
            given = bearer
        if given is None:
            raise errors.AuthorizationFailed("Missing coordinator secret (X-BackendAI-Token or Authorization: Bearer)")
        if not expected or not hmac.compare_digest(given.strip().encode(), expected.encode()):
            raise errors.AuthorizationFailed("Wrong coordinator secret")
        return CoordinatorPrincipal(), None


class SecretOrWorkerTokenAuthentication(CoordinatorSecretAuthentication):
    accept_worker_tokens = True


class IsCoordinatorClient:
    def has_permission(self, request, view):
        return isinstance(request.user, CoordinatorPrincipal)

    def has_object_permission(self, request, view, obj):
        return self.has_permission(request, view)


class IsCoordinatorClientOrWorker:
    def has_permission(self, request, view):
        return isinstance(request.user, CoordinatorPrincipal) or IsWorker().has_permission(request, view)

    def has_object_permission(self, request, view, obj):
        return self.has_permission(request, view)
