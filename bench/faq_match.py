"""FAQ matching, timed (issue 14): each matcher's latency with the shipped KB (30 entries) and a
generated one of 3,000, the KB's embedding time, and the gateway's bot round trip with the
semantic matcher against the lexical one, in the same run.

- **match**: ``matcher.rank(question)`` for every question of ``tests/faq_dev/dev.yaml``, repeated,
  in this process; p50 / p99 per matcher and KB size, and the ratio of 3,000 entries to 30.
- **embed**: building the semantic matcher over an empty embedding cache (every phrasing and
  every question+answer embedded once, the intent classifiers fitted), per KB; a build with
  the embeddings cached but not the classifiers (their fitting time), and one reading both.
- **round trip**: a gateway per matcher (web chat, SQLite, the shipped KB and calibration, the
  embedding cache the match suite filled), ``--customers`` customers each asking the dev set's
  questions one after the other for ``--duration`` seconds: from sending a question to the
  bot's reply. The ratio semantic / lexical is the cost of the model as a customer sees it.

The large KB is generated here, never stored: entries in English and Chinese, questions built
from a shipping vocabulary, each different. Run: ``.venv/bin/python -m bench.faq_match``
(needs the ``[semantic]`` extra; without it only the lexical figures are measured).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from gateway.config import SelfServiceConfig, SemanticConfig
from gateway.selfservice import build_matcher
from gateway.selfservice.evaluate import load_questions

from .measure import log, ms, percentile
from .servers import REPO, ServerProcess, free_port, gateway_config

KB = REPO / "faq" / "shipping_kb.yaml"
DEV = REPO / "tests" / "faq_dev" / "dev.yaml"
RESULTS_DIR = Path(__file__).resolve().parent / "results"

_EN = {
    "verb": ["track", "insure", "return", "redirect", "weigh", "label", "declare", "store", "collect",
             "refund", "cancel", "reschedule", "pack", "price", "clear", "deliver", "hold", "split"],
    "thing": ["a parcel", "a pallet", "a document envelope", "frozen food", "a bicycle", "a piano",
              "medicine", "a laptop", "wine bottles", "a car tyre", "a mattress", "artwork",
              "a passport", "flowers", "a guitar", "ceramics", "a sofa", "a battery pack"],
    "where": ["to Germany", "within the city", "to an island", "to a PO box", "overnight",
              "to a hospital", "on a Sunday", "to a locker", "across the border", "by sea",
              "by air", "to a warehouse"],
}
_ZH = {
    "verb": ["查询", "保价", "退回", "改派", "称重", "打印面单", "申报", "寄存", "揽收", "退款", "取消",
             "改约", "包装", "报价", "清关", "派送", "暂存", "拆分"],
    "thing": ["包裹", "托盘货", "文件袋", "冷冻食品", "自行车", "钢琴", "药品", "笔记本电脑", "红酒",
              "轮胎", "床垫", "艺术品", "护照", "鲜花", "吉他", "陶瓷", "沙发", "充电宝"],
    "where": ["到德国", "同城", "到海岛", "到邮政信箱", "当晚", "到医院", "周日", "到快递柜", "跨境",
              "走海运", "走空运", "到仓库"],
}


def kb_entries(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A KB file's entries: its items but the out_of_scope one."""
    return [item for item in items if "id" in item]


