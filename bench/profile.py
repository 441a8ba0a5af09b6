"""Where realtime's server spends its time and memory: ``bench/run.py --profile``.

Not part of ``make bench`` (a profiler slows the server down, so these runs are kept
apart from the measured ones). For realtime under uvicorn, on the same Redis and
database set-up as ``make bench``:

* CPU, with py-spy (sampling; it stops the process for each sample, so the stacks are
  whole) attached to the server process while it serves a 1,000-subscriber fan-out,
  publishes to 5,000 channels of one subscriber each with 16 in flight, and 5,000
  authenticated connections being opened;
* memory, with tracemalloc in the server (bench/traced_server.py): a snapshot after the
  warm-up connections and one after 5,000 idle connections, compared by package.

Prints markdown summaries and writes them to ``bench/results/profile-<time>.md``.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

from bench import harness
from bench.harness import ROOT, VENV_BIN, Generators

PYSPY = VENV_BIN / "py-spy"


class TracedRealtime(harness.RealtimeServer):
    """uvicorn inside bench/traced_server.py, which dumps tracemalloc snapshots on SIGUSR1."""

    def command(self) -> list[str]:
        command = super().command()
        return [
            sys.executable,
            str(ROOT / "bench" / "traced_server.py"),
            str(self.workdir / "snapshot"),
            *command,
        ]


def start_pyspy(pid: int, output: Path) -> subprocess.Popen:
    argv = [
        str(PYSPY),
        "record",
        "--pid",
        str(pid),
        "--rate",
        "200",
        "--format",
        "raw",
        "--output",
        str(output),
    ]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached and sampling
    return process


def stop_pyspy(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _frame(text: str) -> str:
    """``func (module/path.py:12)`` (py-spy's raw format) -> ``module/path.py:func``."""
    name, _, where = text.rpartition(" (")
    return f"{where.rsplit(':', 1)[0]}:{name}"


# Where a sample's stack passes through, for the "inclusive" column.
PARTS = [
    ("socket send (`_SelectorSocketTransport.write`)", lambda f: "_SelectorSocketTransport.write" in f),
    ("uvicorn's WebSocket protocol", lambda f: "(uvicorn/protocols/websockets/" in f),
    ("websockets library (frames, handshake)", lambda f: "(websockets/" in f),
    ("realtime", lambda f: "(realtime/" in f),
    ("Channels (consumer, routing)", lambda f: "(channels/" in f),
    ("channels_redis and redis-py", lambda f: "(channels_redis/" in f or "(redis/" in f),
    ("Django ORM and SQLite", lambda f: "(django/db/" in f),
    ("asgiref sync_to_async (thread hop)", lambda f: "(asgiref/sync.py" in f),
    ("event loop waiting in epoll", lambda f: "EpollSelector.select" in f),
]


def cpu_summary(raw: Path, title: str, top: int = 10) -> list[str]:
    own: collections.Counter = collections.Counter()
    through: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        own[_frame(frames[-1])] += n
        for label, matches in PARTS:
            if any(matches(f) for f in frames):
                through[label] += n
    if not total:
        return [f"#### {title}", "", "(no samples)", ""]
    out = [
        f"#### {title} ({total:,} samples)",
        "",
        "| function (self time) | % | stacks passing through | % |",
        "|---|---|---|---|",
    ]
    parts = [(label, through[label]) for label, _ in PARTS]
    for (f1, n1), (label, n2) in zip(own.most_common(top), parts, strict=False):
        out.append(f"| `{f1}` | {100 * n1 / total:.1f} | {label} | {100 * n2 / total:.1f} |")
    return out + [""]


def memory_summary(before: Path, after: Path, connections: int, top: int = 12) -> list[str]:
    old = tracemalloc.Snapshot.load(str(before))
    new = tracemalloc.Snapshot.load(str(after))
    by_package: collections.Counter = collections.Counter()
    by_line: collections.Counter = collections.Counter()
    for stat in new.compare_to(old, "lineno"):
        frame = stat.traceback[0]
        parts = Path(frame.filename).parts
        if "site-packages" in parts:
            package = parts[parts.index("site-packages") + 1]
        elif "realtime" in parts:
            package = "realtime"
        else:
            package = "python stdlib: " + Path(frame.filename).stem
        by_package[package] += stat.size_diff
        by_line[f"{package}: {Path(frame.filename).name}:{frame.lineno}"] += stat.size_diff
    total = sum(by_package.values())
    out = [
        f"#### Python heap growth per idle connection ({connections:,} connections, tracemalloc)",
        "",
        f"Total: {total / connections / 1024:.1f} KiB per connection traced by tracemalloc "
        "(Python allocations only; RSS adds allocator overhead and fragmentation).",
        "",
        "| where | KiB per connection | | allocation site | KiB per connection |",
        "|---|---|---|---|---|",
    ]
    for (p, n), (line, m) in zip(by_package.most_common(top), by_line.most_common(top), strict=False):
        out.append(f"| {p} | {n / connections / 1024:.2f} | | `{line}` | {m / connections / 1024:.2f} |")
    return out + [""]


def run(bench) -> None:
    """Profile realtime under uvicorn; ``bench`` is a prepared bench.run.Bench."""
    workdir = bench.workdir
    lines = ["### Profiles (`bench/run.py --profile`)", ""]
    limits = dict(bench.realtime_limits)
    server = harness.realtime_server(
        workdir,
        server="uvicorn-realtime",
        database=bench.database,
        redis_url=bench.redis.url,
        realtime=limits,
    ).start()
    gens, pub = bench.with_generators([server], 1, "profile")
    try:
        gens.connect(1000, [server.url], "native", ["bench"])
        time.sleep(0.5)
        spy = start_pyspy(server.pid, workdir / "fanout.txt")
        row = bench.round([server], gens, pub, ["bench"] * 300, 300, 1)
        stop_pyspy(spy)
        lines += cpu_summary(
            workdir / "fanout.txt", f"Fan-out, 1,000 subscribers, {row['deliveries_per_s']:,.0f}/s"
        )
        gens.connect(4000, [server.url], "native", ["bench"])
        gens.subscribe(["bench/{i}"])
        order = list(range(5000))
        random.Random(6).shuffle(order)
        plan = [f"bench/{i}" for i in order]
        spy = start_pyspy(server.pid, workdir / "channels.txt")
        row = bench.round([server], gens, pub, plan, gens.share(plan), 16)
        stop_pyspy(spy)
        title = f"Many channels, 16 in flight, {row['publishes_per_s']:,.0f} publishes/s"
        lines += cpu_summary(workdir / "channels.txt", title)
    finally:
        pub.close()
        gens.close()
        server.stop()

    traced = TracedRealtime(
        workdir,
        database=bench.database,
        server="uvicorn-realtime",
        redis_url=bench.redis.url,
        realtime=limits,
    ).start()
    gens = Generators(workdir, 1, "profile-idle")
    try:
        gens.connect(10, [traced.url], "native", ["bench"], secret=bench.secret)
        time.sleep(1)
        os.kill(traced.pid, signal.SIGUSR1)
        wait_for_file(workdir / "snapshot.1")
        spy = start_pyspy(traced.pid, workdir / "setup.txt")
        setup = gens.connect(5000, [traced.url], "native", ["bench"], secret=bench.secret)
        stop_pyspy(spy)
        lines += cpu_summary(
            workdir / "setup.txt",
            f"Opening 5,000 authenticated subscribed connections "
            f"({5000 / setup['seconds']:,.0f}/s under tracemalloc and py-spy)",
        )
        time.sleep(2)
        os.kill(traced.pid, signal.SIGUSR1)
        wait_for_file(workdir / "snapshot.2")
        lines += memory_summary(workdir / "snapshot.1", workdir / "snapshot.2", 5000)
    finally:
        gens.close()
        traced.stop()
    text = "\n".join(lines)
    print(text)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = ROOT / "bench" / "results" / f"profile-{stamp}.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text + "\n")
    print(f"written to {out.relative_to(ROOT)}; raw py-spy stacks in {workdir}", flush=True)
    print(json.dumps({"workdir": str(workdir)}))


def wait_for_file(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.with_suffix(path.suffix + ".done").exists()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} was not written within {timeout}s")
        time.sleep(0.2)
