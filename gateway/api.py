"""The admin HTTP API (bearer ``server.admin_token``) and the Prometheus endpoint.

- ``PUT /api/customers/{id}`` upserts a customer profile with identities, tier and attributes
  (how a CRM pushes its VIP list); ``GET`` reads back the customer 360; ``POST .../merge`` and
  ``POST .../unmerge`` merge two customers and undo it (gateway/customers/).
- ``GET /api/queues``: service levels and live figures per queue; ``GET /api/agents``.
- ``POST /api/config/reload``: validate config.yaml and swap it in, or say why not.
- ``GET /api/conversations`` (filtered, newest first, paged) and ``GET /api/conversations/{id}``
  with its events: what agents and supervisors read back (``gateway.transcripts``).
- ``POST /api/attachments?conversation_id=..&name=..`` (an agent's token: a file for its reply;
  the body is the file, its Content-Type the file's) and ``GET /api/attachments/{id}`` (the
  bytes, for admins and the conversation's agents).
- ``GET /api/board`` and ``GET /api/board/history``: the supervisor board's figures and its
  charts' samples (gateway/board/), what ``/board/ws`` pushes.
- ``GET /api/kb/stats``: deflection per KB entry (gateway/selfservice/deflection.py);
  ``GET /api/kb/proposals`` and ``POST /api/kb/proposals/{id}/approve`` or ``.../reject``:
  knowledge capture (gateway/selfservice/capture.py).
- ``GET /metrics``: the same figures in Prometheus text format (no token: scrape it from inside).

Every failure is a JSON answer ``{"error": code, "message": text}``: storage that cannot be
reached is 503 ``unavailable`` (nothing was changed; retry), anything unexpected is 500
``internal`` with one log line, never a bare traceback.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from routing.config import NAME

from adapters.base import IncomingFile
from adapters.registry import known_types

from .agent_auth import agent_for_token, is_admin_token
from .attachments import attachment_response
from .board.feed import BoardFeed
from .customers import BadAddress, normalise
from .customers.directory import CHANNEL_KINDS
from .limits import seconds
from .pipeline import ConversationError, Pipeline
from .reload import ConfigReloader
from .reports import GatewayCollector, LimitsCollector, agent_report, queue_report
from .selfservice.agents import kb_file
from .selfservice.capture import approve_into
from .selfservice.deflection import DeflectionCollector, kb_stats
from .store import NotFound, StoreError, StoreUnavailable
from .store.customer_links import MergeRefused
from .store.text import bad_identifier, dumps
from .transcripts import (BadQuery, conversation_json, encode_cursor, event_json, known_parameters,
                          parse_conversation_query, parse_event_query)

log = logging.getLogger("contactgate.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class IdentityIn(BaseModel):
    """A verified identity the admin sets: ``kind`` (email, phone, telegram, ...) and/or the
    ``channel`` that knows the address (its type is then the kind)."""

    model_config = ConfigDict(extra="forbid")
    channel: str | None = Field(default=None, min_length=1, max_length=64)
    kind: str | None = Field(default=None, pattern=NAME, max_length=64)
    address: str = Field(min_length=1, max_length=512)

    @field_validator("kind")
    @classmethod
    def _one_spelling(cls, kind: str | None) -> str | None:
        return kind.lower() if kind is not None else None  # "EMAIL" is the email kind

    @model_validator(mode="after")
    def _named(self) -> "IdentityIn":
        if self.channel is None and self.kind is None:
            raise ValueError('give "kind" (email, phone, telegram, ...) or "channel"')
        return self


class MergeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    from_: str = Field(alias="from", min_length=1, max_length=128)


class UnmergeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    merge_id: str = Field(min_length=1, max_length=128)


ROUTED_ATTRIBUTES = ("email", "phone", "language")  # the attributes routing reads as text


class CustomerIn(BaseModel):
    """Fields left out are kept; identities are added (never removed)."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=200)
    tier: str | None = Field(default=None, pattern=NAME)
    attributes: dict[str, Any] | None = None
    identities: list[IdentityIn] = []

    @field_validator("attributes")
    @classmethod
    def _routed_are_text(cls, attributes: dict[str, Any] | None) -> dict[str, Any] | None:
        """``email``, ``phone`` and ``language`` are what routing reads as text: a number there
        would make every tier and routing decision of the customer fail, so it is refused."""
        for key in ROUTED_ATTRIBUTES:
            value = (attributes or {}).get(key)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{key!r} must be a string (or null): routing reads it, got {value!r}"[:200])
        return attributes


ADMIN = "\0admin"  # who a request is when it carries server.admin_token (no agent id can hold NUL)


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


