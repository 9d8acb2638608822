"""The benchmark harness runs end to end with tiny numbers, so it cannot rot.

Nothing about speed is asserted here: speed is what ``make bench`` reports (docs/performance.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_bench_runs_end_to_end_on_sqlite(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "bench",
        "--pairs", "3", "--clients", "2", "--warmup", "0.2", "--duration", "0.5", "--open-duration", "0.8",
        "--rate", "15", "--grace", "2", "--stores", "sqlite", "--loops", "asyncio",
        "--idle", "20", "--hold", "0.2", "--idle-timeout", "60", "--capacity-loop", "asyncio",
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

    assert any(r.get("throughput") is not None for r in result["ratios"])
    assert result["targets"], "the issue's targets are evaluated"
    table = md_path.read_text()
    assert "### Closed loop" in table and "### Capacity" in table
    assert "### Closed loop" in proc.stdout  # the table is printed too
