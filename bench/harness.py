"""Processes for ``make bench``: the servers under test, the Node load generators, /proc readings.

Every process here is started by us, bound to a free loopback port, waited for until it
answers, and stopped by its own PID. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOADGEN = ROOT / "bench" / "loadgen"
VENV_BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

from tests.services import AsgiServer, free_port, stop, wait_for_port  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# /proc ---------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """CPU time the process (all its threads) has used so far.

    From each thread's ``schedstat`` (nanoseconds), which short rounds need: ``stat``
    counts in clock ticks (10 ms). Threads that ended meanwhile are in ``stat`` only, so
    the larger of the two is taken.
    """
    ticks = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    from_stat = (int(ticks[11]) + int(ticks[12])) / CLOCK_TICKS
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    except OSError:
        return from_stat
    return max(total / 1e9, from_stat)


def machine_cpu() -> tuple[float, float, float]:
    """(busy, steal, total) CPU seconds of the whole machine so far, from /proc/stat.

    ``steal`` is time the hypervisor gave to someone else while we wanted to run.
    """
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle, steal = fields[3] + fields[4], fields[7]  # idle + iowait; steal
    total = sum(fields[:8])  # guest time is already inside user
    return (total - idle - steal) / CLOCK_TICKS, steal / CLOCK_TICKS, total / CLOCK_TICKS


class CpuMeter:
    """CPU used by named groups of our processes, by the machine, and by everything else.

    The machine may be shared: ``others`` is what processes that are not ours used
    meanwhile (the machine's busy time less our groups'), in cores.
    """

    def __init__(self, groups: dict[str, list[int]]) -> None:
        # A server's worker processes count as the server (hypercorn and granian serve
        # from a child of the process we started).
        groups = {name: [p for pid in pids for p in family(pid)] for name, pids in groups.items()}
        self.groups = {**groups, "harness": [os.getpid()]}
        self.before = {name: sum(cpu_seconds(p) for p in pids) for name, pids in self.groups.items()}
        self.machine = machine_cpu()
        self.started = time.monotonic()

    def read(self, wall: float | None = None) -> dict[str, float]:
        """Cores used per group since the start (over ``wall`` seconds if given)."""
        wall = wall or time.monotonic() - self.started
        machine = machine_cpu()
        cpu = {
            name: (sum(cpu_seconds(p) for p in pids) - self.before[name]) / wall
            for name, pids in self.groups.items()
        }
        cpu["wall"] = wall  # seconds: cores x wall = CPU seconds
        cpu["machine"] = (machine[0] - self.machine[0]) / wall
        cpu["others"] = max(0.0, cpu["machine"] - sum(cpu[name] for name in self.groups))
        cpu["steal"] = (machine[1] - self.machine[1]) / wall
        return cpu


def family(pid: int) -> list[int]:
    """``pid`` and its descendants, from ``/proc/<pid>/task/<tid>/children``."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
            except OSError:
                continue
            queue += [int(child) for child in children if int(child) not in found]
    return found


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# Servers -------------------------------------------------------------------------------


class Process:
    """A server we started: its label, protocol, URL, PID and the command that runs it."""

    protocol = "native"
    process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)


class RealtimeServer(AsgiServer, Process):
    """realtime (demo_site.asgi with tests.settings) under daphne or uvicorn, via tests.services."""

    def command(self) -> list[str]:
        command = super().command()
        if self.server == "daphne":
            # Quiet like uvicorn's --log-level warning: no access-log line per connection.
            command[1:1] = ["-v", "0"]
        return command

    @property
    def url(self) -> str:
        return self.ws_url

    def shown_command(self) -> str:
        env = (
            "DJANGO_SETTINGS_MODULE=tests.settings DJANGO_DEBUG=0 REALTIME_LOG_LEVEL=WARNING "
            f"DATABASE_PATH=bench.sqlite3 REDIS_URL=redis://127.0.0.1:REDIS_PORT/0 "
            f"REALTIME_TEST_SETTINGS='{json.dumps(self.realtime)}'"
        )
        return f"{env} {shown(self.command())}"


class PlainServer(Process):
    """A baseline server started from a command line."""

    def __init__(self, workdir: Path, name: str, command: list[str], path: str, env: dict | None = None):
        self.workdir = workdir
        self.name = name
        self.port = free_port()
        self.argv = [part.replace("{port}", str(self.port)) for part in command]
        self.path = path
        self.env = env or {}
        self.log = workdir / f"{name}-{self.port}.log"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.path}"

    def start(self) -> PlainServer:
        env = {**os.environ, "PYTHONPATH": str(ROOT), **self.env}
        self.process = subprocess.Popen(
            self.argv, cwd=ROOT, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT
        )
        wait_for_port(self.port, self.process, self.log)
        return self

    def shown_command(self) -> str:
        env = " ".join(f"{k}={v}" for k, v in self.env.items() if k != "REDIS_URL")
        if "REDIS_URL" in self.env:
            env += " REDIS_URL=redis://127.0.0.1:REDIS_PORT/0"
        return f"{env} {shown(self.argv)}".strip()


def shown(argv: list[str]) -> str:
    """A command line for the docs: relative paths, PORT for the port."""
    text = " ".join(argv)
    text = text.replace(str(VENV_BIN) + "/", ".venv/bin/").replace(str(ROOT) + "/", "")
    for word in argv:
        if word.isdigit() and int(word) > 1024:
            text = text.replace(word, "PORT")
    return text


class RealtimeBayeuxServer(RealtimeServer):
    """The same realtime process, driven over its Bayeux endpoint instead of the native protocol."""

    protocol = "bayeux"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/realtime/bayeux"


