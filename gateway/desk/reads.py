"""Read state: how far the customer and the agent have read each open conversation.

Each side tells the gateway the highest seq it has shown (``{"type": "read", "seq": N}``) and
the other side gets ``{"type": "read", "seq": N, "by": ...}`` (docs/protocol.md, "Read state").
A mark only moves forward. Marks live in the gateway process, per open conversation: a
reconnecting customer or agent is sent the other side's mark again after its replay, but a
restart of the gateway forgets them (the messages themselves are stored; only "Read" is lost
until the next mark). A closed conversation's marks are forgotten.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Literal

from ..dispatcher import Dispatcher
from ..model import Conversation
from ..websocket import FrameRejected

Side = Literal["customer", "agent"]


class ReadState:
    """The read frames of both sockets: check, record, tell the other side."""

    def __init__(self, dispatcher: Dispatcher, tell_agent: Callable[[str, dict[str, Any]], None],
                 tell_customer: Callable[[str, str, dict[str, Any]], Awaitable[None]],
                 conversation: Callable[[str], Awaitable[Conversation]]) -> None:
        self.marks = ReadMarks()
        self._dispatcher = dispatcher
        self._tell_agent = tell_agent
        self._tell_customer = tell_customer
        self._conversation = conversation

    async def customer_read(self, conversation_id: str, frame: dict[str, Any]) -> None:
        conversation = await self._conversation(conversation_id)
        seq = read_seq(frame, conversation.last_seq)
        agent_id = self._dispatcher.assignee(conversation_id)
        if self.marks.advance(conversation_id, "customer", seq) and agent_id is not None:
            self._tell_agent(agent_id, read_frame("customer", seq, conversation_id))

    async def agent_read(self, agent_id: str, conversation_id: str, frame: dict[str, Any]) -> None:
        channel = self._dispatcher.assigned_channel(agent_id, conversation_id)
        if channel is None:
            raise FrameRejected("not_assigned", f"conversation {conversation_id!r} is not assigned to you")
        conversation = await self._conversation(conversation_id)
        seq = read_seq(frame, conversation.last_seq)
        if self.marks.advance(conversation_id, "agent", seq):
            await self._tell_customer(conversation_id, channel, read_frame("agent", seq))

    def for_customer(self, conversation_id: str) -> dict[str, Any] | None:
        """The agent's mark, for a customer that (re)joined; None before any."""
        seq = self.marks.of(conversation_id, "agent")
        return read_frame("agent", seq) if seq else None

    def for_agent(self, conversation_id: str) -> dict[str, Any] | None:
        """The customer's mark, for an agent that (re)joined; None before any."""
        seq = self.marks.of(conversation_id, "customer")
        return read_frame("customer", seq, conversation_id) if seq else None

    def forget(self, conversation_id: str) -> None:
        self.marks.forget(conversation_id)


class ReadMarks:
    def __init__(self) -> None:
        self._marks: dict[str, dict[Side, int]] = {}

    def advance(self, conversation_id: str, side: Side, seq: int) -> bool:
        """Record that ``side`` has shown up to ``seq``; True when that moved its mark."""
        marks = self._marks.setdefault(conversation_id, {})
        if seq <= marks.get(side, 0):
            return False
        marks[side] = seq
        return True

    def of(self, conversation_id: str, side: Side) -> int:
        """The highest seq ``side`` has read (0: none yet, or not known since a restart)."""
        return self._marks.get(conversation_id, {}).get(side, 0)

    def forget(self, conversation_id: str) -> None:
        self._marks.pop(conversation_id, None)


def read_seq(frame: dict[str, Any], last_seq: int) -> int:
    """The ``seq`` of a read frame: an integer from 1 to the conversation's last seq."""
    seq = frame.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise FrameRejected("bad_read", '"seq" must be the positive seq of the last event shown')
    if seq > last_seq:
        raise FrameRejected("bad_read", f'"seq" {seq} is beyond the conversation\'s last event ({last_seq})')
    return seq


def read_frame(side: Side, seq: int, conversation_id: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "read", "seq": seq, "by": side}
    if conversation_id is not None:
        frame["conversation_id"] = conversation_id
    return frame
