"""Numbers to markdown for ``make bench``: summaries, the environment, the generated docs section."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from bench.harness import LOADGEN

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


# Summaries -----------------------------------------------------------------------------


def percentile(hist: dict[int, int], q: float) -> float | None:
    """The q-quantile of a merged log histogram (bucket = floor(log1p(ms) * 100)), in ms."""
    total = sum(hist.values())
    if not total:
        return None
    rank, seen = max(1, math.ceil(q * total)), 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= rank:
            return math.expm1((bucket + 0.5) / 100)
    return None


def summarize(published: dict, results: list[dict], server_cpu: float) -> dict:
    hist: dict[int, int] = {}
    for result in results:
        for bucket, count in result["hist"].items():
            hist[int(bucket)] = hist.get(int(bucket), 0) + count
    received = sum(r["received"] for r in results)
    lasts = [r["last"] for r in results if r["received"]]
    seconds = (max(lasts) - published["first"]) / 1000 if lasts else None
    busy = [r for r in results if r["windowMs"] > 0]
    return {
        "delivered": received,
        "expected": sum(r["expected"] for r in results),
        "seconds": seconds,
        "deliveries_per_s": received / seconds if seconds else 0.0,
        "p50_ms": percentile(hist, 0.50),
        "p99_ms": percentile(hist, 0.99),
        "server_cpu": server_cpu,
        "generator_cpu": max((r["cpuMs"] / r["windowMs"] for r in busy), default=None),
        "generator_elu": max((r["elu"] for r in busy), default=None),
        "generators": len(results),
        "publish_errors": published["errors"],
        "publish_error": published["error"],
        "timed_out": any(r["timedOut"] for r in results),
    }


def line(label: str, row: dict) -> str:
    """One progress line for the terminal."""
    keep = (
        "subscribers",
        "connections",
        "window",
        "publishes_per_s",
        "cpu_us_per_delivery",
        "cpu_us_per_publish",
        "deliveries_per_s",
        "p50_ms",
        "p99_ms",
        "delivered",
        "expected",
        "generator_cpu",
        "setup_per_s",
        "kib_per_conn",
        "failed",
        "publish_errors",
    )
    shown = {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items() if k in keep}
    if "cpu" in row:
        shown["cpu"] = {k: round(v, 2) for k, v in row["cpu"].items()}
    return f"{label:14} {row['server']:17} {json.dumps(shown)}"


# The environment -----------------------------------------------------------------------


def _run(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def environment(bench) -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    packages = {
        name: metadata.version(name)
        for name in (
            "Django",
            "channels",
            "channels-redis",
            "daphne",
            "uvicorn",
            "websockets",
            "redis",
            "Twisted",
        )
    }
    lock = json.loads((LOADGEN / "package-lock.json").read_text())["packages"]
    redis_version = re.search(r"v=(\S+)", _run(["redis-server", "--version"]))
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{os.cpu_count()} × {cpu}",
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": _run(["node", "--version"]),
        "redis_server": redis_version.group(1) if redis_version else "?",
        "python_packages": packages,
        "npm_packages": {name: lock[f"node_modules/{name}"]["version"] for name in ("ws", "faye")},
        "nofile": {"soft_before": bench.nofile[0], "hard": bench.nofile[1]},
        "argv": sys.argv[1:],
    }


# The docs section ----------------------------------------------------------------------


def write_docs(path: Path, section: str) -> None:
    """Replace what is between the bench markers (they must be there already)."""
    text = path.read_text()
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{path} has no {START} ... {END} markers")
    path.write_text(text[:start] + section.strip() + text[end + len(END) :])


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def _n(value) -> str:
    return "–" if value is None else f"{value:,.0f}"


def _rate(row: dict) -> str:
    """deliveries/s, with the range when the round was repeated."""
    samples = row.get("samples") or []
    if len(samples) < 2:
        return _n(row["deliveries_per_s"])
    return f"{_n(row['deliveries_per_s'])} ({_n(min(samples))}–{_n(max(samples))})"


def _ms(value) -> str:
    if value is None:
        return "–"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def _x(value) -> str:
    return "–" if value is None else f"{value:.2f}x"


def _cpu(row: dict) -> str:
    """Server, generator(s) and other processes' CPU, in cores."""
    cpu = row.get("cpu") or {}
    if not cpu:
        return "–"
    return f"{cpu.get('server', 0):.2f} / {cpu.get('generators', 0):.2f} / {cpu.get('others', 0):.2f}"


