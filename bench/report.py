"""The benchmark report: medians over repetitions, notifier/peer ratios, markdown and plots.

.venv/bin/python bench/report.py bench/results/<date>.json   # rewrite .md and .png
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

SERVERS = ("notifier", "node-ws")
STORM_TARGET = (10_000, 15.0)  # sockets, seconds
HISTORY_TARGET_MS = 20.0
CONNECTS_TARGET = 1000.0
# Issue 19.
ROUTING_SHARE_PCT = 2.0
SCALE_OUT_FACTOR = 1.2
LADDER_FACTOR = 0.8
MEMORY_FACTOR = 1.5
MANY_RSS_MB = 1200
LIVE_FIRST_S = 5.0


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _per_server(runs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    mine = [r for r in runs if r["server"] == name]
    levels = [b["connections"] for b in mine[0]["broadcast"]]
    out: dict[str, Any] = {"reps": len(mine), "levels": {}, "rates": {}}
    for i, level in enumerate(levels):
        out["levels"][str(level)] = {
            key: _median([r[part][i][key] for r in mine])
            for part, keys in (
                ("idle", ("kib_per_connection", "rss_kib", "connect_per_s")),
                (
                    "broadcast",
                    (
                        "cpu_us_per_delivery",
                        "last_receipt_ms_p50",
                        "loadgen_cpu_pct",
                        "payload_bytes",
                    ),
                ),
            )
            for key in keys
        }
    out["rates"] = _rates(mine, "targeted")
    out["rates_html"] = _rates(mine, "targeted_html")
    out["max_rate_held"] = _median([r["max_rate_held"] for r in mine])
    out["max_rate_held_each"] = [r["max_rate_held"] for r in mine]
    out["max_rate_held_html"] = _median([r.get("max_rate_held_html") for r in mine])
    out["max_rate_held_html_each"] = [r.get("max_rate_held_html") for r in mine]
    maxed = [r["idle_max"] for r in mine if r.get("idle_max")]
    out["idle_max"] = (
        {
            key: _median([m[key] for m in maxed])
            for key in ("connections", "kib_per_connection", "rss_kib", "extra_connect_per_s")
        }
        if maxed
        else None
    )
    handshakes = [r["connects"] for r in mine if r.get("connects")]
    out["connects"] = {
        name: {
            key: _median([h[name][key] for h in handshakes])
            for key in (
                "sockets",
                "per_s",
                "server_cpu_ms_per_connect",
                "loadgen_cpu_pct",
                "failed",
            )
        }
        for name in ("sequential", "concurrent")
        if handshakes
    }
    return out


def _rates(mine: list[dict[str, Any]], part: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rate in sorted({s["rate"] for r in mine for s in r.get(part, [])}):
        steps = [s for r in mine for s in r.get(part, []) if s["rate"] == rate]
        out[str(rate)] = {
            key: _median([s[key] for s in steps])
            for key in (
                "p50_ms",
                "p99_ms",
                "p999_ms",
                "lost",
                "cpu_us_per_delivery",
                "server_cpu_pct",
                "loadgen_cpu_pct",
                "payload_bytes",
            )
        }
        out[str(rate)]["held_in"] = f"{sum(s['held'] for s in steps)}/{len(steps)}"
    return out


def summarise(result: dict[str, Any]) -> None:
    """Add `summary`: per-server medians, the ratios (notifier / node-ws) and the targets."""
    per = {name: _per_server(result["runs"], name) for name in SERVERS}
    py, node = per["notifier"], per["node-ws"]
    top = str(max(int(k) for k in py["levels"]))

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    ratios: dict[str, float | None] = {
        "cpu_per_delivery_ratio": ratio(
            py["levels"][top]["cpu_us_per_delivery"], node["levels"][top]["cpu_us_per_delivery"]
        ),
        "idle_memory_per_connection_ratio": ratio(
            py["levels"][top]["kib_per_connection"], node["levels"][top]["kib_per_connection"]
        ),
        "sustained_targeted_rate_ratio": ratio(py["max_rate_held"], node["max_rate_held"]),
        "p99_at_5k_ratio": ratio(py["rates"]["5000"]["p99_ms"], node["rates"]["5000"]["p99_ms"]),
    }
    for level in py["levels"]:
        for key in ("cpu_us_per_delivery", "kib_per_connection", "last_receipt_ms_p50"):
            ratios[f"{key}_ratio_at_{level}"] = ratio(
                py["levels"][level][key], node["levels"][level][key]
            )
    for rate in py["rates"]:
        if rate in node["rates"]:
            for key in ("p50_ms", "p99_ms", "p999_ms", "cpu_us_per_delivery"):
                ratios[f"{key}_ratio_at_{rate}_per_s"] = ratio(
                    py["rates"][rate][key], node["rates"][rate][key]
                )
    result["summary"] = {"servers": per, "ratios": ratios}
    result["targets"] = targets(result)


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 12's targets: {name, notifier, peer, ratio, target, met} each."""
    per = result["summary"]["servers"]
    py, node = per["notifier"], per["node-ws"]
    top = str(max(int(k) for k in py["levels"]))
    out: list[dict[str, Any]] = []

    def add(
        name: str, a: float | None, b: float | None, target: str, met: bool, ratio: bool = True
    ) -> None:
        r = a / b if ratio and a is not None and b else None
        out.append(
            {"name": name, "notifier": a, "peer": b, "ratio": r, "target": target, "met": met}
        )

    def within(a: float | None, b: float | None, bound: float, way: str) -> bool:
        if a is None or not b:
            return False
        return a / b <= bound if way == "<=" else a / b >= bound

    mem_py = (py["idle_max"] or py["levels"][top])["kib_per_connection"]
    mem_node = (node["idle_max"] or node["levels"][top])["kib_per_connection"]
    sockets = (py["idle_max"] or {"connections": int(top)})["connections"]
    add(
        f"idle memory per socket at {sockets:,.0f} sockets (KiB)",
        mem_py,
        mem_node,
        "<= 1.5x peer",
        within(mem_py, mem_node, 1.5, "<="),
    )
    a, b = py["levels"][top]["cpu_us_per_delivery"], node["levels"][top]["cpu_us_per_delivery"]
    add(
        f"broadcast CPU per delivery to {int(top):,} sockets (µs)",
        a,
        b,
        "<= 1.0x peer",
        within(a, b, 1.0, "<="),
    )
    for fmt, key in (("json", "max_rate_held"), ("html", "max_rate_held_html")):
        a, b = py[key], node[key]
        add(
            f"sustained targeted rate, {fmt}, p99 <= 50 ms, nothing lost (msg/s)",
            a,
            b,
            ">= 1.0x peer",
            within(a, b, 1.0, ">="),
        )
    a = py["rates"].get("5000", {}).get("p99_ms")
    b = node["rates"].get("5000", {}).get("p99_ms")
    add("p99 at 5,000 msg/s, json (ms)", a, b, "<= 1.5x peer", within(a, b, 1.5, "<="))
    conc_py, conc_node = py["connects"].get("concurrent"), node["connects"].get("concurrent")
    a = conc_py["per_s"] if conc_py else None
    n = int(conc_py["sockets"]) if conc_py else 0
    add(
        f"connects/s per web process, {n} concurrent handshakes of users with "
        f"{result['config'].get('connect_history', 0):,} stored (notifier's own figure "
        f"against {CONNECTS_TARGET:,.0f}/s; the peer's for reference)",
        a,
        conc_node["per_s"] if conc_node else None,
        f">= {CONNECTS_TARGET:,.0f}/s (notifier)",
        a is not None and a >= CONNECTS_TARGET,
    )
    storm = result.get("storm") or {}
    want, limit = STORM_TARGET
    secs = storm.get("seconds_to_caught_up")
    add(
        f"reconnect storm of {storm.get('sockets', 0):,} sockets: SIGTERM to every socket back "
        f"and caught up (s), not back within the {storm.get('seconds_waited', 0):.0f} s "
        f"window {storm.get('lost')}, twice {storm.get('duplicates')}"
        + (
            f" (smaller than the {want:,} the target names)"
            if storm.get("sockets", 0) < want
            else ""
        ),
        secs,
        None,
        f"<= {limit:.0f} s at {want:,}, 0 lost",
        secs is not None
        and secs <= limit
        and storm.get("sockets", 0) >= want
        and storm.get("lost") == 0
        and storm.get("duplicates") == 0,
        ratio=False,
    )
    out.extend(scale_targets(result, node))
    out.extend(fanout_targets(result.get("fanout") or {}))
    history = result["stack"]["history"]
    deep = f"page {history['stored'] // 2:,} deep"
    for key, label in (("history_first", "first page"), ("history_deep", deep)):
        page = history.get("pages", {}).get(key)
        v = page["ms_p50"] if page else None
        add(
            f"GET /history {label}, {history['stored']:,} stored, p50 (ms)",
            v,
            None,
            f"<= {HISTORY_TARGET_MS:.0f} ms",
            v is not None and v <= HISTORY_TARGET_MS,
            ratio=False,
        )
    return out


