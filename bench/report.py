"""Ratios, the issue's targets, and the markdown table of a bench result."""

from __future__ import annotations

from typing import Any

# From issue 4 (benchmark figures, not test assertions).
THROUGHPUT_TARGET = {"sqlite": 0.5, "postgresql": 0.4}  # no target for the storeless probe
P99_TARGET = 2.0
CPU_TARGET = 3.0
IDLE_TARGET = 10_000
RSS_TARGET = 2.0


def _ratio(a: float | None, b: float | None, digits: int = 3) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, digits)


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def load_line(entry: dict[str, Any]) -> str:
    c, o = entry["closed"], entry["open"]
    return (f"closed {c['round_trips_per_s']:g} rt/s p50 {c['latency_ms']['p50']} ms p99 {c['latency_ms']['p99']} ms "
            f"{c['server_cpu_us_per_msg']} µs/msg; open {o['round_trips_per_s']:g}/{o['offered_per_s']:g} rt/s "
            f"p99 {o['latency_ms']['p99']} ms; errors {c['errors'] + o['errors']}")


def ratios(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Gateway / relay, each gateway run against the relay run on the same event loop."""
    relay = {e["loop"]: e for e in result["load"] if e["server"] == "relay"}
    out = []
    for e in result["load"]:
        base = relay.get(e["loop"])
        if e["server"] != "gateway" or base is None:
            continue
        g, r = e["closed"], base["closed"]
        go, ro = e["open"], base["open"]
        out.append({
            "store": e["store"], "loop": e["loop"],
            "throughput": _ratio(g["round_trips_per_s"], r["round_trips_per_s"]),
            "p99_closed": _ratio(g["latency_ms"]["p99"], r["latency_ms"]["p99"], 2),
            "p99_open": _ratio(go["latency_ms"]["p99"], ro["latency_ms"]["p99"], 2),
            "cpu_per_msg_closed": _ratio(g["server_cpu_us_per_msg"], r["server_cpu_us_per_msg"], 2),
            "cpu_per_msg_open": _ratio(go["server_cpu_us_per_msg"], ro["server_cpu_us_per_msg"], 2),
        })
    capacity = {e["server"]: e for e in result["capacity"]}
    if "gateway" in capacity and "relay" in capacity:
        out.append({"store": capacity["gateway"]["store"], "loop": capacity["gateway"]["loop"],
                    "rss_per_conn": _ratio(capacity["gateway"]["rss_per_conn_kib"],
                                           capacity["relay"]["rss_per_conn_kib"], 2)})
    return out


def email_ratios(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Gateway / bare SMTP server, each gateway email run against the baseline's run."""
    base = next((e["mails"] for e in result.get("email", []) if e["server"] == "smtp-baseline"), None)
    if base is None:
        return []
    return [{"store": e["store"], "loop": e["loop"],
             "throughput": _ratio(e["mails"]["mails_per_s"], base["mails_per_s"]),
             "p50": _ratio(e["mails"]["latency_ms"]["p50"], base["latency_ms"]["p50"], 2),
             "p99": _ratio(e["mails"]["latency_ms"]["p99"], base["latency_ms"]["p99"], 2),
             "cpu_per_mail": _ratio(e["mails"]["server_cpu_us_per_mail"], base["server_cpu_us_per_mail"], 2)}
            for e in result.get("email", []) if e["server"] == "gateway"]


def email_lines(result: dict[str, Any]) -> list[str]:
    o = result["options"]
    connections = o["mail_clients"]
    lines = [
        f"### Email ingestion: {connections} SMTP connections, mails back to back",
        "",
        f"Through the gateway's SMTP listener (each mail parsed, threaded and stored before its 250) and "
        f"through a bare aiosmtpd server that only says 250, with the same client ({o['mail_duration']:g} s "
        f"measured after {o['warmup']:g} s warm-up). Latency: the whole transaction, MAIL FROM to the 250 "
        "after the data. \"sink CPU\": the bare server the gateway's bot mails go to.",
        "",
        "| server | store | loop | mails/s | p50 ms | p99 ms | p99.9 ms | server CPU µs/mail | server CPU | db CPU µs/mail | clients CPU | sink CPU | other CPU | errors |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for e in result["email"]:
        m = e["mails"]
        lines.append(
            f"| {e['server']} | {e['store'] or '–'} | {e['loop']} | {_fmt(m['mails_per_s'])} | "
            f"{_fmt(m['latency_ms']['p50'], 2)} | {_fmt(m['latency_ms']['p99'], 2)} | {_fmt(m['latency_ms']['p99.9'], 2)} | "
            f"{_fmt(m['server_cpu_us_per_mail'])} | {m['server_cpu_util']:.0%} | {_fmt(m.get('db_cpu_us_per_mail'))} | "
            f"{m['client_cpu_util']:.0%} | {m['sink_cpu_util']:.0%} | {m['other_cpu_util']:.0%} | {m['errors']} |")
    for e in result["email"]:
        for kind, n in e["mails"]["error_kinds"].items():
            lines.append(f"\n{e['server']} {e['store'] or ''}: {n} × {kind}")
    checked = [e for e in result["email"] if e.get("checks")]
    if checked:
        lines += ["", "Counted in the store after the run (warm-up included), and at the sink:", "",
                  "| store | mails answered 250 | stored | threads opened | conversations | bot mails out | gateway stopped in s (exit) |",
                  "|---|--:|--:|--:|--:|--:|--:|"]
        for e in checked:
            c = e["checks"]
            lines.append(f"| {e['store']} | {_fmt(c['accepted'])} | {_fmt(c['stored'])} | {_fmt(c['new_threads'])} | "
                         f"{_fmt(c['conversations'])} | {_fmt(c['bot_mails'])} | {_fmt(c.get('stop_s'), 2)} "
                         f"({c.get('exit_code')}) |")
    if result.get("email_ratios"):
        lines += ["", "Gateway / bare SMTP server:", "", "| store | loop | throughput | p50 | p99 | CPU/mail |",
                  "|---|---|--:|--:|--:|--:|"]
        for r in result["email_ratios"]:
            lines.append(f"| {r['store']} | {r['loop']} | {_fmt(r['throughput'], 3)} | {_fmt(r['p50'], 2)}× | "
                         f"{_fmt(r['p99'], 2)}× | {_fmt(r['cpu_per_mail'], 2)}× |")
    lines.append("")
    return lines


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name: str, measured: float | None, limit: float, at_least: bool) -> None:
        met = None if measured is None else (measured >= limit if at_least else measured <= limit)
        out.append({"target": name, "measured": measured, "limit": limit,
                    "rule": ">=" if at_least else "<=", "met": met})

    pairs = result["options"]["pairs"]
    for r in result["ratios"]:
        if "throughput" not in r or r["store"] not in THROUGHPUT_TARGET:
            continue
        where = f"{r['store']}, {r['loop']}"
        add(f"throughput at {pairs} pairs / relay ({where})", r["throughput"], THROUGHPUT_TARGET[r["store"]], True)
        add(f"p99 latency at {pairs} pairs / relay, closed loop ({where})", r["p99_closed"], P99_TARGET, False)
        add(f"p99 latency / relay, open loop at {result['options']['rate']:g} rt/s ({where})", r["p99_open"],
            P99_TARGET, False)
        add(f"server CPU per delivered message / relay ({where})", r["cpu_per_msg_closed"], CPU_TARGET, False)
    capacity = {e["server"]: e for e in result["capacity"]}
    if "gateway" in capacity:
        add("idle customer websockets held by one gateway process", capacity["gateway"]["held"], IDLE_TARGET, True)
    for r in result["ratios"]:
        if "rss_per_conn" in r:
            add("RSS per idle connection / relay", r["rss_per_conn"], RSS_TARGET, False)
    return out


def _source_line(source: dict[str, Any]) -> str:
    commit = (source.get("commit") or "unknown")[:10]
    changed = source.get("local_changes") or []
    if source.get("revision"):
        return f"Gateway code: commit {commit} ({source['revision']}), exported from git; uncommitted changes not included."
    if source.get("commit") is None:
        return f"Gateway code: from {source.get('dir')} (not a git checkout)."
    tail = (f", with uncommitted changes to {len(changed)} file(s) under gateway/, adapters/, routing/" if changed
            else ", no uncommitted changes under gateway/, adapters/, routing/")
    return f"Gateway code: commit {commit}{tail}."


def markdown(result: dict[str, Any]) -> str:
    o, host = result["options"], result["host"]
    lines = [
        f"## contactgate bench, {result['started_at']}",
        "",
        f"`{result['command']}` on {host['cpus']} × {host['cpu_model'] or 'CPU'} (Linux {host['kernel']}, "
        f"Python {host['python']}, aiohttp {host['aiohttp']}, uvloop {host.get('uvloop', '–')}); "
        f"load average before {host['loadavg_before'][0]:.2f}, after {host.get('loadavg_after', [0])[0]:.2f}; "
        f"{result.get('elapsed_s', '?')} s in all.",
        "",
        _source_line(result.get("gateway_source") or {}),
        "",
    ]
    if result["load"]:
        lines += [
            f"{o['pairs']} customer/agent pairs from {o['clients']} client processes. Closed loop: every customer "
            f"sends, its agent answers, the customer receives the answer and sends again ({o['duration']:g} s measured "
            f"after {o['warmup']:g} s warm-up). Open loop: {o['rate']:g} round trips/s offered in total at fixed times "
            f"({o['open_duration']:g} s; latency from the scheduled send). A delivered message is one of the two "
            "messages of a round trip.",
            "",
        ]
    lines += [
        "CPU is the server process's utime+stime over the measured window (the database column: PostgreSQL "
        "backends serving the gateway). CPU columns are shares of one core; \"other CPU\" is what the rest of "
        "the machine used meanwhile (noise from processes outside the bench).",
        "",
    ]
    for note in result.get("notes", []):
        lines += [f"> {note}", ""]
    if result["load"]:
        lines += [
            "### Closed loop",
            "",
            "| server | store | loop | round trips/s | p50 ms | p99 ms | p99.9 ms | server CPU µs/msg | server CPU | db CPU µs/msg | clients CPU | other CPU | errors |",
            "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for e in result["load"]:
            c = e["closed"]
            lines.append(
                f"| {e['server']} | {e['store'] or '–'} | {e['loop']} | {_fmt(c['round_trips_per_s'])} | "
                f"{_fmt(c['latency_ms']['p50'], 2)} | {_fmt(c['latency_ms']['p99'], 2)} | {_fmt(c['latency_ms']['p99.9'], 2)} | "
                f"{_fmt(c['server_cpu_us_per_msg'])} | {c['server_cpu_util']:.0%} | {_fmt(c.get('db_cpu_us_per_msg'))} | "
                f"{c['client_cpu_util']:.0%} | {c['other_cpu_util']:.0%} | {c['errors'] + c['late']} |")
        lines += [
            "",
            f"### Open loop, {o['rate']:g} round trips/s offered",
            "",
            "| server | store | loop | achieved rt/s | p50 ms | p99 ms | p99.9 ms | server CPU µs/msg | server CPU | db CPU µs/msg | other CPU | late or lost | errors |",
            "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for e in result["load"]:
            c = e["open"]
            lines.append(
                f"| {e['server']} | {e['store'] or '–'} | {e['loop']} | {_fmt(c['round_trips_per_s'])} | "
                f"{_fmt(c['latency_ms']['p50'], 2)} | {_fmt(c['latency_ms']['p99'], 2)} | {_fmt(c['latency_ms']['p99.9'], 2)} | "
                f"{_fmt(c['server_cpu_us_per_msg'])} | {c['server_cpu_util']:.0%} | {_fmt(c.get('db_cpu_us_per_msg'))} | "
                f"{c['other_cpu_util']:.0%} | {c['late']} | {c['errors']} |")
        lines += [
            "",
            "### Gateway / relay (same event loop)",
            "",
            "| store | loop | throughput | p99 closed | p99 open | CPU/msg closed | CPU/msg open |",
            "|---|---|--:|--:|--:|--:|--:|",
        ]
        for r in result["ratios"]:
            if "throughput" in r:
                lines.append(f"| {r['store']} | {r['loop']} | {_fmt(r['throughput'], 3)} | {_fmt(r['p99_closed'], 2)}× | "
                             f"{_fmt(r['p99_open'], 2)}× | {_fmt(r['cpu_per_msg_closed'], 2)}× | {_fmt(r['cpu_per_msg_open'], 2)}× |")
        lines.append("")
    if result["capacity"]:
        lines += [
            f"### Capacity: idle customer websockets (after hello → welcome), held {o['hold']:g} s",
            "",
            "| server | store | loop | target | held | errors | not done in time | hellos/s | server CPU | RSS before MiB | RSS after MiB | RSS per connection KiB |",
            "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for e in result["capacity"]:
            lines.append(
                f"| {e['server']} | {e['store'] or '–'} | {e['loop']} | {_fmt(e['target'])} | {_fmt(e['held'])} | "
                f"{_fmt(e['errors'])} | {_fmt(e['timed_out'])} | {_fmt(e['hellos_per_s'])} | {e['open_server_cpu_util']:.0%} | "
                f"{_fmt(e['rss_before_kib'] / 1024)} | "
                f"{_fmt(e['rss_after_kib'] / 1024 if e['rss_after_kib'] else None)} | {_fmt(e['rss_per_conn_kib'])} |")
        for e in result["capacity"]:
            for kind, n in e["failures"].items():
                lines.append(f"\n{e['server']}: {n} × {kind}")
        lines.append("")
    if result.get("email"):
        lines += email_lines(result)
    if result["targets"]:
        lines += ["### Targets (issue 4)", "", "| target | measured | wanted | met |", "|---|--:|--:|---|"]
        for t in result["targets"]:
            met = "–" if t["met"] is None else ("yes" if t["met"] else "**no**")
            lines.append(f"| {t['target']} | {_fmt(t['measured'], 3)} | {t['rule']} {_fmt(t['limit'], 1)} | {met} |")
        lines.append("")
    return "\n".join(lines)
