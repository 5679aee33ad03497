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
TARGETS = {  # key in summary["ratios"] (or notifier's p99), bound, which way
    "cpu_per_delivery_ratio": (1.2, "<="),
    "idle_memory_per_connection_ratio": (1.5, "<="),
    "sustained_targeted_rate_ratio": (0.8, ">="),
    "notifier_p99_ms_at_5k": (5.0, "<="),
}


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
    for rate in sorted({s["rate"] for r in mine for s in r["targeted"]}):
        steps = [s for r in mine for s in r["targeted"] if s["rate"] == rate]
        out["rates"][str(rate)] = {
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
        out["rates"][str(rate)]["held_in"] = f"{sum(s['held'] for s in steps)}/{len(steps)}"
    out["max_rate_held"] = _median([r["max_rate_held"] for r in mine])
    out["max_rate_held_each"] = [r["max_rate_held"] for r in mine]
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
    values = {**ratios, "notifier_p99_ms_at_5k": py["rates"]["5000"]["p99_ms"]}
    targets = {}
    for key, (bound, way) in TARGETS.items():
        v = values[key]
        met = v is not None and (v <= bound if way == "<=" else v >= bound)
        targets[key] = {"value": v, "target": f"{way} {bound}", "met": met}
    result["summary"] = {"servers": per, "ratios": ratios, "targets": targets}


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def markdown(result: dict[str, Any], stem: str) -> str:
    s, m = result["summary"], result["machine"]
    py, node = s["servers"]["notifier"], s["servers"]["node-ws"]
    top = str(max(int(k) for k in py["levels"]))
    lines = [
        f"# notifier vs the Node `ws` peer — {result['date'][:10]}",
        "",
        f"Command: `{result['command']}` ({result['seconds'] / 60:.1f} min). Machine: {m['nproc']} "
        f"cores, {m['cpu']}, Linux {m['kernel']}, Python {m['python']}, Node {m['node']} "
        f"(ws {m['ws']}, ioredis {m['ioredis']}). Server on core 0; Redis and the load "
        f"generator on core 1. {result['config']['reps']} repetitions, interleaved; medians "
        "shown. This is a shared virtual machine: whole runs differ by up to about 20%, so "
        "compare the two servers within a run (the ratios), not figures across runs.",
        "",
        "## Targets",
        "",
        "| measure | notifier | node-ws | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    t = s["targets"]
    rows = [
        (
            f"server CPU per delivery, broadcast to {top} (µs)",
            py["levels"][top]["cpu_us_per_delivery"],
            node["levels"][top]["cpu_us_per_delivery"],
            "cpu_per_delivery_ratio",
        ),
        (
            f"idle memory per connection at {top} (KiB)",
            py["levels"][top]["kib_per_connection"],
            node["levels"][top]["kib_per_connection"],
            "idle_memory_per_connection_ratio",
        ),
        (
            "sustained targeted rate, p99 ≤ 50 ms, nothing lost (msg/s)",
            py["max_rate_held"],
            node["max_rate_held"],
            "sustained_targeted_rate_ratio",
        ),
        (
            "p99 at 5,000 msg/s (ms)",
            py["rates"]["5000"]["p99_ms"],
            node["rates"]["5000"]["p99_ms"],
            "notifier_p99_ms_at_5k",
        ),
    ]
    for label, a, b, key in rows:
        r = (
            s["ratios"].get(key)
            if key != "notifier_p99_ms_at_5k"
            else s["ratios"]["p99_at_5k_ratio"]
        )
        lines.append(
            f"| {label} | {_fmt(a)} | {_fmt(b)} | {_fmt(r)} | {t[key]['target']}"
            f"{' (notifier)' if key.startswith('notifier') else ''} | "
            f"{'yes' if t[key]['met'] else '**no**'} |"
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
    lines += [
        "",
        "## Targeted delivery through Redis (open loop, "
        f"{result['config']['step_seconds']:.0f} s a rate, {result['config']['target_users']:,} "
        "users, one JSON socket each)",
        "",
        "| msg/s | server | p50 (ms) | p99 (ms) | p99.9 (ms) | lost | held | CPU µs per "
        "delivery | server CPU % | load generator CPU % |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rate in sorted(set(py["rates"]) | set(node["rates"]), key=int):
        for name, d in (("notifier", py), ("node-ws", node)):
            v = d["rates"].get(rate)
            if v is None:
                lines.append(
                    f"| {int(rate):,} | {name} | not run (a lower rate was not held) "
                    "| | | | | | | |"
                )
                continue
            lines.append(
                f"| {int(rate):,} | {name} | {_fmt(v['p50_ms'])} | {_fmt(v['p99_ms'])} | "
                f"{_fmt(v['p999_ms'])} | {_fmt(v['lost'], 0)} | {v['held_in']} | "
                f"{_fmt(v['cpu_us_per_delivery'])} | {_fmt(v['server_cpu_pct'], 0)} | "
                f"{_fmt(v['loadgen_cpu_pct'], 0)} |"
            )
    lines += [
        "",
        f"Highest rate held, each repetition: notifier {py['max_rate_held_each']}, "
        f"node-ws {node['max_rate_held_each']}.",
        "",
    ]
    st = result["stack"]
    p, h = st["price_to_socket"], st["history"]
    lines += [
        "## notifier's whole stack (no peer equivalent)",
        "",
        f"- Posted price → Celery deal check → MongoDB → Redis → envelope on the socket, "
        f"{p['rounds']} rounds: p50 {p['ms_p50']:.1f} ms, p95 {p['ms_p95']:.1f} ms, "
        f"max {p['ms_max']:.1f} ms.",
        f"- `GET /history` with {h['stored']:,} notifications stored for the user: first "
        f"page p50 {h['first_page_ms_p50']:.1f} ms (max {h['first_page_ms_max']:.1f}), a "
        f"page 50,000 deep p50 {h['deep_page_ms_p50']:.1f} ms (max "
        f"{h['deep_page_ms_max']:.1f}).",
        "",
        "## Plots",
        "",
        f"![broadcast CPU]({stem}-broadcast-cpu.png) ![idle memory]({stem}-idle-memory.png)",
        f"![targeted p99]({stem}-targeted-p99.png) ![last receipt]({stem}-last-receipt.png)",
        "",
        "## How it is measured",
        "",
        "- Both servers are started fresh for each repetition, alone on core 0, with "
        "pings and compression off. notifier is the real web process (`python -m web`); "
        "the peer is `bench/peers/node-ws/server.js` (ws + ioredis): it subscribes to "
        "`notifier:events`, keeps user → set of sockets, and checks each socket's HS256 "
        "token (signature and expiry, node's crypto) as notifier does.",
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
        "- Not measured: more than 10,000 connections (the machine's open-file limit is "
        "20,000 per process, and each side holds one descriptor per socket).",
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