def realtime_server(workdir, *, server, database, redis_url, realtime, bayeux=False) -> RealtimeServer:
    kind = RealtimeBayeuxServer if bayeux else RealtimeServer
    return kind(workdir, database=database, server=server, redis_url=redis_url, realtime=realtime)


def channels_baseline(workdir: Path, redis_url: str) -> PlainServer:
    return PlainServer(
        workdir,
        "channels",
        [
            str(VENV_BIN / "daphne"),
            "-v",
            "0",
            "-b",
            "127.0.0.1",
            "-p",
            "{port}",
            "bench.baselines.channels_app:application",
        ],
        "/ws",
        {"DJANGO_SETTINGS_MODULE": "bench.baselines.channels_settings", "REDIS_URL": redis_url},
    )


def faye_server(workdir: Path) -> PlainServer:
    server = PlainServer(workdir, "faye", ["node", str(LOADGEN / "faye_server.js"), "{port}"], "/bayeux")
    server.protocol = "bayeux"
    return server


def bare_server(workdir: Path) -> PlainServer:
    return PlainServer(
        workdir, "bare", [sys.executable, str(ROOT / "bench" / "baselines" / "bare_ws.py"), "{port}"], "/"
    )


# Load generator processes --------------------------------------------------------------


class GeneratorError(RuntimeError):
    pass


class Generator:
    """One ``node loadgen.js`` process, spoken to in JSON lines."""

    command = ["node", "loadgen.js"]

    def __init__(self, workdir: Path, name: str) -> None:
        self.name = name
        self.log = workdir / f"loadgen-{name}.log"
        self.process = subprocess.Popen(
            self.command,
            cwd=LOADGEN,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log.open("w"),
            text=True,
            bufsize=1,
        )
        self.events: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        for line in self.process.stdout:
            self.events.put(json.loads(line))
        self.events.put(None)

    def send(self, cmd: str, **fields) -> None:
        self.process.stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
        self.process.stdin.flush()

    def wait(self, event: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise GeneratorError(f"{self.name}: no {event!r} within {timeout:.0f}s")
            try:
                got = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if got is None:
                raise GeneratorError(f"{self.name} exited:\n{self.log.read_text()[-2000:]}")
            if got.get("ev") == "error":
                raise GeneratorError(f"{self.name}: {got.get('cmd')}: {got.get('error')}")
            if got.get("ev") == event:
                return got

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.send("close")
                self.process.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                pass
        stop(self.process)


class Generators:
    """Several generator processes used as one: subscribers are split across them."""

    def __init__(self, workdir: Path, count: int, tag: str) -> None:
        self.members = [Generator(workdir, f"{tag}-{n}") for n in range(count)]
        self.subscribers = [0] * count
        # (first index, count, member) of each share of subscribers opened
        self.ranges: list[tuple[int, int, int]] = []

    def connect(
        self,
        count: int,
        urls: list[str],
        protocol: str,
        channels: list[str],
        *,
        secret: str | None = None,
        concurrency: int = 64,
        timeout: float = 300,
    ) -> dict:
        """Open ``count`` more subscribers; returns the setup time (all of them) and failures."""
        shares = [
            count // len(self.members) + (n < count % len(self.members)) for n in range(len(self.members))
        ]
        offset = sum(self.subscribers)
        per_process = max(1, concurrency // len(self.members))
        for n, (gen, share) in enumerate(zip(self.members, shares, strict=True)):
            self.ranges.append((offset, share, n))
            gen.send(
                "connect",
                count=share,
                offset=offset,
                urls=urls,
                protocol=protocol,
                channels=channels,
                secret=secret,
                concurrency=per_process,
            )
            offset += share
        replies = [gen.wait("connected", timeout) for gen in self.members]
        for n, share in enumerate(shares):
            self.subscribers[n] += share
        return {
            "seconds": max(r["ms"] for r in replies) / 1000,
            "failed": sum(r["failed"] for r in replies),
            "error": next((r["error"] for r in replies if r["error"]), None),
        }

    def subscribe(self, channels: list[str], timeout: float = 300) -> dict:
        for gen in self.members:
            gen.send("subscribe", channels=channels, concurrency=64)
        replies = [gen.wait("subscribed", timeout) for gen in self.members]
        return {
            "seconds": max(r["ms"] for r in replies) / 1000,
            "failed": sum(r["failed"] for r in replies),
            "error": next((r["error"] for r in replies if r["error"]), None),
        }

    def expect(self, per_subscriber: int | list[int], timeout: float) -> None:
        """Each subscriber gets ``per_subscriber`` deliveries, or each member the count
        in that list."""
        for n, (gen, subs) in enumerate(zip(self.members, self.subscribers, strict=True)):
            count = per_subscriber[n] if isinstance(per_subscriber, list) else subs * per_subscriber
            gen.send("expect", count=count, timeoutMs=int(timeout * 1000))
            gen.wait("expecting", 10)

    def share(self, plan: list[str]) -> list[int]:
        """Deliveries each member gets from publishes to own channels ``bench/<index>``."""
        counts = [0] * len(self.members)
        for name in plan:
            index = int(name.rsplit("/", 1)[1])
            member = next(n for first, count, n in self.ranges if first <= index < first + count)
            counts[member] += 1
        return counts

    def results(self, timeout: float) -> list[dict]:
        return [gen.wait("result", timeout) for gen in self.members]

    @property
    def pids(self) -> list[int]:
        return [gen.pid for gen in self.members]

    def close(self) -> None:
        for gen in self.members:
            gen.close()
