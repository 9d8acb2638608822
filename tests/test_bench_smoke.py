"""The benchmark harness runs end to end with tiny numbers, so it cannot rot.

Nothing about speed is asserted here: speed is what ``make bench`` reports (docs/performance.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from adapters.email.guard import classify
from adapters.email.parse import parse_message
from adapters.email.threading import lookup_ids
from bench.mail_corpus import ATTACHMENT_BYTES, SUPPORT, THREAD_LENGTH, MailStream

REPO = Path(__file__).resolve().parent.parent


def test_bench_runs_end_to_end_on_sqlite(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "bench",
        "--pairs", "3", "--clients", "2", "--warmup", "0.2", "--duration", "0.5", "--open-duration", "0.8",
        "--rate", "15", "--grace", "2", "--stores", "sqlite", "--loops", "asyncio",
        "--idle", "20", "--hold", "0.2", "--idle-timeout", "60", "--capacity-loop", "asyncio",
        "--mail-clients", "2", "--mail-duration", "0.5", "--mail-loop", "asyncio",
        "--results-dir", str(tmp_path),
    ]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, f"bench failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"

    [json_path] = tmp_path.glob("*.json")
    [md_path] = tmp_path.glob("*.md")
    result = json.loads(json_path.read_text())
    assert json_path.stem == md_path.stem

    runs = {(e["server"], e["store"], e["loop"]): e for e in result["load"]}
    assert set(runs) == {("relay", None, "asyncio"), ("gateway", "sqlite", "asyncio")}
    for (server, _, _), entry in runs.items():
        assert entry["pairs"] == 3
        for phase in ("closed", "open"):
            stats = entry[phase]
            assert stats["round_trips"] > 0, (server, phase, stats)
            assert stats["errors"] == 0 and stats["late"] == 0, (server, phase, stats)
            assert stats["latency_ms"]["p50"] > 0 and stats["server_cpu_us_per_msg"] is not None

    capacity = {e["server"]: e for e in result["capacity"]}
    assert set(capacity) == {"relay", "gateway"}
    for server, entry in capacity.items():
        assert entry["held"] == 20 and entry["errors"] == 0, (server, entry)
        assert entry["rss_after_kib"] > 0

    email = {(e["server"], e["store"]): e for e in result["email"]}
    assert set(email) == {("smtp-baseline", None), ("gateway", "sqlite")}
    for server, entry in email.items():
        mails = entry["mails"]
        assert mails["connections"] == 2 and mails["mails"] > 0, (server, mails)
        assert mails["errors"] == 0 and mails["error_kinds"] == {}, (server, mails)
        assert mails["latency_ms"]["p50"] > 0 and mails["server_cpu_us_per_mail"] is not None
    # Every mail answered 250 was stored once, and the replies found their threads.
    checks = email[("gateway", "sqlite")]["checks"]
    assert checks["stored"] == checks["accepted"] > checks["new_threads"] > 0, checks
    assert checks["conversations"] == checks["new_threads"], checks
    assert checks["bot_mails"] is not None and checks["bot_mails"] <= checks["conversations"], checks
    [ratio] = result["email_ratios"]
    assert ratio["store"] == "sqlite" and ratio["throughput"] is not None

    assert any(r.get("throughput") is not None for r in result["ratios"])
    assert result["targets"], "the issue's targets are evaluated"
    table = md_path.read_text()
    assert "### Closed loop" in table and "### Capacity" in table and "### Email ingestion" in table
    assert "### Closed loop" in proc.stdout  # the table is printed too


def test_bench_email_only(tmp_path: Path) -> None:
    """``--suites email`` runs the email figure alone (cheap to run on its own)."""
    command = [sys.executable, "-m", "bench", "--suites", "email", "--clients", "1", "--warmup", "0.2",
               "--mail-clients", "1", "--mail-duration", "0.3", "--stores", "sqlite", "--mail-loop", "asyncio",
               "--results-dir", str(tmp_path)]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"bench failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    [json_path] = tmp_path.glob("*.json")
    result = json.loads(json_path.read_text())
    assert result["load"] == [] and result["capacity"] == []
    assert [(e["server"], e["store"]) for e in result["email"]] == [("smtp-baseline", None), ("gateway", "sqlite")]
    assert all(e["mails"]["mails"] > 0 for e in result["email"])
    assert "### Email ingestion" in proc.stdout and "### Closed loop" not in proc.stdout


def test_bench_mails_are_the_mix_the_figure_describes() -> None:
    """What the email figure sends parses as docs/performance.md says: a quarter new threads,
    replies naming the previous mail of their thread with the quote cut off, GBK read, PDFs
    attached."""
    stream = MailStream("smoke")
    mails = [stream.next() for _ in range(THREAD_LENGTH * 3)]
    parsed = [parse_message(m.data) for m in mails]
    assert [m.new_thread for m in mails] == [i % THREAD_LENGTH == 0 for i in range(len(mails))]
    assert len({m.message_id for m in mails}) == len(mails)
    for i, (mail, p) in enumerate(zip(mails, parsed)):
        assert classify(p, {SUPPORT}, lists_are_noise=True).kind == "person", i
        assert f"<{p.message_id}>" == mail.message_id and p.sender is not None and p.sender.address == mail.sender
        if mail.new_thread:
            assert lookup_ids(p) == ()
        else:
            assert lookup_ids(p)[0] == mails[i - 1].message_id.strip("<>")
            assert "wrote:" not in p.text and "写道" not in p.text and ">" not in p.text, p.text
    assert "请问有进展吗" in parsed[THREAD_LENGTH * 2 + 1].text       # the third thread: GBK
    assert parsed[THREAD_LENGTH * 2].subject.startswith("关于订单的问题")
    attached = [p for p in parsed if p.attachments]
    assert attached and all(a.size == ATTACHMENT_BYTES for p in attached for a in p.attachments)