def _delivered(row: dict) -> str:
    share = row["delivered"] / row["expected"] if row["expected"] else 0
    return f"{row['delivered']:,}/{row['expected']:,} ({100 * share:.1f}%)"


def _ratio(a, b) -> float | None:
    return a / b if a and b else None


def _find(rows: list[dict], **match) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def _verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "**not met**")


def _us(value) -> str:
    return "–" if value is None else f"{value:,.1f}"


def _channels_row(data: dict, server: str, window: int) -> dict | None:
    return _find(data["channels"], server=server, window=window)


def targets(data: dict) -> list[list[str]]:
    """[target, measured, verdict] for each target of issue 16, for realtime under uvicorn
    with its protocol classes (docs/deployment.md's recommendation)."""
    ours_key = "realtime-uvicorn"
    fanout, idle, scaleout = data["fanout"], data["idle"], data["scaleout"]
    rows = []
    for window in (16, 64):
        ours, faye = _channels_row(data, ours_key, window), _channels_row(data, "faye", window)
        ratio = _ratio(ours and ours["publishes_per_s"], faye and faye["publishes_per_s"])
        shown = (
            f"{ratio:.2f}x ({_n(ours['publishes_per_s'])} vs {_n(faye['publishes_per_s'])}/s)"
            if ratio
            else "–"
        )
        rows.append(
            [
                f"many channels, {window} in flight: ≥1.5x Faye's publishes/s",
                shown,
                _verdict(ratio and ratio >= 1.5),
            ]
        )
    ours, faye = _channels_row(data, ours_key, 1), _channels_row(data, "faye", 1)
    if ours and faye and ours["p50_ms"] and faye["p50_ms"]:
        shown = f"{ours['p50_ms']:.2f} ms vs {faye['p50_ms']:.2f} ms"
        rows.append(
            [
                "many channels, 1 in flight: p50 ≤ Faye's + 1 ms",
                shown,
                _verdict(ours["p50_ms"] <= faye["p50_ms"] + 1),
            ]
        )
    for subscribers in (1000, 5000):
        ours = _find(fanout, server=ours_key, subscribers=subscribers)
        faye = _find(fanout, server="faye", subscribers=subscribers)
        ratio = _ratio(ours and ours["deliveries_per_s"], faye and faye["deliveries_per_s"])
        if ratio:
            shown = f"{ratio:.2f}x ({_n(ours['deliveries_per_s'])} vs {_n(faye['deliveries_per_s'])}/s)"
            rows.append(
                [f"fan-out {subscribers:,}: ≥1.5x Faye's deliveries/s", shown, _verdict(ratio >= 1.5)]
            )
        if ours and faye and ours["p99_ms"] and faye["p99_ms"]:
            shown = f"{_ms(ours['p99_ms'])} ms vs {_ms(faye['p99_ms'])} ms"
            rows.append(
                [f"fan-out {subscribers:,}: p99 ≤ Faye's", shown, _verdict(ours["p99_ms"] <= faye["p99_ms"])]
            )
    mine = sorted((r for r in idle if r["server"] == ours_key), key=lambda r: r["connections"])
    for row in mine:
        held = f"{row['connections']:,} connections"
        rows.append(
            [
                f"idle {row['connections']:,}: ≤16 KiB RSS per connection",
                f"{row['kib_per_conn']:.1f} KiB ({held})",
                _verdict(row["kib_per_conn"] <= 16),
            ]
        )
        rows.append(
            [
                f"idle {row['connections']:,}: ≥1,000 connections set up per second",
                f"{row['setup_per_s']:,.0f}/s",
                _verdict(row["setup_per_s"] >= 1000),
            ]
        )
    # CPU per message: below Faye's, within 1.2x of bare websockets.
    cases = [("fan-out", subscribers, "delivery") for subscribers in (1000, 5000)]
    cases += [("many channels", window, "publish") for window in (16, 64)]
    for scenario, size, unit in cases:

        def pick(server, scenario=scenario, size=size):
            if scenario == "fan-out":
                return _find(fanout, server=server, subscribers=size)
            return _channels_row(data, server, size)

        field = f"cpu_us_per_{unit}"
        ours, faye, bare = pick(ours_key), pick("faye"), pick("bare")
        if not ours:
            continue
        label = f"{size:,} subscribers" if scenario == "fan-out" else f"{size} in flight"
        for other, need, words in ((faye, 1.0, "< Faye's"), (bare, 1.2, "≤ 1.2x bare websockets'")):
            if other is None or not other.get(field):
                continue
            ratio = ours[field] / other[field]
            shown = f"{ours[field]:,.1f} vs {other[field]:,.1f} µs ({ratio:.2f}x)"
            ok = ratio < need if need == 1.0 else ratio <= need
            rows.append([f"{scenario}, {label}: CPU per {unit} {words}", shown, _verdict(ok)])
    for subscribers in (1000, 5000):
        one = _find(fanout, server=ours_key, subscribers=subscribers)
        two = _find(scaleout, server=ours_key, subscribers=subscribers)
        if one and two and one.get("cpu_us_per_delivery") and two.get("cpu_us_per_delivery"):
            ratio = two["cpu_us_per_delivery"] / one["cpu_us_per_delivery"]
            shown = f"{ratio:.2f}x ({two['cpu_us_per_delivery']:.1f} vs {one['cpu_us_per_delivery']:.1f} µs)"
            rows.append(
                [
                    f"two processes, {subscribers:,} subscribers: CPU per delivery ≤ 1.15x one",
                    shown,
                    _verdict(ratio <= 1.15),
                ]
            )
    complete = all(
        r["delivered"] == r["expected"]
        for key in ("fanout", "channels", "scaleout", "history", "gencheck")
        for r in data.get(key, [])
    )
    rows.append(["every round: 100% delivered", "yes" if complete else "no", _verdict(complete)])
    return rows


