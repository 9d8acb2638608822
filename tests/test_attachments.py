"""Attachments: what the limits keep, how a refusal reads, and files on the web chat (an agent's
upload, shown to the customer, downloaded with the customer's own token only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest_asyncio

from adapters.base import IncomingFile
from gateway.attachments import AttachmentsConfig, clean_name, clean_type, human_size, refusal_note, screen
from support import ALICE_TOKEN, BOB_TOKEN, Agent, Customer, GatewayProcess, gateway_config

ADMIN_TOKEN = "admin-test-token"


def file(name: str, size: int) -> IncomingFile:
    return IncomingFile(name, "application/octet-stream", b"x" * size)


def test_screen_refuses_large_files_then_what_passes_the_message_total() -> None:
    config = AttachmentsConfig(max_bytes=100, max_message_bytes=250)
    kept, refused = screen([file("a", 100), file("big", 101), file("b", 100), file("c", 60), file("d", 50)], config)
    assert [f.name for f in kept] == ["a", "b", "d"]
    assert [(r.name, r.reason) for r in refused] == [("big", "too_large"), ("c", "message_too_large")]


def test_refusal_note_names_each_file_and_the_limit() -> None:
    config = AttachmentsConfig(max_bytes=10 * 1024 * 1024, max_message_bytes=25 * 1024 * 1024)
    _, refused = screen([file("scan.tiff", 11 * 1024 * 1024)], config)
    note = refusal_note(refused, config)
    assert '"scan.tiff" (11 MB): files up to 10 MB are accepted' in note
    assert note.startswith("We could not accept this file:")


def test_names_and_types_are_made_safe() -> None:
    assert clean_name("C:\\Users\\mei\\发票.pdf") == "发票.pdf"
    assert clean_name("../../etc/passwd") == "passwd"
    assert clean_name("a\r\nb\x00.txt") == "ab.txt"
    assert clean_name("") == "attachment"
    assert clean_name("..") == clean_name("a/.") == clean_name(" . ") == "attachment"
    assert clean_type("Image/PNG; name=x") == "image/png"
    assert clean_type("text/html\r\nX-Evil: 1") == "application/octet-stream"
    assert clean_type(None) == "application/octet-stream"
    assert human_size(1536) == "1.5 KB" and human_size(10) == "10 bytes"


@pytest_asyncio.fixture
async def gateway(tmp_path: Path, sqlite_url: str) -> AsyncIterator[GatewayProcess]:
    config = gateway_config(sqlite_url, attachments={"max_bytes": 1000, "max_message_bytes": 1000})
    config["server"]["admin_token"] = ADMIN_TOKEN
    process = await GatewayProcess.write_config(tmp_path, config).start()
    yield process
    await process.stop()


async def upload(gateway: GatewayProcess, token: str, conversation_id: str, name: str, data: bytes,
                 content_type: str = "application/pdf") -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gateway.http}/api/attachments", params={"conversation_id": conversation_id, "name": name},
                             data=data, headers={"Authorization": f"Bearer {token}", "Content-Type": content_type}) as r:
            return r.status, await r.json()


async def download(gateway: GatewayProcess, path: str, token: str | None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway.http}{path}", headers=headers) as r:
            return r.status, await r.read()


async def test_agent_sends_a_file_the_customer_sees_and_downloads(gateway: GatewayProcess) -> None:
    alice = await Agent.connect(gateway, ALICE_TOKEN)
    await alice.next("ready")
    mei = await Customer.connect(gateway)
    token = mei.token
    await mei.send(type="message", id="m1", text="agent please")
    offer = (await alice.next("offer"))["conversation"]

    # Only the agent the conversation is assigned to may upload to it.
    status, body = await upload(gateway, ALICE_TOKEN, offer["id"], "label.pdf", b"%PDF-1.4 label")
    assert (status, body["error"]) == (409, "not_assigned")
    await alice.send(type="accept", conversation_id=offer["id"])
    await alice.next("assigned")
    status, body = await upload(gateway, BOB_TOKEN, offer["id"], "x.pdf", b"x")
    assert (status, body["error"]) == (409, "not_assigned")
    status, body = await upload(gateway, ALICE_TOKEN, offer["id"], "big.pdf", b"x" * 1001)
    assert (status, body["error"]) == (413, "attachment_too_large")
    status, body = await upload(gateway, ADMIN_TOKEN, offer["id"], "x.pdf", b"x")
    assert status == 403
    status, label = await upload(gateway, ALICE_TOKEN, offer["id"], "label.pdf", b"%PDF-1.4 label")
    assert status == 201 and label["size"] == 14 and label["name"] == "label.pdf"

    # A frame naming an attachment of another conversation, or none, is refused.
    await alice.send(type="message", conversation_id=offer["id"], id="a0", text="x", attachments=["nope"])
    assert (await alice.next("error"))["code"] == "unknown_attachment"
    await alice.send(type="message", conversation_id=offer["id"], id="a1", text="", attachments=[label["id"]])
    await alice.next("ack", id="a1")
    shown = await mei.next("message", author="agent")
    assert shown["attachments"] == [label]

    path = f"/webchat/attachments/{label['id']}"
    assert await download(gateway, path, token) == (200, b"%PDF-1.4 label")
    assert (await download(gateway, path, None))[0] == 401
    stranger = await Customer.connect(gateway)
    assert (await download(gateway, path, stranger.token))[0] == 404
    assert (await download(gateway, "/webchat/attachments/missing", token))[0] == 404
    # Agents and admins through the API.
    assert await download(gateway, f"/api/attachments/{label['id']}", ALICE_TOKEN) == (200, b"%PDF-1.4 label")
    assert (await download(gateway, f"/api/attachments/{label['id']}", BOB_TOKEN))[0] == 404
    assert (await download(gateway, f"/api/attachments/{label['id']}", ADMIN_TOKEN))[0] == 200