def large_kb(n: int, seed: int = 14) -> list[dict[str, Any]]:
    """``n`` entries, half English and half Chinese (flat form), every question different."""
    rng = random.Random(seed)
    combos = {lang: list(itertools.product(v["verb"], v["thing"], v["where"])) for lang, v in (("en", _EN), ("zh", _ZH))}
    for c in combos.values():
        rng.shuffle(c)
    entries = []
    for i in range(n):
        lang = "en" if i % 2 == 0 else "zh"
        verb, thing, where = combos[lang][(i // 2) % len(combos[lang])]
        if lang == "en":
            q, a = f"How do I {verb} {thing} {where}?", f"To {verb} {thing} {where}, see section {i} of our guide."
        else:
            q, a = f"怎么{verb}{thing}{where}?", f"{thing}{where}{verb}请参见指南第{i}节。"
        entries.append({"id": f"gen-{i:05d}", "lang": lang, "question": q, "answer": a})
    return entries


def _timed_ranks(matcher: Any, questions: list[str], repeat: int) -> dict[str, Any]:
    samples = []
    for _ in range(repeat):
        for q in questions:
            t0 = time.perf_counter()
            matcher.rank(q)
            samples.append(time.perf_counter() - t0)
    samples.sort()
    return {"questions": len(samples), "p50_ms": ms(percentile(samples, 50)), "p99_ms": ms(percentile(samples, 99)),
            "mean_ms": ms(sum(samples) / len(samples))}


def match_suite(kb: Path, large: int, repeat: int, workdir: Path,
                questions: list[str]) -> tuple[dict[str, Any], list[str]]:
    notes: list[str] = []
    shipped = yaml.safe_load(kb.read_text(encoding="utf-8"))
    big = workdir / "large_kb.yaml"
    own = kb_entries(shipped)
    big.write_text(yaml.safe_dump(shipped + large_kb(large - len(own)), allow_unicode=True), encoding="utf-8")
    out: dict[str, Any] = {"match": [], "embed": []}
    for matcher_name in ("lexical", "semantic"):
        for label, path in (("small", kb), ("large", big)):
            cache = workdir / f"cache-{label}"
            config = SelfServiceConfig(faq=path, matcher=matcher_name, semantic=SemanticConfig(cache_dir=cache))
            t0 = time.perf_counter()
            matcher = build_matcher(config, quiet=True)
            built = time.perf_counter() - t0
            if matcher.name != matcher_name:
                notes.append(f"{matcher_name}: not installed (pip install 'contactgate[semantic]'); skipped")
                break
            entries = len({e.id for e in matcher.entries})  # an entry: one id, in every language it has
            if matcher_name == "semantic":
                # The intent classifiers' share: the same build with the embeddings cached and
                # the fitted classifiers removed, then with both cached.
                for fitted in cache.glob("intents-*.npz"):
                    fitted.unlink()
                t1 = time.perf_counter()
                refit = build_matcher(config, quiet=True)
                fit = time.perf_counter() - t1
                refit.close()
                t1 = time.perf_counter()
                again = build_matcher(config, quiet=True)
                cached = time.perf_counter() - t1
                out["embed"].append({"kb_entries": entries, "texts": matcher.embedded,
                                     "cold_s": round(built, 2), "fit_s": round(fit, 2),
                                     "classifiers": refit.fitted, "cached_s": round(cached, 2),
                                     "ms_per_text": round(max(0.0, built - fit) / max(1, matcher.embedded) * 1000, 2)})
                again.close()
                log(f"embed {entries} entries: {matcher.embedded} texts in {built:.1f}s"
                    f" (fitting {refit.fitted} classifiers {fit:.1f}s), cached {cached:.2f}s")
            stats = _timed_ranks(matcher, questions, repeat)
            out["match"].append({"matcher": matcher_name, "kb_entries": entries, **stats})
            log(f"match {matcher_name} {entries} entries: p50 {stats['p50_ms']} ms, p99 {stats['p99_ms']} ms")
            if hasattr(matcher, "close"):
                matcher.close()
    return out, notes


# the gateway's round trip ------------------------------------------------------------------------
def _gateway(kb: Path, matcher: str, workdir: Path) -> ServerProcess:
    port = free_port()
    config = gateway_config("sqlite:///" + str(workdir / f"rt-{matcher}.db"), "asyncio", 1, port)
    config["selfservice"] = {
        "faq": str(kb), "matcher": matcher,
        "calibration": str(REPO / "faq" / f"shipping_kb.{matcher}.calibration.yaml"),
        # The bot keeps answering: no handoff, whatever the question says.
        "max_unanswered": 1_000_000, "handoff_phrases": [],
        # One reply per question: no "did this help?", and the conversation policy never hands
        # off (the questions cycle, so they repeat; a customer asks more than max_bot_turns).
        "policy": {"ask_helpful": False, "repeat_hands_off": False, "max_bot_turns": 1_000_000,
                   "angry_words": [], "stalled_after": 0},
        # The match suite's cache of this KB: the start reads vectors (embedding is timed there).
        "semantic": {"cache_dir": str(workdir / "cache-small")},
    }
    path = workdir / f"rt-{matcher}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return ServerProcess("gateway", [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path),
                                     "--port", str(port)], port, workdir)


async def _customer(url: str, name: str, questions: list[str], until: float, timeout: float) -> list[float]:
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.send_json({"type": "hello", "token": None, "last_seq": 0, "name": name})
        async with asyncio.timeout(timeout):
            async for message in ws:
                if json.loads(message.data).get("type") == "welcome":
                    break
        for n, text in enumerate(itertools.cycle(questions)):
            if time.monotonic() >= until:
                break
            t0 = time.monotonic()
            await ws.send_json({"type": "message", "id": f"{name}.{n}", "text": text})
            async with asyncio.timeout(timeout):
                async for message in ws:
                    frame = json.loads(message.data)
                    if frame.get("type") == "message" and frame.get("author") == "bot":
                        break
            latencies.append(time.monotonic() - t0)
    return latencies