@web.middleware
async def api_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Under ``/api/``, a path or method the API does not have is answered in its error shape
    (``{"error", "message"}``), not aiohttp's plain text."""
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as exc:
        if not request.path.startswith("/api/"):
            raise
        allowed = ", ".join(sorted(exc.allowed_methods))
        response = error(405, "method_not_allowed", f"{request.method} is not allowed on {request.path} (allowed: {allowed})")
        response.headers["Allow"] = ",".join(sorted(exc.allowed_methods))
        return response
    except web.HTTPNotFound:
        if not request.path.startswith("/api/"):
            raise
        return error(404, "not_found", f"no such endpoint: {request.method} {request.path}")


def _bad_body(exc: ValidationError, code: str) -> web.Response:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return error(400, code, f"{where}: {first['msg']}")


def rate_limited(wait: float) -> web.Response:
    """429 for an address locked out after failed authentications (see ``limits.failed_auth``)."""
    retry_after = seconds(wait)
    return web.json_response({"error": "rate_limited", "retry_after": retry_after,
                              "message": "too many failed authentications from this address; retry after retry_after seconds"},
                             status=429, headers={"Retry-After": str(math.ceil(retry_after))})


class AdminApi:
    def __init__(self, pipeline: Pipeline, reloader: ConfigReloader, board: BoardFeed) -> None:
        self.pipeline = pipeline
        self.reloader = reloader
        self.board = board
        self.registry = CollectorRegistry()
        self.registry.register(GatewayCollector(pipeline))
        self.registry.register(LimitsCollector(pipeline.limits))
        self.deflection = DeflectionCollector()
        self.registry.register(self.deflection)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.put("/api/customers/{customer_id}", self._admin(self.put_customer)),
            web.get("/api/customers/{customer_id}", self._admin(self.get_customer)),
            web.post("/api/customers/{customer_id}/merge", self._admin(self.merge_customer)),
            web.post("/api/customers/{customer_id}/unmerge", self._admin(self.unmerge_customer)),
            web.get("/api/queues", self._admin(self.queues)),
            web.get("/api/agents", self._admin(self.agents)),
            web.get("/api/board", self._admin(self.board_figures)),
            web.get("/api/board/history", self._admin(self.board_history)),
            web.post("/api/config/reload", self._admin(self.reload)),
            web.get("/api/conversations", self._admin(self.conversations)),
            web.get("/api/conversations/{conversation_id}", self._admin(self.conversation)),
            web.post("/api/attachments", self._admin_or_agent(self.upload_attachment)),
            web.get("/api/attachments/{attachment_id}", self._admin_or_agent(self.download_attachment)),
            web.get("/api/kb/stats", self._admin(self.kb_stats)),
            web.get("/api/kb/proposals", self._admin(self.kb_proposals)),
            web.post("/api/kb/proposals/{proposal_id}/approve", self._admin(self.approve_proposal)),
            web.post("/api/kb/proposals/{proposal_id}/reject", self._admin(self.reject_proposal)),
            web.get("/metrics", self.metrics),
        ]

    def _admin(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            token = self.pipeline.config.server.admin_token
            if token is None or not token.get_secret_value():
                return error(403, "admin_disabled", "set server.admin_token (e.g. from ${CONTACTGATE_ADMIN_TOKEN}) to use the admin API")
            who = await self._bearer(request, agents=False)
            if isinstance(who, web.Response):
                return who
            return await self._answer(handler, request)

        return guarded

    def _admin_or_agent(self, handler: Callable[[web.Request, str | None], Awaitable[web.StreamResponse]]) -> Handler:
        """The admin token (agent None) or an agent's own token (its id)."""
        async def guarded(request: web.Request) -> web.StreamResponse:
            who = await self._bearer(request, agents=True)
            if isinstance(who, web.Response):
                return who
            return await self._answer(lambda r: handler(r, None if who == ADMIN else who), request)

        return guarded

    async def _bearer(self, request: web.Request, *, agents: bool) -> str | web.Response:
        """Who the request's bearer token is (ADMIN or an agent id), or the 401/429 answer."""
        limits = self.pipeline.limits
        address = limits.client_address(request)
        if locked_for := limits.locked_for("admin", address):
            return rate_limited(locked_for)
        given = request.headers.get("Authorization", "")
        admin = given.startswith("Bearer ") and is_admin_token(self.pipeline.config.server.admin_token,
                                                               given.removeprefix("Bearer "))
        agent = agent_for_token(self.pipeline.config.agents, given.removeprefix("Bearer ")) if agents else None
        if not admin and agent is None:
            if given:  # a token was tried (no header at all guesses nothing: not counted, not delayed)
                await limits.auth_failed("admin", address)  # logs the address, answers late
            wanted = "server.admin_token or your agent token" if agents else "server.admin_token"
            return error(401, "unauthorized", f"send Authorization: Bearer <{wanted}>")
        limits.auth_succeeded("admin", address)
        return ADMIN if admin else agent  # type: ignore[return-value]

    @staticmethod
    async def _answer(handler: Handler, request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise  # aiohttp's own answers (413 for a body over client_max_size, ...)
        except ConversationError as exc:
            status = 413 if exc.code == "attachment_too_large" else 409
            return error(status, exc.code, str(exc))
        except StoreUnavailable as exc:
            log.error("store unavailable", extra={"error": str(exc), "path": request.path})
            return error(503, "unavailable", "storage is unavailable; nothing was changed, retry later")
        except Exception as exc:
            log.error("admin request failed", exc_info=exc,
                      extra={"error": f"{type(exc).__name__}: {exc}", "path": request.path})
            return error(500, "internal", "the gateway failed to handle this request; see its log")

    # attachments ---------------------------------------------------------------------------
    async def upload_attachment(self, request: web.Request, agent_id: str | None) -> web.Response:
        if agent_id is None:
            return error(403, "agents_only", "attachments are uploaded by the agent who sends them")
        conversation_id = request.query.get("conversation_id", "")
        name = request.query.get("name", "")
        if not conversation_id or not name or bad_identifier(conversation_id):
            return error(400, "bad_attachment", "give ?conversation_id=<id>&name=<file name>; the body is the file")
        limit = self.pipeline.config.attachments.max_bytes
        if request.content_length is not None and request.content_length > limit:
            return error(413, "attachment_too_large", f"files up to {limit} bytes are accepted")
        body = bytearray()
        async for chunk in request.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > limit:
                return error(413, "attachment_too_large", f"files up to {limit} bytes are accepted")
        content_type = request.headers.get("Content-Type", "application/octet-stream").split(";")[0].strip().lower()
        try:
            attachment = await self.pipeline.upload(agent_id, conversation_id,
                                                    IncomingFile(name, content_type or "application/octet-stream", bytes(body)))
        except ConversationError as exc:
            if exc.code == "unknown_conversation":
                return error(404, exc.code, str(exc))
            raise
        return web.json_response(attachment.summary(), status=201)

    async def download_attachment(self, request: web.Request, agent_id: str | None) -> web.StreamResponse:
        attachment_id = request.match_info["attachment_id"]
        try:
            attachment, data = await self.pipeline.get_attachment(attachment_id)
        except NotFound:
            return error(404, "not_found", f"no attachment {attachment_id!r}")
        if agent_id is not None and not await self.pipeline.agent_may_see(agent_id, attachment.conversation_id):
            # The same answer as for a missing one: an agent learns nothing of other conversations.
            return error(404, "not_found", f"no attachment {attachment_id!r}")
        return attachment_response(attachment, data)

    async def put_customer(self, request: web.Request) -> web.Response:
        customer_id = request.match_info["customer_id"]
        if not 1 <= len(customer_id) <= 128 or bad_identifier(customer_id):
            return error(400, "bad_customer_id", "customer id must be 1-128 characters, without control characters")
        try:
            body = CustomerIn.model_validate_json(await request.read())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            return error(400, "bad_customer", f"{where}: {first['msg']}")
        try:
            dumps(body.attributes)
        except ValueError:
            return error(400, "bad_customer", "attributes: numbers must be finite (no NaN or Infinity)")
        identities = []  # checked before anything is written
        channels = {c.channel_name for c in self.pipeline.config.channels}
        kinds = known_types() | set(CHANNEL_KINDS.values())  # a kind's name used as a channel: "email"
        for index, identity in enumerate(body.identities):
            if identity.channel is not None and identity.channel not in channels | kinds:  # a typo
                return error(400, "bad_customer", f"identities.{index}.channel: no channel {identity.channel!r} in the"
                             f" config (channels: {', '.join(sorted(channels)) or 'none'}; or a kind's name:"
                             f" {', '.join(sorted(kinds))}); or give \"kind\"")
            channel = identity.channel or identity.kind or ""
            kind = identity.kind or self.pipeline.customers.kind_of(channel)
            try:
                identities.append((channel, normalise(kind, identity.address), kind))
            except BadAddress as exc:
                return error(400, "bad_customer", f"identities.{index}.address: {exc}")
        store = self.pipeline.store
        created = False
        try:
            await store.get_customer(customer_id)
            changes: dict[str, Any] = {}
            if "name" in body.model_fields_set:
                changes["name"] = body.name
            if "tier" in body.model_fields_set:
                changes["tier"] = body.tier
            if "attributes" in body.model_fields_set:
                changes["attributes"] = body.attributes or {}
            if changes:
                await store.update_customer(customer_id, **changes)
        except NotFound:
            try:
                await store.create_customer(customer_id=customer_id, name=body.name, tier=body.tier,
                                            attributes=body.attributes or {})
                created = True
            except StoreError:
                # Another request created it first: this one is an update of that profile.
                await store.get_customer(customer_id)
                fields = {k: getattr(body, k) for k in ("name", "tier", "attributes") if k in body.model_fields_set}
                if fields:
                    await store.update_customer(customer_id, **fields)
        for channel, address, kind in identities:
            await store.add_identity(customer_id, channel, address, kind=kind, source="admin")
        return web.json_response(await self._profile(customer_id), status=201 if created else 200)

    async def get_customer(self, request: web.Request) -> web.Response:
        try:
            return web.json_response(await self._profile(request.match_info["customer_id"]))
        except NotFound:
            return error(404, "unknown_customer", f"no customer {request.match_info['customer_id']!r}")

    async def _profile(self, customer_id: str) -> dict[str, Any]:
        """The customer 360 (docs/customers.md) and its merges; a merged customer's own row
        with ``merged_into``."""
        store = self.pipeline.store
        customer = await store.get_customer(customer_id)
        if customer.merged_into is not None:
            return {"id": customer.id, "name": customer.name, "tier": customer.tier, "attributes": customer.attributes,
                    "merged_into": customer.merged_into, "identities": [],
                    "merges": [m.summary() for m in await store.customer_merges(customer_id)]}
        view = await self.pipeline.customer_desk.view(customer_id)
        # `tier` is the profile's, as PUT sets it (null: rules decide); `effective_tier` what routing gives now.
        return {**view, "tier": customer.tier, "effective_tier": view["tier"], "merged_into": None,
                "merges": [m.summary() for m in await store.customer_merges(customer_id)]}

    async def merge_customer(self, request: web.Request) -> web.Response:
        """POST /api/customers/{id}/merge {"from": other}: the other customer moves into this one."""
        customer_id = request.match_info["customer_id"]
        try:
            body = MergeIn.model_validate_json(await request.read())
        except ValidationError as exc:
            return _bad_body(exc, "bad_merge")
        try:
            await self.pipeline.store.get_customer(customer_id)  # an unknown id says so before anything else
            merge = await self.pipeline.customers.merge(customer_id, body.from_, by="admin")
        except NotFound as exc:
            return error(404, "unknown_customer", str(exc))
        except MergeRefused as exc:
            return error(400 if exc.code == "same_customer" else 409, exc.code, str(exc))
        await self.pipeline.customer_desk.merged(merge)
        return web.json_response({"merge": merge.summary(), "customer": await self._profile(customer_id)})

    async def unmerge_customer(self, request: web.Request) -> web.Response:
        """POST /api/customers/{id}/unmerge {"merge_id": ...}: put back exactly what it moved."""
        customer_id = request.match_info["customer_id"]
        try:
            body = UnmergeIn.model_validate_json(await request.read())
        except ValidationError as exc:
            return _bad_body(exc, "bad_unmerge")
        try:
            await self.pipeline.store.get_customer(customer_id)
        except NotFound as exc:
            return error(404, "unknown_customer", str(exc))
        try:
            merge = await self.pipeline.customers.unmerge(customer_id, body.merge_id, by="admin")
        except NotFound as exc:
            return error(404, "unknown_merge", str(exc))
        except MergeRefused as exc:
            return error(409, exc.code, str(exc))
        await self.pipeline.customer_desk.merged(merge, undone=True)
        return web.json_response({"merge": merge.summary(), "customer": await self._profile(customer_id),
                                  "restored": await self._profile(merge.source_id)})

    async def queues(self, request: web.Request) -> web.Response:
        return web.json_response({"queues": queue_report(self.pipeline, self.pipeline.clock())})

    async def agents(self, request: web.Request) -> web.Response:
        return web.json_response({"agents": agent_report(self.pipeline, self.pipeline.clock())})

    async def board_figures(self, request: web.Request) -> web.Response:
        return web.json_response(self.board.snapshot())

    async def board_history(self, request: web.Request) -> web.Response:
        return web.json_response({"hours": self.pipeline.config.board.history_hours,
                                  "queues": await self.board.recent()})

    async def reload(self, request: web.Request) -> web.Response:
        outcome = await self.reloader.reload(reason="api")
        return web.json_response(outcome.as_json(), status=200 if outcome.ok else 422)

    async def metrics(self, request: web.Request) -> web.Response:
        try:
            await self.deflection.refresh(self.pipeline.store)
        except StoreError as exc:  # the live figures still count; the KB's are the last read
            log.error("kb outcomes not read for /metrics", extra={"error": str(exc)})
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def conversations(self, request: web.Request) -> web.Response:
        try:
            query = parse_conversation_query(request.query)
        except BadQuery as exc:
            return error(400, exc.code, str(exc))
        # One more than asked: whether a next page exists, without a count query.
        found = await self.pipeline.store.list_conversations(
            state=query.state, queue=query.queue, customer_id=query.customer_id, channel=query.channel,
            limit=query.limit + 1, before=query.before)
        page = list(found[:query.limit])
        more = len(found) > query.limit
        return web.json_response({"conversations": [conversation_json(c) for c in page],
                                  "next": encode_cursor(page[-1]) if more else None})

    async def conversation(self, request: web.Request) -> web.Response:
        conversation_id = request.match_info["conversation_id"]
        try:
            query = parse_event_query(request.query)
        except BadQuery as exc:
            return error(400, exc.code, str(exc))
        store = self.pipeline.store
        try:
            conversation = await store.get_conversation(conversation_id)
            events = list(await store.events_after(conversation_id, query.after, query.limit + 1))
        except NotFound:
            return error(404, "unknown_conversation", f"no conversation {conversation_id!r}")
        more = len(events) > query.limit
        events = events[:query.limit]
        return web.json_response({"conversation": conversation_json(conversation),
                                  "events": [event_json(e) for e in events],
                                  "next_after": events[-1].seq if more else None})

    # the knowledge base ------------------------------------------------------------------------
    async def kb_stats(self, request: web.Request) -> web.Response:
        counts = await self.pipeline.store.kb_outcome_counts()
        return web.json_response(kb_stats(counts, self.pipeline.selfservice))

    async def kb_proposals(self, request: web.Request) -> web.Response:
        try:
            known_parameters(request.query, ("status",))
        except BadQuery as exc:
            return error(400, exc.code, str(exc))
        status = request.query.get("status")
        if status not in (None, "pending", "approved", "rejected"):
            return error(400, "bad_query", '"status" must be pending, approved or rejected (or left out: all)')
        found = await self.pipeline.store.kb_proposals(status, limit=500)  # type: ignore[arg-type]
        return web.json_response({"proposals": [p.as_json() for p in found]})

    async def _pending(self, request: web.Request) -> Any:
        proposal_id = request.match_info["proposal_id"]
        try:
            proposal = await self.pipeline.store.get_kb_proposal(proposal_id)
        except NotFound:
            return error(404, "unknown_proposal", f"no proposal {proposal_id!r}")
        if proposal.status != "pending":
            return error(409, "already_decided", f"proposal {proposal_id!r} is {proposal.status} already")
        return proposal

    async def approve_proposal(self, request: web.Request) -> web.Response:
        """Write the proposal into the KB file (atomically, other entries kept), then reload."""
        proposal = await self._pending(request)
        if isinstance(proposal, web.Response):
            return proposal
        path = await kb_file(self.pipeline, proposal.conversation_id)  # the conversation's KB
        if path is None:
            return error(409, "no_kb", "selfservice.faq is not set: there is no KB file to write")
        note = await asyncio.to_thread(approve_into, path, proposal)  # ProposalRejected: 409, file unchanged
        decided = await self.pipeline.store.decide_kb_proposal(proposal.id, "approved", note)
        if decided is None:
            return error(409, "already_decided", f"proposal {proposal.id!r} was decided meanwhile; the KB has it once")
        reloaded = await self.reloader.reload(reason="kb proposal approved")
        return web.json_response({"proposal": decided.as_json(), "reload": reloaded.as_json()})

    async def reject_proposal(self, request: web.Request) -> web.Response:
        proposal = await self._pending(request)
        if isinstance(proposal, web.Response):
            return proposal
        reason = None
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                return error(400, "bad_json", 'the body must be a JSON object: {"reason": "..."} (or empty)')
            reason = body.get("reason")
            if reason is not None and (not isinstance(reason, str) or len(reason) > 2000):
                return error(400, "bad_reason", '"reason" must be a string of at most 2000 characters')
        decided = await self.pipeline.store.decide_kb_proposal(proposal.id, "rejected", reason)
        if decided is None:
            return error(409, "already_decided", f"proposal {proposal.id!r} was decided meanwhile")
        return web.json_response({"proposal": decided.as_json()})
