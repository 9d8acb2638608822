"""docs/channels.md's "Try it on your machine" runs as written: the shipped config.yaml with its
email channel uncommented, the doc's sink command and its mail snippet, unchanged; the sink
prints the bot's answer. (Its ports, 2525 and 1025, are the doc's.)"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest

from tests.support import REPO, GatewayProcess
from tests.test_config import shipped_email_example

DOC = (REPO / "docs" / "channels.md").read_text(encoding="utf-8")


def try_it() -> tuple[list[str], str]:
    """(the sink's command as argv, the mail snippet's Python)."""
    section = DOC[DOC.index("### Try it on your machine"):]
    section = section[:section.index("\n### ", 1)]
    sink = re.search(r"```sh\n\.venv/bin/python (-m aiosmtpd [^\n]+)\n```", section)
    snippet = re.search(r"<<'EOF'\n(.*?)\nEOF", section, re.S)
    assert sink and snippet, section
    return sink.group(1).split(), snippet.group(1)


async def test_try_it_sends_a_mail_and_the_sink_prints_the_bot_answer(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    sink_args, snippet = try_it()
    config = tmp_path / "config.yaml"
    config.write_text(shipped_email_example(), encoding="utf-8")
    (tmp_path / "faq").symlink_to(REPO / "faq")
    monkeypatch.setenv("CONTACTGATE_PORT", "0")
    monkeypatch.setenv("CONTACTGATE_STORE_URL", f"sqlite:///{tmp_path / 'demo.db'}")
    sink = await asyncio.create_subprocess_exec(sys.executable, *sink_args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    gateway = await GatewayProcess(config).start()
    try:
        send = await asyncio.create_subprocess_exec(sys.executable, "-c", snippet, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(send.communicate(), 30)
        assert send.returncode == 0, err.decode()
        printed = b""
        assert sink.stdout is not None
        async with asyncio.timeout(30):
            while b"END MESSAGE" not in printed:
                printed += await sink.stdout.readline()
        text = printed.decode(errors="replace")
        assert "Subject: Re: My parcel [#" in text and "Auto-Submitted: auto-replied" in text
        assert "tracking number" in text, text
    finally:
        await gateway.stop()
        sink.kill()
        await sink.wait()
