"""The agent link: a websocket the agent keeps open so the manager can poke it
and relay byte streams (terminals, TCP) to its kernels.

Streams: a client-facing consumer (``sessions.consumers``, in any daphne
process) sends ``link.open`` to the agent's group with its own channel name as
``reply_to``; this consumer remembers the stream, forwards the open frame to
the agent and from then on relays, in both directions:

* agent text frames ``stream.opened|ack|close|error`` -> ``stream.opened|ack|closed|error``
  channel messages to ``reply_to`` (``stream.opened`` carries this link's channel name,
  so the client sends everything else straight here);
* agent binary frames (``agents.protocol.encode_data``) -> ``stream.data``;
* ``link.data`` -> a binary frame to the agent, ``link.control`` (resize, ack,
  eof, close) -> a text frame.

When the link drops, every stream it carried gets ``stream.error`` (marked
``lost``: the terminal tells its user the connection to the node was lost).
Client consumers check that the link still knows their stream with
``link.ping`` (answered ``stream.pong``, or ``stream.error`` for a stream it
does not know), so a link that died without saying so (its process killed)
ends its streams too.  The frame format is in ``docs/agent-protocol.md``.
"""
import json
import logging

from channels.db import database_sync_to_async
from channels.exceptions import ChannelFull
from channels.generic.websocket import AsyncWebsocketConsumer

from agents import services
from agents.api.authentication import bearer_token
from agents.models import Agent
from agents.protocol import MAX_STREAMS, LinkMessage, decode_data, encode_data, valid_stream_id
from backendai import hints, requestctx

log = logging.getLogger(__name__)

#: Control frames a client consumer may have forwarded to the agent.
_CONTROL = (LinkMessage.STREAM_RESIZE, LinkMessage.STREAM_ACK, LinkMessage.STREAM_EOF, LinkMessage.STREAM_CLOSE)


class AgentLinkConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self.scope.get("headers", [])}
        query = dict(p.split("=", 1) for p in self.scope.get("query_string", b"").decode().split("&") if "=" in p)
        self.agent_id = query.get("agent_id", "")
        self.streams: dict[str, str] = {}  # stream id -> the client consumer's channel name
        allowed = await self._authorized(bearer_token(headers.get("authorization")), self.agent_id)
        if not allowed:
            await self.close(code=4401)
            return
        requestctx.bind(agent_id=self.agent_id)  # the link's log lines name the agent
        self.group = services.agent_group(self.agent_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        hints.serves_agents()
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
            log.info("agent %s link closed (code %s)", self.agent_id, code)
        streams, self.streams = getattr(self, "streams", {}), {}
        for stream_id, reply_to in streams.items():
            await self._tell(reply_to, {"type": "stream.error", "stream": stream_id, "lost": True,
                                        "message": f"connection to the node lost (agent {self.agent_id})"})
        if streams:
            log.info("agent %s link closed with %d open stream(s)", self.agent_id, len(streams))

    # -- from the agent -------------------------------------------------------------------------
    async def receive(self, text_data=None, bytes_data=None):
        if bytes_data is not None:
            await self._from_agent_data(bytes_data)
            return
        if not text_data:
            return
        try:
            message = json.loads(text_data)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        if kind == LinkMessage.PING:
            await self.send(text_data=json.dumps({"type": LinkMessage.PONG}))
        elif isinstance(kind, str) and kind.startswith("stream."):
            await self._from_agent_control(kind, message)

    async def _from_agent_data(self, frame: bytes) -> None:
        try:
            stream_id, payload = decode_data(frame)
        except ValueError:
            log.debug("agent %s sent a malformed data frame", self.agent_id)
            return
        reply_to = self.streams.get(stream_id)
        if reply_to is None:
            await self._close_on_agent(stream_id)
            return
        if not await self._tell(reply_to, {"type": "stream.data", "stream": stream_id, "data": payload}):
            self.streams.pop(stream_id, None)
            await self._close_on_agent(stream_id, "the client does not read")

    async def _from_agent_control(self, kind: str, message: dict) -> None:
        stream_id = message.get("stream")
        if not valid_stream_id(stream_id):
            return
        reply_to = self.streams.get(stream_id)
        if reply_to is None:
            if kind in (LinkMessage.STREAM_OPENED, LinkMessage.STREAM_ACK):
                await self._close_on_agent(stream_id)  # its client is gone
            return
        if kind == LinkMessage.STREAM_OPENED:
            await self._tell(reply_to, {"type": "stream.opened", "stream": stream_id, "link": self.channel_name})
        elif kind == LinkMessage.STREAM_ACK:
            await self._tell(reply_to, {"type": "stream.ack", "stream": stream_id, "n": message.get("n", 1)})
        elif kind == LinkMessage.STREAM_CLOSE:
            self.streams.pop(stream_id, None)
            await self._tell(reply_to, {"type": "stream.closed", "stream": stream_id,
                                        "exit_code": message.get("exit_code"), "reason": message.get("reason")})
        elif kind == LinkMessage.STREAM_ERROR:
            self.streams.pop(stream_id, None)
            await self._tell(reply_to, {"type": "stream.error", "stream": stream_id,
                                        "message": str(message.get("message") or "stream failed")[:500]})

    async def _close_on_agent(self, stream_id: str, reason: str | None = None) -> None:
        frame = {"type": LinkMessage.STREAM_CLOSE, "stream": stream_id}
        if reason:
            frame["reason"] = reason
        await self.send(text_data=json.dumps(frame))

    async def _tell(self, channel: str, message: dict) -> bool:
        """Send to a client consumer; False when its channel is full (it stopped reading)."""
        try:
            await self.channel_layer.send(channel, message)
            return True
        except ChannelFull:
            log.warning("agent %s link: the channel of stream %s is full; dropping the stream", self.agent_id,
                        message.get("stream"))
            return False

    # -- from client consumers (channel layer) --------------------------------------------------
    async def agent_poke(self, event):
        await self.send(text_data=json.dumps({"type": LinkMessage.POKE}))

    async def link_open(self, event):
        frame = event.get("frame") or {}
        stream_id, reply_to = frame.get("stream"), event.get("reply_to")
        if not valid_stream_id(stream_id) or not reply_to or frame.get("type") != LinkMessage.STREAM_OPEN:
            return
        if stream_id not in self.streams and len(self.streams) >= MAX_STREAMS:
            await self._tell(reply_to, {"type": "stream.error", "stream": stream_id,
                                        "message": f"agent {self.agent_id} already relays {MAX_STREAMS} streams"})
            return
        self.streams[stream_id] = reply_to
        await self.send(text_data=json.dumps(frame))

    async def link_ping(self, event):
        """A client consumer asks whether this link still carries its stream."""
        stream_id, reply_to = event.get("stream"), event.get("reply_to")
        if not reply_to or not valid_stream_id(stream_id):
            return
        if self.streams.get(stream_id) == reply_to:
            await self._tell(reply_to, {"type": "stream.pong", "stream": stream_id})
        else:
            await self._tell(reply_to, {"type": "stream.error", "stream": stream_id, "lost": True,
                                        "message": f"connection to the node lost (agent {self.agent_id} "
                                                   "no longer carries this stream)"})

    async def link_data(self, event):
        stream_id = event.get("stream")
        if stream_id in self.streams and event.get("data"):
            await self.send(bytes_data=encode_data(stream_id, event["data"]))

    async def link_control(self, event):
        frame = event.get("frame") or {}
        stream_id = frame.get("stream")
        if stream_id not in self.streams or frame.get("type") not in _CONTROL:
            return
        if frame["type"] == LinkMessage.STREAM_CLOSE:
            self.streams.pop(stream_id, None)
        await self.send(text_data=json.dumps(frame))
