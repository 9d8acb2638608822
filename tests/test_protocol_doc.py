"""docs/protocol.md's error tables say what the sockets answer: every error code the web chat's
frames can get is in the web chat's table (and a read's in the agent's), and each `unknown_type`
row lists the frame types the endpoint takes, as its error message does."""

from __future__ import annotations

import re

from gateway.hub import AGENT_FRAMES
from tests.support import REPO

DOC = (REPO / "docs" / "protocol.md").read_text(encoding="utf-8")
RAISED = re.compile(r'(?:FrameRejected|ConversationError|FrameError|_error)\(\s*"([a-z_]+)"')


def errors_table(endpoint: str) -> str:
    """The rows of the ``### Errors`` table of the section ``## <endpoint>...``."""
    section = DOC[DOC.index(f"\n## {endpoint}"):]
    section = section[:section.index("\n## ", 1)]
    table = section[section.index("\n### Errors\n"):]
    return table[:table.index("\n\n", len("\n### Errors\n") + 1)]


def codes_in(table: str) -> set[str]:
    return {code for row in table.splitlines() if row.startswith("| `")
            for code in re.findall(r"`([a-z_]+)`", row.split(" | ")[0])}


def raised(*paths: str) -> set[str]:
    return {code for path in paths for code in RAISED.findall((REPO / path).read_text(encoding="utf-8"))}


def listed_types(table: str) -> list[str]:
    row = next(r for r in table.splitlines() if r.startswith("| `unknown_type` |"))
    return re.findall(r"`([a-z_]+)`", row.split(" other than ", 1)[1].split(" (")[0])


def test_the_web_chat_table_names_every_code_its_frames_get() -> None:
    table = errors_table("Web chat")
    customer_frames = raised("adapters/webchat.py", "gateway/websocket.py", "gateway/desk/satisfaction.py",
                             "gateway/desk/reads.py") - {"not_assigned"}  # an agent's read
    assert customer_frames - codes_in(table) == set()


def test_the_agent_table_names_the_read_codes() -> None:
    assert raised("gateway/desk/reads.py") - codes_in(errors_table("Agent desk")) == set()


def test_unknown_type_rows_list_the_frame_types_each_endpoint_takes() -> None:
    source = (REPO / "adapters" / "webchat.py").read_text(encoding="utf-8")
    message = re.search(r'"unknown_type", f"unknown frame type \{kind!r\}; expected ([^"]+)"\s*"([^"]+)"', source)
    assert message, "the web chat's unknown_type message moved"
    said = re.findall(r"[a-z_]+", (message.group(1) + message.group(2)).replace(" or ", ", "))
    assert listed_types(errors_table("Web chat")) == said
    assert listed_types(errors_table("Agent desk")) == ["presence", "directory", *AGENT_FRAMES]