def _header(data: dict) -> list[str]:
    env = data["environment"]
    py, npm, nofile = env["python_packages"], env["npm_packages"], env["nofile"]
    minutes, seconds = divmod(int(data.get("seconds", 0)), 60)
    return [
        START,
        "<!-- Generated by `make bench` (bench/run.py); the next run replaces this section. -->",
        "",
        f"Run {env['date']}; `make bench` took **{minutes} min {seconds} s** end to end.",
        "",
        f"- Machine: {env['cpu']}, {env['memory_gib']} GiB, Linux {env['kernel']}. Open files: soft limit "
        f"{nofile['soft_before']:,} raised to the hard limit, {nofile['hard']:,}.",
        f"- Python {env['python']}: Django {py['Django']}, channels {py['channels']}, channels-redis "
        f"{py['channels-redis']}, redis-py {py['redis']}, daphne {py['daphne']} (Twisted {py['Twisted']}), "
        f"uvicorn {py['uvicorn']}, websockets {py['websockets']}; Redis {env['redis_server']}.",
        f"- Node {env['node']}: ws {npm['ws']}, faye {npm['faye']}.",
        "",
        "CPU columns are cores used while the round ran: server(s) / load generator(s) / processes that "
        "are not ours. The machine may be shared: a short round disturbed by more than 0.25 cores of "
        "other work is run again (at most 3 times) and the least disturbed attempt is kept.",
    ]