def _row(name: str, a: float | None, b: float | None, target: str, met: bool) -> dict[str, Any]:
    r = a / b if a is not None and b else None
    return {"name": name, "notifier": a, "peer": b, "ratio": r, "target": target, "met": met}


def scale_targets(result: dict[str, Any], node: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 19's targets, from bench/scale.py's figures (result["scale"]), in the order of
    the issue; the many-sockets row comes from bench/many_sockets.py when it was run. A
    scenario that failed (or was not run) shows as a row with no figure, not met."""
    sc = result.get("scale")
    if not sc:
        return []
    out: list[dict[str, Any]] = []
    for name, rows in (
        ("routing", _routing_rows),
        ("scale-out", _scale_out_rows),
        ("connects at 19,000 sockets", _ladder_rows),
        ("memory after messages", _memory_rows),
        ("many sockets on one host (bench/many_sockets.py)", _many_rows),
        ("live first", _live_rows),
    ):
        try:
            out.extend(rows(sc, node))
        except (KeyError, TypeError, IndexError, ZeroDivisionError) as e:
            error = _errors(sc) or f"no figures ({e!r})"
            out.append(_row(f"{name}: not measured: {error}", None, None, "–", False))
    return out


def _errors(sc: dict[str, Any]) -> str:
    """The errors the scenarios recorded, if any."""
    found = []

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            if "error" in v:
                found.append(str(v["error"]))
            for x in v.values():
                walk(x)

    walk(sc)
    return "; ".join(found)


def _routing_rows(sc: dict[str, Any], node: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for i, step in enumerate(sc["routing"]["notifier"]):
        peer = sc["routing"]["node-ws"][i]
        share, peer_share = 100 * step["other_share"], 100 * peer["other_share"]
        out.append(
            _row(
                f"routing at {step['rate']:,} msg/s, 1,000 json sockets on process A of 2: "
                f"B's CPU per event as % of A's per delivery (B "
                f"{step['other_us_per_event_raw']:.3f} µs/event, A "
                f"{step['holding_us_per_delivery']:.1f} µs/delivery; peer "
                f"{peer['other_us_per_event_raw']:.3f} and {peer['holding_us_per_delivery']:.1f})",
                share,
                peer_share,
                "<= 2% (notifier)",
                share <= ROUTING_SHARE_PCT,
            )
        )
    return out


def _scale_out_rows(sc: dict[str, Any], node: dict[str, Any]) -> list[dict[str, Any]]:
    ours, theirs = sc["scale_out"]["notifier"], sc["scale_out"]["node-ws"]
    f = ours[-1]["us_per_delivery"] / ours[0]["us_per_delivery"]
    g = theirs[-1]["us_per_delivery"] / theirs[0]["us_per_delivery"]
    return [
        _row(
            "scale-out: total web CPU per delivery with 4 processes / with 1 (notifier "
            + ", ".join(f"{s['processes']}: {s['us_per_delivery']:.1f}" for s in ours)
            + " µs; peer "
            + ", ".join(f"{s['processes']}: {s['us_per_delivery']:.1f}" for s in theirs)
            + f" µs; {ours[0]['rate']:,} msg/s to 1,000 json sockets)",
            f,
            g,
            f"<= {SCALE_OUT_FACTOR}x (notifier)",
            f <= SCALE_OUT_FACTOR,
        )
    ]


def _ladder_rows(sc: dict[str, Any], node: dict[str, Any]) -> list[dict[str, Any]]:
    ladder = sc["ladder"]
    low, high = ladder["low"], ladder["high"]
    f = high["per_s"] / low["per_s"]
    return [
        _row(
            f"handshake rate at {high['open_before']:,}-{ladder['top']:,} open sockets / at "
            f"{low['open_before']:,}-{low['open_before'] + low['sockets']:,} "
            f"({high['per_s']:,.0f}/s against {low['per_s']:,.0f}/s; one process, pings on)",
            f,
            None,
            f">= {LADDER_FACTOR}x",
            f >= LADDER_FACTOR,
        )
    ]


def _memory_rows(sc: dict[str, Any], node: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for fmt in ("html", "json"):
        m = sc["memory"][fmt]
        top = m["sockets"]
        idle = node["levels"][str(top)]["kib_per_connection"]
        got = m.get("received", m["sockets"] * m["messages_each"])
        out.append(
            _row(
                f"memory per socket, {fmt}, {top:,} sockets after {m['messages_each']} "
                f"messages each ({got:,} received), pings on (KiB; peer: Node idle at {top:,})",
                m["kib_per_socket"],
                idle,
                f"<= {MEMORY_FACTOR}x peer",
                m["kib_per_socket"] <= MEMORY_FACTOR * idle,
            )
        )
    return out


def _many_rows(sc: dict[str, Any], node: dict[str, Any]) -> list[dict[str, Any]]:
    many = sc.get("many_sockets")
    if not many:
        return []
    return [
        _row(
            f"many sockets on one host: {many['sockets']:,} idle sockets, "
            f"{many['processes']} web processes, pings on: total RSS (MB; PSS "
            f"{many['pss_mb']:,.0f} MB; an announcement reached all in "
            f"{many['announcement_s']:.2f} s, target <= 1 s; bench/many_sockets.py)",
            many["rss_mb"],
            None,
            f"<= {MANY_RSS_MB:,} MB and <= 1 s",
            many["rss_mb"] <= MANY_RSS_MB and many["announcement_s"] <= 1.0,
        )
    ]


def _live_rows(sc: dict[str, Any], node: dict[str, Any]) -> list[dict[str, Any]]:
    live = sc["live_first"]
    return [
        _row(
            f"live first: {live['watchers']:,}-watcher deal, the last of {live['online']:,} "
            "online watchers spread through the id range (s)",
            live["last_online_s"],
            None,
            f"<= {LIVE_FIRST_S:.0f} s",
            live["last_online_s"] <= LIVE_FIRST_S,
        )
    ]


def fanout_targets(fan: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 13's targets, from bench/fanout.py's figures (no peer: SecantusDB is the reference)."""
    if not fan.get("runs"):
        return []
    runs = {(r["workers"], r["watchers"]): r for r in fan["runs"]}
    sizes = sorted(fan["sizes"])
    big, mid = sizes[-1], sizes[-2] if len(sizes) > 1 else sizes[-1]
    raw = fan["raw_insert_per_s"]
    out = []
    for workers in (1, 2):
        run = runs.get((workers, big))
        rate = run["per_s"] if run else None
        out.append(
            {
                "name": f"fan-out of {big:,} watchers with {workers} worker(s), stored and "
                "published (notifications/s; peer: SecantusDB's raw insert_many rate)",
                "notifier": rate,
                "peer": raw,
                "ratio": rate / raw if rate and raw else None,
                "target": ">= 0.5x raw insert_many",
                "met": bool(rate and raw and rate / raw >= 0.5),
            }
        )
    small, large = runs.get((1, mid)), runs.get((1, big))
    if small and large and big > mid:
        growth = large["stored_s"] / small["stored_s"]
        out.append(
            {
                "name": f"time({big:,}) / time({mid:,}) watchers, 1 worker (linear is "
                f"{big / mid:.0f})",
                "notifier": growth,
                "peer": None,
                "ratio": None,
                "target": f"<= {big / mid * 1.1:.0f}",
                "met": growth <= big / mid * 1.1,
            }
        )
    peak = max((r["worker_peak_rss_mb"] for r in fan["runs"] if r["watchers"] == big), default=0)
    out.append(
        {
            "name": f"worker peak RSS at {big:,} watchers (MB)",
            "notifier": peak,
            "peer": None,
            "ratio": None,
            "target": "<= 300 MB",
            "met": 0 < peak <= 300,
        }
    )
    out.append(
        {
            "name": f"scheduled check with nothing changed, {fan['watches_stored']:,} watches "
            "stored (ms)",
            "notifier": fan["nothing_changed_ms"],
            "peer": None,
            "ratio": None,
            "target": "<= 10 ms",
            "met": fan["nothing_changed_ms"] <= 10,
        }
    )
    return out


def _targeted_table(
    result: dict[str, Any], fmt: str, py: dict[str, Any], node: dict[str, Any]
) -> list[str]:
    lines = [
        "",
        f"## Targeted delivery through Redis, {fmt} (open loop, "
        f"{result['config']['step_seconds']:.0f} s a rate, {result['config']['target_users']:,} "
        f"users, one {fmt} socket each)",
        "",
        "| msg/s | server | p50 (ms) | p99 (ms) | p99.9 (ms) | lost | held | CPU µs per "
        "delivery | payload (B) | server CPU % | load generator CPU % |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rate in sorted(set(py) | set(node), key=int):
        for name, d in (("notifier", py), ("node-ws", node)):
            v = d.get(rate)
            if v is None:
                lines.append(
                    f"| {int(rate):,} | {name} | not run (a lower rate was not held) "
                    "| | | | | | | | |"
                )
                continue
            lines.append(
                f"| {int(rate):,} | {name} | {_fmt(v['p50_ms'])} | {_fmt(v['p99_ms'])} | "
                f"{_fmt(v['p999_ms'])} | {_fmt(v['lost'], 0)} | {v['held_in']} | "
                f"{_fmt(v['cpu_us_per_delivery'])} | {_fmt(v['payload_bytes'], 0)} | "
                f"{_fmt(v['server_cpu_pct'], 0)} | {_fmt(v['loadgen_cpu_pct'], 0)} |"
            )
    lines.append("")
    return lines


def _connects_and_storm(
    result: dict[str, Any], py: dict[str, Any], node: dict[str, Any]
) -> list[str]:
    c = result["config"]
    lines = [
        f"## Handshakes of users with {c.get('connect_history', 0):,} stored notifications "
        f"({c.get('connect_users', 0)} users)",
        "",
        "| handshakes | server | connects/s | server CPU ms per connect | failed | load "
        "generator CPU % |",
        "|---|---|---|---|---|---|",
    ]
    for name_ in ("sequential", "concurrent"):
        for name, d in (("notifier", py), ("node-ws", node)):
            v = d["connects"].get(name_)
            if v is None:
                continue
            lines.append(
                f"| {int(v['sockets']):,} {name_} | {name} | {_fmt(v['per_s'], 0)} | "
                f"{_fmt(v['server_cpu_ms_per_connect'])} | {_fmt(v['failed'], 0)} | "
                f"{_fmt(v['loadgen_cpu_pct'], 0)} |"
            )
    st = result.get("storm")
    if st:
        lines += [
            "",
            f"## Reconnect storm: {st['sockets']:,} sockets ({st['users']:,} users) move to a "
            "second web process after SIGTERM (notifier only)",
            "",
            f"- Size: {st['sockets']:,} of the {st['sockets_asked']:,} asked for, as many as "
            f"the first process took in {st['connect_budget_s']:.0f} s (so the storm fits the "
            "suite's time; BENCH_STORM_SOCKETS and BENCH_STORM_CONNECT_SECONDS set both).",
            f"- Back on the second process: {st['back']:,} of {st['sockets']:,}, the last of "
            f"them {_fmt(st['seconds_to_all_back'])} s after the SIGTERM; back and caught up "
            f"(holding the notification each of the {st['published']:,} users got during the "
            f"outage): {st['caught_up']:,}; "
            + (
                f"completed in {_fmt(st['seconds_to_caught_up'])} s."
                if st["completed"]
                else f"NOT completed within {st['seconds_waited']:.0f} s."
            ),
            f"- Not back and caught up when the window closed: {st['lost']:,} (a page that "
            f"came back without its notification would count here too); delivered twice: "
            f"{st['duplicates']:,}; reconnect attempts "
            f"{st['reconnect_attempts']:,}, of which failed {st['failed_attempts']:,}; the "
            f"writer stored and published in {_fmt(st['writer_seconds'])} s; the first "
            f"process took the sockets at {st['initial_connect_per_s']:,.0f}/s.",
        ]
    lines.append("")
    return lines


def _load_line(result: dict[str, Any]) -> str:
    """The load average the run started and ended with (other work makes it noisier)."""
    load = result.get("load_average")
    if not load:
        return ""
    return (
        f" Load average (1 min) at the start {load['start'][0]:.1f}, at the end "
        f"{load['end'][0]:.1f}, on {result['machine']['nproc']} cores."
    )


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def markdown(result: dict[str, Any], stem: str) -> str:
    s, m = result["summary"], result["machine"]
    py, node = s["servers"]["notifier"], s["servers"]["node-ws"]
    lines = [
        f"# notifier vs the Node `ws` peer — {result['date'][:10]}",
        "",
        f"Command: `{result['command']}` ({result['seconds'] / 60:.1f} min). Machine: {m['nproc']} "
        f"cores, {m['cpu']}, Linux {m['kernel']}, Python {m['python']}, Node {m['node']} "
        f"(ws {m['ws']}, ioredis {m['ioredis']}). Server on core 0; Redis and the load "
        f"generator on core 1. {result['config']['reps']} repetition(s), interleaved; medians "
        "shown. This is a shared virtual machine: whole runs differ by up to about 20%, so "
        "compare the two servers within a run (the ratios), not figures across runs."
        + _load_line(result),
        "",
        "## Targets",
        "",
        "| measure | notifier | node-ws | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for t in result["targets"]:
        lines.append(
            f"| {t['name']} | {_fmt(t['notifier'])} | {_fmt(t['peer'])} | {_fmt(t['ratio'])} | "
            f"{t['target']} | {'yes' if t['met'] else '**no**'} |"
        )
    lines += [
        "",
        "## Idle connections and broadcast of a 500 B fragment",
        "",
        "| connections | server | KiB per connection | RSS (MiB) | connects/s | CPU µs per "
        "delivery | time to last receipt (ms) | payload (B) | load generator CPU % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for level in py["levels"]:
        for name, d in (("notifier", py), ("node-ws", node)):
            v = d["levels"][level]
            lines.append(
                f"| {int(level):,} | {name} | {_fmt(v['kib_per_connection'], 1)} | "
                f"{_fmt(v['rss_kib'] / 1024, 0)} | {_fmt(v['connect_per_s'], 0)} | "
                f"{_fmt(v['cpu_us_per_delivery'])} | {_fmt(v['last_receipt_ms_p50'], 1)} | "
                f"{_fmt(v['payload_bytes'])} | {_fmt(v['loadgen_cpu_pct'], 0)} |"
            )
    for name, d in (("notifier", py), ("node-ws", node)):
        v = d["idle_max"]
        if v is not None:
            lines.append(
                f"| {int(v['connections']):,} | {name} | {_fmt(v['kib_per_connection'], 1)} | "
                f"{_fmt(v['rss_kib'] / 1024, 0)} | {_fmt(v['extra_connect_per_s'], 0)} "
                "(beyond the ladder, from a helper process) | idle only | | | |"
            )
    for fmt, key in (("json", "rates"), ("html", "rates_html")):
        lines += _targeted_table(result, fmt, py[key], node[key])
        each = "max_rate_held_each" if fmt == "json" else "max_rate_held_html_each"
        lines += [
            f"Highest rate held, each repetition: notifier {py[each]}, node-ws {node[each]}.",
            "",
        ]
    lines += _connects_and_storm(result, py, node)
    st = result["stack"]
    p, h = st["price_to_socket"], st["history"]
    lines += [
        "## notifier's whole stack (no peer equivalent)",
        "",
        f"- Posted price → Celery deal check → MongoDB → Redis → envelope on the socket, "
        f"{p['rounds']} rounds: p50 {p['ms_p50']:.1f} ms, p95 {p['ms_p95']:.1f} ms, "
        f"max {p['ms_max']:.1f} ms.",
        "",
        f"Reading one user's {h['stored']:,} stored notifications ({h['unread']:,} unread); "
        f"the deep page is `before={h['deep_before']}`. Up to {h.get('samples_asked', 50)} "
        "requests each, fewer when "
        "a page is so slow that 6 s run out first (at least 3):",
        "",
        "| request | requests | p50 (ms) | p95 (ms) | max (ms) |",
        "|---|---|---|---|---|",
    ]
    for key, label in (
        ("history_first", "`GET /history`, first page"),
        ("history_deep", "`GET /history`, deep page"),
        ("api_first", "`GET /api/notifications`, first page"),
        ("api_deep", "`GET /api/notifications`, deep page"),
        ("dashboard_badge", "`GET /` (dashboard with the unread badge)"),
    ):
        v = h["pages"][key]
        lines.append(
            f"| {label} | {v['samples']} | {_fmt(v['ms_p50'], 1)} | {_fmt(v['ms_p95'], 1)} | "
            f"{_fmt(v['ms_max'], 1)} |"
        )
    fan = result.get("fanout") or {}
    if fan.get("runs"):
        lines += [
            "",
            f"## Deal-check fan-out (bench/fanout.py): one price, N watchers of one item, "
            f"{fan['online']:,} of them online",
            "",
            f"SecantusDB's raw `insert_many` of the same documents (batches of 1,000, the "
            f"notifications' indexes): {fan['raw_insert_per_s']:,.0f} docs/s. A scheduled check "
            f"with nothing changed, {fan['watches_stored']:,} watches stored: "
            f"{fan['nothing_changed_ms']:.1f} ms (median of 20).",
            *(
                [
                    "",
                    f"Not run again: these figures are the run of {fan['reused_from']} "
                    "(`BENCH_FANOUT_FROM`), whose deal-check code this one shares.",
                ]
                if fan.get("reused_from")
                else []
            ),
            "",
            "| workers | watchers | stored and published (s) | notifications/s | last online "
            "socket (s) | worker peak RSS (MB) |",
            "|---|---|---|---|---|---|",
        ]
        for r in fan["runs"]:
            lines.append(
                f"| {r['workers']} | {r['watchers']:,} | {r['stored_s']:.1f} | "
                f"{r['per_s']:,.0f} | {r['last_socket_s']:.1f} | "
                f"{r['worker_peak_rss_mb']:.0f} |"
            )
    lines += [
        "",
        "## Plots",
        "",
        f"![broadcast CPU]({stem}-broadcast-cpu.png) ![idle memory]({stem}-idle-memory.png)",
        f"![targeted p99]({stem}-targeted-p99.png) ![last receipt]({stem}-last-receipt.png)",
        "",
        "## How it is measured",
        "",
        "- Both servers are started fresh for each repetition, alone on core 0, without "
        "compression. notifier is the real web process (`python -m web`) with its default "
        "settings, so it pings every socket every 30 s (the clients answer); the peer, "
        "`bench/peers/node-ws/server.js` (ws + ioredis), sends no pings. The peer "
        "subscribes to each user's channel while it holds a socket of theirs and to "
        "`notifier:events` for announcements, keeps user → set of sockets, and checks "
        "each socket's HS256 token (signature and expiry, node's crypto) as notifier does.",
        "- Same bytes: every event the bench publishes carries the payload notifier's "
        "renderer makes of it (`bench.html`, `bench.json`); the peer sends that, notifier "
        "renders its own (the JSON envelope differs only in its timestamp). Both parse "
        "the same published event. notifier also does its real per-socket work on "
        "connect (MongoDB reads, presence and socket-limit writes in Redis), the peer "
        "does not.",
        "- CPU is utime+stime from /proc/<pid>/stat before and after a phase (10 ms "
        "ticks; each phase delivers ≥ 30,000 messages); memory is VmRSS from "
        "/proc/<pid>/status, per connection = (RSS with N sockets − RSS before any) / N.",
        "- Load generator: one process on core 1, raw asyncio protocols on uvloop (no "
        "WebSocket library), publishing with raw RESP; its CPU % is in the tables. "
        "Targeted runs are open loop: each message's scheduled send time is in its "
        "payload and latency is counted from it, so queueing is not hidden; publishes "
        "are batched per ~1 ms tick.",
        "- Broadcast time to the last receipt is from the PUBLISH to the moment the last "
        "of the N sockets received the frame.",
        "- Idle memory at the largest level is measured with the ladder's sockets held by "
        "the load generator and the rest by a helper process (bench/clients.py): the "
        "open-file limit is 20,000 per process on each side. No broadcast is timed there.",
        "- Connects: users that have a stored history (bench/seed.py writes it straight "
        "into MongoDB in notifier's schema), so notifier's connect work (token, socket "
        "limit and presence in Redis, newest seq, unread count and missed announcements "
        "from MongoDB) reads real data; sequential is one handshake at a time, each "
        "greeted before the next; concurrent opens them all at once and times until the "
        "last greeting. The peer only checks the token.",
        "- Reconnect storm: web process A holds the sockets; B runs already on another "
        "port. A gets SIGTERM and closes them with 1012; each reconnects to B as the htmx "
        "ws extension does with full jitter (random() × 1 s × 2^min(retries, 6) after a "
        "close of 1006/1011/1012/1013), sending `last_id=` the newest id it holds, as "
        "web/static/app.js does. A separate writer process stores and publishes one "
        "notification to every user through NotificationService (MongoDB first) from the "
        "moment of the SIGTERM. Done when every socket is greeted by B and holds its "
        "user's new notification; a notification seen twice on one socket counts as twice.",
        "",
    ]
    return "\n".join(lines)


def plots(result: dict[str, Any], out: Path, stem: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = result["summary"]["servers"]

    def figure(
        name: str,
        title: str,
        ylabel: str,
        xlabel: str,
        series: dict[str, list[Any]],
        logy: bool = False,
    ) -> None:
        fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=100)
        for label, (xs, ys) in series.items():
            ax.plot(xs, ys, marker="o", label=label)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"{stem}-{name}.png")
        plt.close(fig)

    def by_level(key: str) -> dict[str, list[Any]]:
        return {
            n: [[int(k) for k in d["levels"]], [v[key] for v in d["levels"].values()]]
            for n, d in per.items()
        }

    figure(
        "broadcast-cpu",
        "Broadcast: server CPU per delivery",
        "µs",
        "connections",
        by_level("cpu_us_per_delivery"),
    )
    figure(
        "idle-memory",
        "Idle memory per connection",
        "KiB",
        "connections",
        by_level("kib_per_connection"),
    )
    figure(
        "last-receipt",
        "Broadcast: time to the last receipt",
        "ms",
        "connections",
        by_level("last_receipt_ms_p50"),
    )
    figure(
        "targeted-p99",
        "Targeted delivery: p99 latency",
        "ms (log)",
        "msg/s",
        {
            n: [
                [int(r) for r, v in d["rates"].items() if v["p99_ms"] is not None],
                [v["p99_ms"] for v in d["rates"].values() if v["p99_ms"] is not None],
            ]
            for n, d in per.items()
        },
        logy=True,
    )


def write(json_path: Path) -> None:
    """The markdown report and the plots next to the JSON results."""
    result = json.loads(json_path.read_text())
    if "summary" not in result:
        summarise(result)
    stem = json_path.stem
    json_path.with_suffix(".md").write_text(markdown(result, stem))
    plots(result, json_path.parent, stem)


if __name__ == "__main__":
    write(Path(sys.argv[1]))
