"""``python -m bench.faq_match`` runs end to end with tiny numbers, so it cannot rot.

Nothing about speed is asserted: docs/performance.md reports what it measures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from bench.faq_match import large_kb

REPO = Path(__file__).resolve().parent.parent


def test_the_generated_kb_has_distinct_questions_in_both_languages() -> None:
    entries = large_kb(3000)
    assert len(entries) == 3000 and len({e["question"] for e in entries}) == 3000
    assert {e["lang"] for e in entries} == {"en", "zh"}


def test_faq_bench_runs_end_to_end(tmp_path: Path) -> None:
    # A KB of 3 entries (6 phrasings): the model's embedding time stays out of the suite's.
    kb = tmp_path / "kb.yaml"
    kb.write_text(yaml.safe_dump([
        {"id": f"e{i}", "en": {"q": q, "a": f"answer {i}"}, "zh": {"q": z, "a": f"回答{i}"}}
        for i, (q, z) in enumerate([("How do I track my parcel?", "怎么查询包裹?"),
                                    ("How much does shipping cost?", "运费多少钱?"),
                                    ("I forgot my password", "忘记密码了")])], allow_unicode=True), encoding="utf-8")
    command = [sys.executable, "-m", "bench.faq_match", "--kb", str(kb), "--large", "6", "--questions", "6", "--repeat", "1",
               "--customers", "1", "--duration", "0.5", "--results-dir", str(tmp_path)]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"bench failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    [json_path] = tmp_path.glob("faq-*.json")
    result = json.loads(json_path.read_text())
    assert {(m["matcher"], m["kb_entries"]) for m in result["match"]} == {
        ("lexical", 3), ("lexical", 6), ("semantic", 3), ("semantic", 6)}
    assert all(m["p50_ms"] > 0 for m in result["match"])
    assert [e["kb_entries"] for e in result["embed"]] == [3, 6]
    assert all(e["texts"] > 0 and e["cold_s"] > 0 for e in result["embed"])
    assert all(e["classifiers"] == 1 and e["fit_s"] > 0 for e in result["embed"])  # one for en and zh (the default)
    assert [r["matcher"] for r in result["round_trip"]] == ["lexical", "semantic"]
    assert all(r["round_trips"] > 0 and r["p50_ms"] > 0 for r in result["round_trip"])
    assert "round_trip_p50_semantic_vs_lexical" in result["ratios"]