def _fanout(data: dict, names: dict) -> list[str]:
    order = list(names)
    rows = [
        [
            f"{r['subscribers']:,} × {r['messages']}",
            names[r["server"]],
            _rate(r),
            _ms(r["p50_ms"]),
            _ms(r["p99_ms"]),
            _delivered(r),
            _cpu(r),
            _us(r.get("cpu_us_per_delivery")),
        ]
        for r in sorted(data["fanout"], key=lambda r: (r["subscribers"], order.index(r["server"])))
    ]
    intro = (
        "The publisher sends M messages, each once the previous one is acknowledged (to the plain "
        "Channels baseline, 5 rather than 20 at 5,000 subscribers, for the time budget). realtime runs "
        "under each of the four ASGI servers it supports. deliveries/s "
        "counts from the first publish to the last delivery; rounds shorter than 5 s run three times "
        "and show the median run, with the range in brackets. Latency runs from the publisher's "
        "timestamp in the data to the subscriber's receipt."
    )
    header = [
        "subscribers × messages",
        "server",
        "deliveries/s",
        "p50 ms",
        "p99 ms",
        "delivered/expected",
        "CPU",
        "server CPU-µs per delivery",
    ]
    return ["", "### 1. Fan-out: N subscribers on one channel", "", intro, "", *table(header, rows)]


def _channels(data: dict, names: dict) -> list[str]:
    order = list(names)
    rows = [
        [
            str(r["window"]),
            f"{r['publishes']:,}",
            names[r["server"]],
            _n(r["publishes_per_s"])
            + (
                f" ({_n(min(r['samples']))}–{_n(max(r['samples']))})"
                if len(r.get("samples") or []) > 1
                else ""
            ),
            _ms(r["p50_ms"]),
            _ms(r["p99_ms"]),
            _delivered(r),
            _cpu(r),
            _us(r.get("cpu_us_per_publish")),
        ]
        for r in sorted(data["channels"], key=lambda r: (r["window"], order.index(r["server"])))
    ]
    intro = (
        "The 5,000 connections of scenario 1 each also subscribe to their own channel `bench/<i>`. "
        "The publisher then publishes to those own channels, every channel in turn in a shuffled "
        "order (each publish has one subscriber), with at most 1, 16 or 64 publishes awaiting "
        "their ack. publishes/s counts from the first publish to the last delivery (the range: "
        "the three runs of a short round). Every publish is one delivery, so CPU-µs per publish "
        "is also per delivery. The plain Channels consumer is left out (about 1,000 publishes/s "
        "in earlier runs), and so are hypercorn and granian, for the time budget."
    )
    header = [
        "in flight",
        "publishes",
        "server",
        "publishes/s",
        "p50 ms",
        "p99 ms",
        "delivered/expected",
        "CPU",
        "server CPU-µs per publish",
    ]
    return [
        "",
        "### 2. Many channels: 5,000 connections, each on its own channel",
        "",
        intro,
        "",
        *table(header, rows),
    ]


