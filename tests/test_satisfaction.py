"""The satisfaction question on a channel without sessions (a Telegram-style button press that
comes back as the choice ``satisfaction:<n>``), in process, on both store engines; the web chat
side is in tests/test_desk_console_protocol.py."""

from __future__ import annotations

from adapters.base import Inbound
from gateway.config import parse_config
from gateway.model import Author, EventKind
from gateway.pipeline import Pipeline
from gateway.selfservice import SelfService
from gateway.store import Store

CONFIG = """
channels: [{type: webchat, name: chat}, {type: email, name: mail, address: support@acme.example, smtp: {host: 127.0.0.1, port: 1025, security: none}, listen: {port: 0, accept_recipients: [acme.example]}}]
queues: [{name: general}]
routing: {default_queue: general}
desk: {satisfaction: {enabled: true, thanks: {en: Thanks a lot}}}
agents:
  - {id: a1, name: A1, token: token-a1-xxxx, capacity: 2, queues: [general]}
"""


def press(score: int, client_id: str, channel: str = "chat") -> Inbound:
    return Inbound(channel=channel, address="chat-42", text=str(score), client_id=client_id,
                   details={"choice": {"value": f"satisfaction:{score}", "message": 7}})


async def closed_conversation(pipeline: Pipeline, channel: str) -> str:
    receipt = await pipeline.receive(Inbound(channel=channel, address="chat-42", text="agent please", client_id="m1"))
    cid = receipt.event.conversation_id
    await pipeline.accept("a1", cid)
    await pipeline.agent_close("a1", cid)
    return cid


async def test_a_button_press_answers_once_and_a_later_one_is_an_ordinary_message(store: Store) -> None:
    config = parse_config(CONFIG, env={})
    pipeline = Pipeline(config, store, SelfService(config.selfservice, None))
    await pipeline.agent_connected("a1", "available")
    cid = await closed_conversation(pipeline, "chat")
    question = (await store.events_after(cid, 0))[-1]
    assert question.author is Author.BOT and question.data["choices"][4] == {"text": "5", "value": "satisfaction:5"}

    first = await pipeline.receive(press(5, "cb1"))
    assert first.created and first.event.kind is EventKind.SATISFACTION and first.event.conversation_id == cid
    assert first.event.data == {"score": 5, "comment": None, "queue": "general", "agent_id": "a1"}
    again = await pipeline.receive(press(5, "cb1"))  # the provider delivers the press again
    assert not again.created and again.event.seq == first.event.seq
    events = await store.events_after(cid, 0)
    assert [e.kind for e in events].count(EventKind.SATISFACTION) == 1 and events[-1].text == "Thanks a lot"
    assert pipeline.satisfaction.figures("general") == {"answers": 1, "average": 5.0}

    # Another press after the answer is not a second answer: it is a message like any other,
    # which opens a new conversation.
    later = await pipeline.receive(press(1, "cb2"))
    assert later.event.kind is EventKind.MESSAGE and later.event.conversation_id != cid
    assert pipeline.satisfaction.figures("general") == {"answers": 1, "average": 5.0}


async def test_email_is_not_asked(store: Store) -> None:
    config = parse_config(CONFIG, env={})
    pipeline = Pipeline(config, store, SelfService(config.selfservice, None))
    await pipeline.agent_connected("a1", "available")
    cid = await closed_conversation(pipeline, "mail")
    assert (await store.events_after(cid, 0))[-1].kind is EventKind.CLOSED
