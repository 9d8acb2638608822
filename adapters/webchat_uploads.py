"""A web chat customer sends a file: ``POST <attachments_path>?conversation_id=..&id=..&name=..``
with ``Authorization: Bearer <the token from welcome>``; the body is the file, its
``Content-Type`` the file's (docs/protocol.md, "Files").

The file becomes the customer's message ``id`` in its open conversation (a resend of the same id
stores nothing and answers the first message again), within the ``attachments:`` limits (413
beyond them, nothing stored) and the customer's message rate (429). The widget answers the
channel's allowed origins with CORS, like the downloads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from gateway.limits import RateLimited
from gateway.pipeline import ConversationError
from gateway.store import NotFound, StoreUnavailable
from gateway.store.text import bad_identifier
from gateway.websocket import MAX_CLIENT_ID

from .base import GatewayPort, IncomingFile

if TYPE_CHECKING:
    from .webchat import Settings


def _error(status: int, code: str, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": code, "message": message, **extra}, status=status)


async def customer_upload(request: web.Request, channel: str, settings: "Settings", gateway: GatewayPort,
                          identity: str | None) -> web.Response:
    """``identity``: the identity address of the bearer token (None: no token)."""
    if not settings.uploads:
        return _error(403, "uploads_disabled", f"channel {channel!r} does not take files from customers")
    if identity is None:
        return _error(401, "unauthorized", "send Authorization: Bearer <token from welcome>")
    conversation_id = request.query.get("conversation_id", "")
    client_id, name = request.query.get("id", ""), request.query.get("name", "").strip()
    if (not conversation_id or bad_identifier(conversation_id) or not client_id or len(client_id) > MAX_CLIENT_ID
            or bad_identifier(client_id) or not name):
        return _error(400, "bad_attachment", "give ?conversation_id=<from welcome>&id=<a new message id>&name=<file name>; "
                                             "the body is the file")
    limit = gateway.attachments.max_bytes
    too_large = _error(413, "attachment_too_large", f"files up to {limit} bytes are accepted; nothing was stored",
                       max_bytes=limit)
    if request.content_length is not None and request.content_length > limit:
        return too_large
    body = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            return too_large
    if not body:
        return _error(400, "bad_attachment", "the body is empty: send the file itself")
    content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower() or "application/octet-stream"
    missing = _error(404, "unknown_conversation", "no such conversation of yours")
    try:
        customer = await gateway.identify_known(channel, identity)
        if customer is None:
            return _error(401, "unauthorized", "unknown token; say hello with a null token to start over")
        conversation = await gateway.get_conversation(conversation_id)
        if conversation.customer_id != customer.id or conversation.channel != channel:
            return missing
        gateway.limits.customer_message(gateway.limits.connection_bucket(), customer.id, client_id)
        receipt = await gateway.customer_message(conversation_id, "", client_id,
                                                 files=[IncomingFile(name, content_type, bytes(body))], bot="quiet")
    except (NotFound, ConversationError) as exc:
        if isinstance(exc, ConversationError) and exc.code == "conversation_closed":
            return _error(409, exc.code, str(exc))
        return missing
    except RateLimited as exc:
        frame = exc.error.frame()
        return _error(429, "rate_limited", frame["message"], retry_after=frame["retry_after"])
    except StoreUnavailable:
        return _error(503, "unavailable", "storage is unavailable; nothing was stored, retry later")
    event = receipt.event
    return web.json_response({"id": client_id, "seq": event.seq, "attachments": event.data.get("attachments", [])},
                             status=201 if receipt.created else 200)