def _idle(data: dict, names: dict) -> list[str]:
    hard = data["environment"]["nofile"]["hard"]
    out = [
        "",
        "### 3. Idle: authenticated, subscribed connections on one server process",
        "",
        "Each connection authenticates (realtime: an access key's secret; the Channels and bare "
        "baselines answer `auth` without a check; Faye: the Bayeux handshake) and subscribes to "
        "`bench`, 64 at a time from two generator processes. KiB per connection: the server's RSS "
        "(`/proc/<pid>/status`) growth from after 10 warm-up connections, divided by the connections "
        "held. Setup rate: connections opened, authenticated and subscribed per second, from the "
        "first to the last.",
    ]
    if any(r["connections"] < r["target"] for r in data["idle"]):
        out += [
            "",
            f"**20,000 connections do not fit on this machine:** the open-files hard limit is {hard:,} "
            "and cannot be raised here (the sandbox withholds CAP_SYS_RESOURCE), and a server process "
            "also holds a listening socket, logs, Redis and SQLite descriptors. The second row of "
            "each server is the largest count that fits, 64 descriptors below the limit. The plain "
            "Channels baseline and realtime's Bayeux endpoint run only the first row, to keep "
            "`make bench` within 15 minutes.",
        ]
    rows = [
        [
            f"{r['connections']:,}",
            names[r["server"]],
            f"{r['rss0_kib'] / 1024:,.0f} → {r['rss_kib'] / 1024:,.0f} MiB",
            f"{r['kib_per_conn']:.1f}",
            _n(r["setup_per_s"]),
            str(r["failed"]),
            _cpu(r),
            _us(1e6 * r["cpu"]["server"] * r["cpu"]["wall"] / max(1, r["batch"]))
            if "wall" in r["cpu"]
            else "–",
        ]
        for r in data["idle"]
    ]
    header = [
        "connections",
        "server",
        "RSS",
        "KiB per connection",
        "setup conn/s",
        "failed",
        "CPU during setup",
        "server CPU-µs per connection set up",
    ]
    return out + ["", *table(header, rows)]


def _scaleout(data: dict, names: dict) -> list[str]:
    rows = []
    for r in data["scaleout"]:
        one = _find(data["fanout"], server=r["server"], subscribers=r["subscribers"])
        rate = one and one["deliveries_per_s"]
        rows.append(
            [
                f"{r['subscribers']:,} × {r['messages']}",
                names[r["server"]],
                _n(rate),
                _rate(r),
                _x(_ratio(r["deliveries_per_s"], rate)),
                _ms(r["p50_ms"]),
                _ms(r["p99_ms"]),
                _delivered(r),
                _cpu(r),
                f"{_us(r.get('cpu_us_per_delivery'))} vs {_us(one and one.get('cpu_us_per_delivery'))}",
            ]
        )
    rows.append(
        ["–", "Faye", "n/a: needs the faye-redis engine (not in this harness)", "", "", "", "", "", "", ""]
    )
    rows.append(["–", "bare websockets", "n/a: one process, no broker", "", "", "", "", "", "", ""])
    skipped = "not run, to keep `make bench` within 15 minutes"
    rows.append(["–", "other servers, plain Channels consumer", skipped, "", "", "", "", "", "", ""])
    header = [
        "subscribers × messages",
        "server",
        "1 process deliveries/s",
        "2 processes deliveries/s",
        "ratio",
        "p50 ms",
        "p99 ms",
        "delivered/expected",
        "CPU (both servers)",
        "server CPU-µs per delivery, two vs one",
    ]
    intro = (
        "Subscribers alternate between the two processes; the publisher is on the first. The "
        "one-process figures are scenario 1's rows of this run (also on Redis)."
    )
    return [
        "",
        "### 4. Scale-out: fan-out over two server processes sharing Redis",
        "",
        intro,
        "",
        *table(header, rows),
    ]


def _history(data: dict, names: dict) -> list[str]:
    rows = []
    for r in data.get("history", []):
        one = _find(data["fanout"], server=r["server"], subscribers=r["subscribers"])
        rate = one and one["deliveries_per_s"]
        rows.append(
            [
                f"{r['subscribers']:,} × {r['messages']}",
                names[r["server"]],
                _n(rate),
                _rate(r),
                _x(_ratio(r["deliveries_per_s"], rate)),
                _ms(one and one["p99_ms"]),
                _ms(r["p99_ms"]),
                _delivered(r),
                f"{_us(r.get('cpu_us_per_delivery'))} vs {_us(one and one.get('cpu_us_per_delivery'))}",
            ]
        )
    header = [
        "subscribers × messages",
        "server",
        "no history deliveries/s",
        "with history deliveries/s",
        "ratio",
        "p99 ms without",
        "p99 ms with",
        "delivered/expected",
        "server CPU-µs per delivery, with vs without",
    ]
    intro = (
        "Scenario 1 on a channel that keeps 1,000 publications in Redis: each publish runs the Lua "
        "script that numbers, stores and PUBLISHes it, and each process splices the offset into the "
        "frame once. The no-history figures are scenario 1's rows of this run."
    )
    return ["", "### 5. History on", "", intro, "", *table(header, rows)]


