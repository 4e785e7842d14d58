"""Bearer-token authentication for proxy workers (tokens issued in the admin)."""
from appproxy import services
from backendai.api.authentication import BearerTokenAuthentication, IsDaemon

__all__ = ["WorkerTokenAuthentication", "IsWorker"]


class WorkerTokenAuthentication(BearerTokenAuthentication):
    what = "proxy worker token"
    lookup = staticmethod(services.token_for)


IsWorker = IsDaemon
