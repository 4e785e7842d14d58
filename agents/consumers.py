"""The agent link: a websocket the agent keeps open so the manager can poke it."""
import json
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from agents import services
from agents.api.authentication import bearer_token
from agents.models import Agent

log = logging.getLogger(__name__)


class AgentLinkConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self.scope.get("headers", [])}
        query = dict(p.split("=", 1) for p in self.scope.get("query_string", b"").decode().split("&") if "=" in p)
        self.agent_id = query.get("agent_id", "")
        allowed = await self._authorized(bearer_token(headers.get("authorization")), self.agent_id)
        if not allowed:
            await self.close(code=4401)
            return
        self.group = services.agent_group(self.agent_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        log.info("agent %s link open", self.agent_id)

    @database_sync_to_async
    def _authorized(self, raw, agent_id) -> bool:
        if not raw or not agent_id:
            return False
        token = services.token_for(raw)
        if token is None:
            return False
        try:
            services.check_token_allows(token, agent_id, None)
        except Exception:  # noqa: BLE001 - any refusal closes the link
            return False
        agent = Agent.objects.filter(pk=agent_id).first()
        return agent is not None and (not token.scaling_group_id or agent.scaling_group_id == token.scaling_group_id)

    async def disconnect(self, code):
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        if text_data:
            try:
                message = json.loads(text_data)
            except ValueError:
                return
            if message.get("type") == "ping":
                await self.send(text_data=json.dumps({"type": "pong"}))

    async def agent_poke(self, event):
        await self.send(text_data=json.dumps({"type": "poke"}))