def _generator(data: dict, names: dict) -> list[str]:
    rows = []
    for r in data["gencheck"]:
        one = _find(data["fanout"], server=r["server"], subscribers=r["subscribers"])
        if one:
            rows.append(
                [
                    names[r["server"]],
                    _rate(one),
                    _rate(r),
                    _x(_ratio(r["deliveries_per_s"], one["deliveries_per_s"])),
                    f"{one['cpu']['server']:.2f}",
                    f"{one['cpu']['generators']:.2f}",
                    f"{100 * (one['generator_elu'] or 0):.0f}%",
                ]
            )
    header = [
        "server",
        "1 generator deliveries/s",
        "2 generators deliveries/s",
        "change",
        "server CPU (1 gen.)",
        "generator CPU (1 gen.)",
        "generator event-loop use (1 gen.)",
    ]
    out = [
        "",
        "### Is the load generator the bottleneck?",
        "",
        "The 1,000-subscriber fan-out again on a fresh server, with the subscribers split over two "
        "generator processes instead of one:",
        "",
        *table(header, rows),
    ]
    elus = [r for r in data["fanout"] if r.get("generator_elu") is not None]
    if elus:
        top = max(elus, key=lambda r: r["generator_elu"])
        out += [
            "",
            f"Busiest generator event loop in any fan-out round: {100 * top['generator_elu']:.0f}% "
            f"({names[top['server']]}, {top['subscribers']:,} subscribers; server CPU in that round "
            f"{top['cpu']['server']:.2f} cores).",
        ]
    return out


def markdown(data: dict, names: dict) -> str:
    out = _header(data)
    out += [
        "",
        "### Targets (issue 16), this run",
        "",
        f"For {names.get('realtime-uvicorn', 'realtime-uvicorn')}, the server docs/deployment.md recommends.",
        "",
        *table(["target", "measured", "verdict"], targets(data)),
    ]
    out += _fanout(data, names) + _channels(data, names) + _idle(data, names) + _scaleout(data, names)
    out += _history(data, names)
    out += _generator(data, names)
    if data.get("errors") or data.get("skipped"):
        out += ["", "### Runs that did not complete", ""]
        out += [f"- {e['scenario']} / {e['server']}: {e['error'][:300]}" for e in data.get("errors", [])]
        out += [
            f"- {e['scenario']} / {e['server']}: skipped, past the time budget"
            for e in data.get("skipped", [])
        ]
    out += [
        "",
        "### Exact commands",
        "",
        "```sh",
        "make bench    # runs: .venv/bin/python bench/run.py",
        "",
        "# in bench/loadgen, first:",
        "npm ci --no-audit --no-fund",
        "",
        "# servers (PORT: a free loopback port; REDIS_PORT: the run's own redis-server)",
    ]
    out += [f"# {names.get(k, k)}\n{c}" for k, c in data["commands"].items()]
    out += [
        "redis-server --port REDIS_PORT --bind 127.0.0.1 --save '' --appendonly no",
        "",
        "# load generator: one process per ≤10,000 subscribers plus one for the publisher,",
        "# driven by bench/run.py with JSON lines on stdin/stdout",
        "node bench/loadgen/loadgen.js",
        "```",
        "",
        "Raw numbers: `bench/results/<time>.json` (not committed).",
        END,
    ]
    return "\n".join(out) + "\n"