async def round_trips(kb: Path, customers: int, duration: float, workdir: Path,
                      matchers: list[str], questions: list[str]) -> list[dict[str, Any]]:
    out = []
    for matcher in matchers:
        server = _gateway(kb, matcher, workdir)
        t0 = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(None, server.start)
        started = time.monotonic() - t0
        try:
            url = server.url("/webchat/ws")
            until = time.monotonic() + duration
            runs = await asyncio.gather(*(_customer(url, f"{matcher}{i}", questions[i::customers] or questions,
                                                    until, 30.0) for i in range(customers)))
        finally:
            await asyncio.get_running_loop().run_in_executor(None, server.stop)
        latencies = sorted(x for r in runs for x in r)
        entry = {"matcher": matcher, "customers": customers, "round_trips": len(latencies),
                 "round_trips_per_s": round(len(latencies) / duration, 1), "start_s": round(started, 2),
                 "p50_ms": ms(percentile(latencies, 50)), "p99_ms": ms(percentile(latencies, 99))}
        out.append(entry)
        log(f"round trip {matcher}: p50 {entry['p50_ms']} ms, p99 {entry['p99_ms']} ms, "
            f"{entry['round_trips_per_s']}/s (start {started:.1f}s)")
    return out


def ratios(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    by = {(m["matcher"], m["kb_entries"]): m for m in result["match"]}
    for name in ("lexical", "semantic"):
        sizes = sorted(k[1] for k in by if k[0] == name)
        if len(sizes) == 2 and by[(name, sizes[0])]["p50_ms"]:
            out[f"{name}_match_p50_{sizes[1]}_vs_{sizes[0]}"] = round(by[(name, sizes[1])]["p50_ms"] / by[(name, sizes[0])]["p50_ms"], 2)
    rt = {r["matcher"]: r for r in result["round_trip"]}
    if "lexical" in rt and "semantic" in rt and rt["lexical"]["p50_ms"]:
        out["round_trip_p50_semantic_vs_lexical"] = round(rt["semantic"]["p50_ms"] / rt["lexical"]["p50_ms"], 2)
        out["round_trip_p99_semantic_vs_lexical"] = round(rt["semantic"]["p99_ms"] / rt["lexical"]["p99_ms"], 2)
        out["round_trips_per_s_semantic_vs_lexical"] = round(
            rt["semantic"]["round_trips_per_s"] / rt["lexical"]["round_trips_per_s"], 2)
    return out


def markdown(result: dict[str, Any]) -> str:
    host = result["host"]
    lines = [f"# FAQ matching bench {result['stamp']}", "", f"`{result['command']}`", "",
             f"{host['cpus']} CPUs, load average {host['loadavg_before'][0]:.1f} before and"
             f" {host['loadavg_after'][0]:.1f} after (other processes on the machine make the noise).", ""]
    lines += ["| matcher | KB entries | match p50 ms | p99 ms |", "|---|---|---|---|"]
    lines += [f"| {m['matcher']} | {m['kb_entries']} | {m['p50_ms']} | {m['p99_ms']} |" for m in result["match"]]
    lines += ["", "| KB entries | texts embedded | cold s | ms per text | classifiers fitted | fitting s | cached s |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {e['kb_entries']} | {e['texts']} | {e['cold_s']} | {e['ms_per_text']} | {e['classifiers']}"
              f" | {e['fit_s']} | {e['cached_s']} |"
              for e in result["embed"]]
    lines += ["", "| gateway matcher | customers | round trip p50 ms | p99 ms | per s | start s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['matcher']} | {r['customers']} | {r['p50_ms']} | {r['p99_ms']} | {r['round_trips_per_s']} | {r['start_s']} |"
              for r in result["round_trip"]]
    lines += ["", "Ratios: " + ", ".join(f"{k} {v}" for k, v in result["ratios"].items())]
    lines += [f"Note: {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faq_match", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kb", type=Path, default=KB, help="the small KB, also the gateway's (default: the shipped one)")
    parser.add_argument("--large", type=int, default=3000,
                        help="entries of the large KB: the small one's and generated ones (default %(default)s)")
    parser.add_argument("--questions", type=int, default=0,
                        help="ask only the first N questions of the dev set (default: all)")
    parser.add_argument("--repeat", type=int, default=3, help="times each dev question is matched (default %(default)s)")
    parser.add_argument("--customers", type=int, default=4, help="round trip: customers asking at once (default %(default)s)")
    parser.add_argument("--duration", type=float, default=10.0, help="round trip: seconds per gateway (default %(default)s)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    small = len(kb_entries(yaml.safe_load(args.kb.read_text(encoding="utf-8"))))
    if args.large <= small:
        parser.error(f"--large must be more than the {small} entries of {args.kb}")
    command = " ".join(["python -m bench.faq_match", *(argv if argv is not None else sys.argv[1:])])
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="contactgate-faq-bench-") as tmp:
        workdir = Path(tmp)
        questions = [q.text for q in load_questions(DEV)][: args.questions or None]
        suite, notes = match_suite(args.kb.resolve(), args.large, args.repeat, workdir, questions)
        matchers = ["lexical"] + (["semantic"] if any(m["matcher"] == "semantic" for m in suite["match"]) else [])
        rt = asyncio.run(round_trips(args.kb.resolve(), args.customers, args.duration, workdir, matchers,
                                     questions))
    result = {"stamp": stamp, "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": command, "notes": notes, **suite, "round_trip": rt,
              "host": {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()}}
    result["ratios"] = ratios(result)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"faq-{stamp}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    (args.results_dir / f"faq-{stamp}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
