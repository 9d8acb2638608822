"""The agent hub: agents over a websocket at ``GET /agent/ws`` (JSON text frames).

An agent authenticates, receives offers, accepts them and then exchanges messages with the
customer until it closes the conversation. Each conversation's events reach the agent in seq
order exactly once, across reconnects (``resume``). The contract is in docs/protocol.md.

An ``auth`` is one unit: either the new connection is fully in place (then the agent's previous
one is closed with 4409) or the desk is exactly as it was. While it replays, the new connection
is *joining*: it gets live events too, so nothing falls between its replay and the live fan-out,
but it replaces nobody and the dispatcher does not know of it until the replay has succeeded.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import WSCloseCode, web

from adapters.base import NOT_WORDS

from .config import GatewayConfig
from .desk.directory import directory
from .desk.dispositions import checked_disposition
from .customers.desk import AGENT_CUSTOMER_FRAMES
from .delivery import OrderedDelivery
from .errors import frame_failure
from .logs import about
from .model import Author, Conversation, Event, EventKind
from .origins import OriginPolicy
from .agent_auth import AuthRequest, agent_for_token, auth_request
from .pipeline import ConversationError, Pipeline
from .selfservice import agents as kb
from .store import NotFound, StoreUnavailable
from .websocket import (CLOSE_AUTH_TIMEOUT, CLOSE_REPLACED, CLOSE_UNAUTHORIZED, FrameError,
                        FrameRejected, FrameSender, attachment_ids, frames, message_fields, prepare, typing_active)

log = logging.getLogger("contactgate.hub")

AGENT_FRAMES = ("accept", "decline", "message", "send_suggestion", "typing", "read", "transfer", "propose_kb",
                "close", *AGENT_CUSTOMER_FRAMES)


class AgentConnection:
    def __init__(self, agent_id: str, sender: FrameSender, pipeline: Pipeline) -> None:
        self.agent_id = agent_id
        self.sender = sender
        self.pipeline = pipeline
        self.bucket = pipeline.limits.connection_bucket()  # this socket's message rate
        self.deliveries: dict[str, OrderedDelivery] = {}
        self.pending: set[tuple[str, str]] = set()  # (conversation id, client id) not acked yet

    def follow(self, conversation_id: str, cursor: int) -> OrderedDelivery:
        delivery = self.deliveries.get(conversation_id)
        if delivery is None:
            delivery = OrderedDelivery(conversation_id, cursor, self.pipeline.events_after, self.show,
                                       room=self.sender.room)
            self.deliveries[conversation_id] = delivery
        return delivery

    async def show(self, event: Event) -> None:
        cid = event.conversation_id
        if event.kind is EventKind.MESSAGE:
            key = (cid, event.client_id or "")
            if event.author is Author.AGENT and key in self.pending:
                self.pending.discard(key)
                await self.sender.write({"type": "ack", "conversation_id": cid, "id": event.client_id, "seq": event.seq})
                return
            frame = {"type": "message", "conversation_id": cid, **event_frame(event)}
            if event.client_id:
                frame["id"] = event.client_id
            if event.author is Author.CUSTOMER and event.text:
                asked = kb.asked(self.pipeline, event)
                frame["suggestions"] = await kb.suggestions(self.pipeline, asked, cid) if asked.strip() else []
            await self.sender.write(frame)
        elif event.kind is EventKind.ASSIGNED:
            await self.sender.write({"type": "assigned", "conversation_id": cid, "seq": event.seq})
        elif event.kind is EventKind.TRANSFERRED:
            await self.sender.write({"type": "transferred", "conversation_id": cid, "seq": event.seq,
                                     "to_agent": event.data.get("to_agent"), "to_queue": event.data.get("to_queue")})
            self.deliveries.pop(cid, None)
        elif event.kind is EventKind.CLOSED:
            await self.sender.write({"type": "closed", "conversation_id": cid, "seq": event.seq,
                                     "closed_by": event.data.get("closed_by")})
            self.deliveries.pop(cid, None)
        elif event.kind is EventKind.DELIVERY_FAILED:
            await self.sender.write({"type": "delivery_failed", "conversation_id": cid, "seq": event.seq,
                                     "message_seq": event.data.get("seq"), "reason": event.data.get("reason"),
                                     "bounce": bool(event.data.get("bounce"))})
        elif event.kind is EventKind.NOTICE:
            await self.sender.write({"type": "notice", "conversation_id": cid, **event_frame(event),
                                     "notice": event.data.get("notice")})


# What an event's data adds to its frame when present: the files, the mail's subject and
# sender, the closed conversation this one follows, the original message.
SHOWN_DATA = ("attachments", "original", "subject", "from", "references", "follows", "edited", "choice", "choices",
              "faq", "handoff", "guesses", "suggestion", NOT_WORDS)


def event_frame(event: Event) -> dict[str, Any]:
    frame: dict[str, Any] = {"seq": event.seq, "author": event.author.value, "text": event.text,
                             "at": event.at.isoformat()}
    if event.kind is not EventKind.MESSAGE:
        frame["kind"] = event.kind.value
    for key in SHOWN_DATA:
        if key in event.data:
            frame[key] = event.data[key]
    return frame


class AgentHub:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.connections: dict[str, AgentConnection] = {}
        # Connections whose auth is still replaying (at most one per agent: the newest).
        self.joining: dict[str, AgentConnection] = {}
        # Only the gateway's own pages (and its other names) may open an agent's socket; read at
        # start, like the rest of ``server``.
        self.origins = OriginPolicy(pipeline.config.server.allowed_origins)
        pipeline.subscribe(self.on_event)
        pipeline.subscribe_agent_notices(self.tell)

    @property
    def config(self) -> GatewayConfig:
        return self.pipeline.config  # follows hot reloads: new agents and tokens apply at once

    def desks(self, agent_id: str) -> list[AgentConnection]:
        """The agent's connection and the one joining, if any: both get what the agent is sent."""
        return [c for c in (self.connections.get(agent_id), self.joining.get(agent_id)) if c is not None]

    def tell(self, agent_id: str, frame: dict[str, Any]) -> None:
        for connection in self.desks(agent_id):
            if frame["type"] == "removed":
                self.connections.pop(agent_id, None)
                self.joining.pop(agent_id, None)
                connection.sender.close_soon(CLOSE_UNAUTHORIZED, frame["reason"])
            else:
                connection.sender.notify(frame)

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/agent/ws", self.handle)]

    async def stop(self) -> None:
        for connection in [*self.connections.values(), *self.joining.values()]:
            await connection.sender.close(WSCloseCode.GOING_AWAY, "server shutdown")

    def authenticate(self, token: Any) -> str | None:
        return agent_for_token(self.config.agents, token)

    # fan-out from the pipeline ---------------------------------------------------------------
    async def on_event(self, conversation: Conversation, event: Event) -> None:
        if event.kind is EventKind.OFFERED:
            for connection in self.desks(event.data.get("agent_id", "")):
                await self._offer(connection, conversation, event)
            return
        if event.kind is EventKind.TRANSFERRED:
            for connection in self.desks(event.data.get("from_agent", "")):
                if (delivery := connection.deliveries.get(conversation.id)) is not None:
                    await delivery.deliver(event)
            return
        withdrawn_from = event.data.get("withdrawn_from") if event.kind is EventKind.QUEUED else None
        if withdrawn_from:
            for connection in self.desks(withdrawn_from):
                connection.deliveries.pop(conversation.id, None)
                connection.sender.send({"type": "offer_withdrawn", "conversation_id": conversation.id,
                                        "reason": event.data.get("reason")})
            return
        if conversation.agent_id is None:
            return
        for connection in self.desks(conversation.agent_id):
            if (delivery := connection.deliveries.get(conversation.id)) is not None:
                await delivery.deliver(event)

    async def _offer(self, connection: AgentConnection, conversation: Conversation, offered: Event) -> None:
        before = await self.pipeline.events_after(conversation.id, 0, offered.seq)
        transcript = [event_frame(e) for e in before if e.kind is EventKind.MESSAGE]
        # A call (or a callback request): the caller, the IVR path and what was said, as last recorded.
        ivr = next((e.data["ivr"] for e in reversed(before) if e.kind is EventKind.NOTICE and "ivr" in e.data), None)
        # The customer 360 (gateway/customers/view.py), as of now; the tier is the one routed with.
        customer = {**await self.pipeline.customer_desk.view(conversation.customer_id, conversation),
                    **{k: v for k, v in (offered.data.get("customer") or {}).items() if k in ("tier",)}}
        offer: dict[str, Any] = {
            "id": conversation.id, "channel": conversation.channel, "queue": offered.data.get("queue"),
            "customer": customer, "seq": offered.seq, "timeout": offered.data.get("timeout"),
            "transcript": transcript,
            # Is anyone there (null: a channel without live sessions)? Changes come as customer_presence.
            "customer_connected": self.pipeline.customer_connected(conversation),
            "left_message": bool(offered.data.get("left_message"))}
        offer.update(await kb.offer_extras(self.pipeline, conversation.id, before))  # the bot's handoff, KB suggestions
        if ivr is not None:
            offer["ivr"] = ivr
        if offered.data.get("transferred_from"):
            offer["transferred_from"] = offered.data["transferred_from"]
            offer["note"] = offered.data.get("note")
        connection.sender.send({"type": "offer", "conversation": offer})
        # The transcript showed everything up to the offer; the accept picks up from there.
        connection.deliveries.pop(conversation.id, None)
        connection.follow(conversation.id, offered.seq)

    # one agent socket --------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        self.origins.check(request)  # 403 before the upgrade: no cross-site socket with the agent's browser
        ws = await prepare(request, self.config.server.max_frame_bytes)
        sender = FrameSender.for_request(ws, request)
        address = self.pipeline.limits.client_address(request)
        connection: AgentConnection | None = None
        auth_timer = asyncio.get_running_loop().call_later(
            self.config.server.auth_timeout,
            lambda: connection is None and sender.close_soon(CLOSE_AUTH_TIMEOUT, "auth timeout"))
        try:
            async for frame in frames(ws, self.config.server.max_frame_bytes):
                if isinstance(frame, FrameError):
                    sender.send(frame.frame())
                    continue
                if connection is None:
                    auth_timer.cancel()  # the auth came in time, however long its replay takes
                    connection = await self._auth(sender, frame, address)
                    if connection is None:
                        break
                    continue
                with about(frame.get("conversation_id") if isinstance(frame.get("conversation_id"), str) else None,
                           connection.agent_id):
                    try:
                        await self._on_frame(connection, frame)
                    except Exception as exc:  # answered with an error frame; the socket stays open
                        sender.send(frame_failure(exc).frame())
        finally:
            auth_timer.cancel()
            sender.stop()
            if (connection is not None and self.connections.get(connection.agent_id) is connection
                    and connection.agent_id in self.pipeline.dispatcher.agents):
                del self.connections[connection.agent_id]
                with about(agent=connection.agent_id):
                    log.info("agent disconnected")
                await self.pipeline.agent_disconnected(connection.agent_id)
        return ws

    async def _auth(self, sender: FrameSender, frame: dict[str, Any], address: str) -> AgentConnection | None:
        """Authenticate and put the new connection in place, or leave the desk as it was. Returns
        the connection once it is the agent's (registered, previous one closed, dispatcher told),
        None when the auth failed (the socket is then closed)."""
        if frame["type"] != "auth":
            await sender.close(CLOSE_UNAUTHORIZED, "auth required")
            return None
        limits = self.pipeline.limits
        if await limits.close_if_locked_out("agent", address, sender):
            return None
        agent_id = self.authenticate(frame.get("token"))
        if agent_id is None:
            await limits.auth_failed("agent", address)  # logs the address, answers late
            await sender.close(CLOSE_UNAUTHORIZED, "invalid token")
            return None
        limits.auth_succeeded("agent", address)
        try:
            request = auth_request(frame)
        except FrameRejected as exc:
            sender.send(exc.error.frame())
            await sender.close(CLOSE_UNAUTHORIZED, "bad auth frame")
            return None
        connection = AgentConnection(agent_id, sender, self.pipeline)
        with about(agent=agent_id):
            try:
                await self._join(connection, request)
            except Exception as exc:
                self._leave(connection)
                await self._refuse(sender, exc)
                return None
            except BaseException:
                self._leave(connection)
                raise
            if self.joining.get(agent_id) is not connection or agent_id not in self.pipeline.dispatcher.agents:
                # A newer auth of the same agent took over meanwhile, or a reload removed it
                # (its socket is closed already then): this one changes nothing.
                await sender.close(CLOSE_REPLACED, "replaced by a newer connection")
                return None
            # The unit's commit: from here on the new connection is the agent's.
            del self.joining[agent_id]
            previous = self.connections.get(agent_id)
            self.connections[agent_id] = connection
            log.info("agent connected", extra={"resumed": sorted(request.resume)})
            if previous is not None:
                await previous.sender.close(CLOSE_REPLACED, "replaced by a newer connection")
            try:
                await self.pipeline.agent_connected(agent_id, request.status)
            except Exception as exc:
                # The agent is connected with its status (that changes before any I/O); what
                # failed is the desk moving on (withdrawing offers, new offers), which the
                # next dispatch does again.
                log.error("routing after agent connect failed", extra={"error": str(exc)})
        return connection

    async def _join(self, connection: AgentConnection, request: AuthRequest) -> None:
        """Send ``ready`` and replay what the agent missed, on the new connection only."""
        agent_id = connection.agent_id
        agent = self.pipeline.dispatcher.agents[agent_id]
        # No await between joining and ready: live events come after ready, never before it.
        self.joining[agent_id] = connection
        desk = self.pipeline.config.desk
        connection.sender.send({"type": "ready", "agent": {"id": agent_id, "name": agent.name},
                                "conversations": sorted(agent.assigned),
                                # What a close may carry (docs/protocol.md), for the console's picker.
                                "dispositions": list(desk.dispositions),
                                "require_disposition": desk.require_disposition,
                                "canned": [reply.model_dump() for reply in desk.canned]})
        for conversation_id in sorted(agent.assigned):
            await connection.follow(conversation_id, request.resume.get(conversation_id, 0)).catch_up()
            if (read := self.pipeline.reads.for_agent(conversation_id)) is not None:
                connection.sender.send(read)
        for conversation_id, seen in request.resume.items():
            if conversation_id not in agent.assigned:
                await self._finish_replay(connection, conversation_id, seen)
        # Offers still open on a replaced connection are shown again; new ones follow.
        for conversation_id in self.pipeline.dispatcher.offers_for(agent_id):
            if conversation_id not in connection.deliveries:  # not shown live while joining
                await self._reoffer(connection, conversation_id)

    def _leave(self, connection: AgentConnection) -> None:
        if self.joining.get(connection.agent_id) is connection:
            del self.joining[connection.agent_id]

    @staticmethod
    async def _refuse(sender: FrameSender, exc: Exception) -> None:
        """A replay that failed: the new socket is told and closed; nothing else changed."""
        if isinstance(exc, StoreUnavailable):
            log.error("agent resume failed: store unavailable", extra={"error": str(exc)})
            sender.send(FrameError("unavailable", "storage is unavailable; nothing changed, "
                                   "reconnect and resume in a moment").frame())
            await sender.close(WSCloseCode.TRY_AGAIN_LATER, "storage unavailable; reconnect and resume")
        else:
            sender.send(frame_failure(exc).frame())  # logs it (the traceback, for a bug)
            await sender.close(WSCloseCode.INTERNAL_ERROR, "internal error; reconnect and resume")

    async def _finish_replay(self, connection: AgentConnection, conversation_id: str, seen: int) -> None:
        """A conversation the agent had, which ended (closed or transferred) while it was away:
        replay what it missed up to that end. Only for conversations that really were its own.
        Storage errors other than an unknown conversation fail the auth."""
        try:
            events = await self.pipeline.events_after(conversation_id, seen)
        except NotFound:
            return  # an id that never was a conversation: nothing to replay
        was_mine = False
        for event in events:
            ends = (event.kind is EventKind.CLOSED
                    or (event.kind is EventKind.TRANSFERRED and event.data.get("from_agent") == connection.agent_id))
            if ends:
                conversation = await self.pipeline.get_conversation(conversation_id)
                was_mine = conversation.agent_id == connection.agent_id or event.kind is EventKind.TRANSFERRED
                break
        if not was_mine:
            return
        for event in events:
            await connection.show(event)
            if event.kind in (EventKind.CLOSED, EventKind.TRANSFERRED):
                return

    async def _reoffer(self, connection: AgentConnection, conversation_id: str) -> None:
        """An offer still open from before a reconnect is shown again."""
        events = await self.pipeline.events_after(conversation_id, 0)
        offered = next((e for e in reversed(events) if e.kind is EventKind.OFFERED), None)
        if offered is not None and offered.data.get("agent_id") == connection.agent_id:
            conversation = await self.pipeline.get_conversation(conversation_id)
            await self._offer(connection, conversation, offered)

    async def _on_frame(self, connection: AgentConnection, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "presence":
            status = frame.get("status")
            if status not in ("available", "away"):
                raise ConversationError("bad_presence", '"status" must be "available" or "away"')
            await self.pipeline.set_presence(connection.agent_id, status)
            connection.sender.send({"type": "presence", "status": status})
            return
        if kind == "directory":  # whom a transfer may go to, for the console's picker
            connection.sender.send(directory(self.pipeline.dispatcher, connection.agent_id, self.pipeline.clock()))
            return
        conversation_id = frame.get("conversation_id")
        if not isinstance(conversation_id, str) or not conversation_id:
            raise ConversationError("bad_frame", f'"{kind}" needs a "conversation_id"'
                                    if kind in AGENT_FRAMES else
                                    f"unknown frame type {kind!r}; expected one of presence, directory, {', '.join(AGENT_FRAMES)}")
        if kind in AGENT_CUSTOMER_FRAMES:
            connection.sender.send(await self.pipeline.customer_desk.agent_frame(
                connection.agent_id, kind, conversation_id, frame))
        elif kind == "accept":
            await self.pipeline.accept(connection.agent_id, conversation_id)
        elif kind == "decline":
            await self.pipeline.decline(connection.agent_id, conversation_id)
        elif kind == "transfer":
            to_agent, to_queue, note = frame.get("to_agent"), frame.get("to_queue"), frame.get("note")
            if any(v is not None and not isinstance(v, str) for v in (to_agent, to_queue, note)):
                raise ConversationError("bad_transfer", '"to_agent", "to_queue" and "note" must be strings')
            await self.pipeline.transfer(connection.agent_id, conversation_id, to_agent=to_agent,
                                         to_queue=to_queue, note=note)
        elif kind == "typing":
            await self.pipeline.agent_typing(connection.agent_id, conversation_id, typing_active(frame))
        elif kind == "read":
            await self.pipeline.reads.agent_read(connection.agent_id, conversation_id, frame)
        elif kind in ("message", "send_suggestion"):
            attachments = attachment_ids(frame)
            data = None
            if kind == "send_suggestion":
                text, data = await kb.suggested_reply(self.pipeline, conversation_id, frame)
                client_id, _ = message_fields({**frame, "text": text})
            else:
                client_id, text = message_fields(frame, text_optional=bool(attachments))
            self.pipeline.limits.agent_message(connection.bucket, conversation_id, client_id)
            key = (conversation_id, client_id)
            connection.pending.add(key)
            try:
                receipt = await self.pipeline.agent_message(connection.agent_id, conversation_id, text, client_id,
                                                            attachments, data=data)
            except BaseException:
                connection.pending.discard(key)
                raise
            if not receipt.created:
                connection.pending.discard(key)
                connection.sender.send({"type": "ack", "conversation_id": conversation_id, "id": client_id,
                                        "seq": receipt.event.seq})
        elif kind == "propose_kb":
            proposal = await kb.propose(self.pipeline, connection.agent_id, conversation_id, frame.get("proposal"))
            connection.sender.send({"type": "proposed", "conversation_id": conversation_id, "proposal": proposal.as_json()})
        elif kind == "close":
            disposition = checked_disposition(self.pipeline.config.desk, frame.get("disposition"))
            if frame.get("propose") is not None:  # the wrap-up's proposal for the KB, before the close
                proposal = await kb.propose(self.pipeline, connection.agent_id, conversation_id, frame["propose"])
                connection.sender.send({"type": "proposed", "conversation_id": conversation_id,
                                        "proposal": proposal.as_json()})
            await self.pipeline.agent_close(connection.agent_id, conversation_id, disposition)
        else:
            raise ConversationError("unknown_type", f"unknown frame type {kind!r}; "
                                    f"expected one of presence, directory, {', '.join(AGENT_FRAMES)}")
