"""Bearer-token authentication for agent daemons."""
from agents import services
from backendai.api.authentication import BearerTokenAuthentication, IsDaemon, bearer_token

__all__ = ["AgentTokenAuthentication", "IsAgent", "bearer_token"]


class AgentTokenAuthentication(BearerTokenAuthentication):
    what = "agent token"
    lookup = staticmethod(services.token_for)


IsAgent = IsDaemon
