"""A wrong-secret flood from one address, and what a good client on another sees.

    .venv/bin/python bench/flood.py [--flooders 1000] [--seconds 15] [--no-write]

One address (127.0.0.2) opens ``--flooders`` connections at once, each sending wrong
secrets until it is closed (4002, or 4008 when the address is over its connection limit)
and then reconnecting, as the attacker of issue 13 did. Meanwhile a good client on
another address (127.0.0.3) keeps one authenticated connection that pings every 50 ms,
authenticates again every 250 ms on a second one (``auth`` until its ``ok``, then
``logout``), and opens a new connection every 250 ms that authenticates with a valid key.
The figures: the good client's auth latency on an open connection, the same with the
connection opened first, and its ping round trip, at rest and during the flood; what the
flood got; the server's RSS and CPU.

The server is uvicorn run as docs/deployment.md#hardening says (realtime's protocol
classes), on Redis, once with realtime's default limits and once with the limits this
flood meets turned off (``AUTH_FAILURES_PER_ADDRESS`` and the per-address connection
limit), for comparison. The flood runs in a process of its own. Everything stops by
itself: each phase is bounded in time, and processes are stopped by their PIDs.
Results go to bench/results/flood.json and, unless ``--no-write``, are printed as the
table docs/performance.md quotes.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fanout import prepare_database  # noqa: E402
from bench.harness import ROOT, cpu_seconds, rss_kib  # noqa: E402
from tests.hostile import HardenedServer  # noqa: E402
from tests.services import RedisServer  # noqa: E402

FLOODER = "127.0.0.2"
GOOD = "127.0.0.3"
REST_SECONDS = 5.0
WARMUP_SECONDS = 3.0
PING_EVERY = 0.05
AUTH_EVERY = 0.25
OPEN_TIMEOUT = 10.0
REPLY_TIMEOUT = 10.0

CONFIGS = {
    "limits on (defaults)": {},
    "per-address limits off": {"AUTH_FAILURES_PER_ADDRESS": None, "MAX_CONNECTIONS_PER_ADDRESS": None},
}


# The flood (run as `flood.py --flood URL SECONDS N` in a process of its own) ----------


async def flood(url: str, seconds: float, flooders: int) -> dict:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidHandshake

    stop_at = time.monotonic() + seconds
    counts: collections.Counter = collections.Counter()

    async def attacker() -> None:
        while time.monotonic() < stop_at:
            try:
                async with connect(
                    url, local_addr=(FLOODER, 0), open_timeout=OPEN_TIMEOUT, compression=None, max_size=None
                ) as ws:
                    counts["connections"] += 1
                    while time.monotonic() < stop_at:
                        await ws.send('{"auth":{"secret":"rt_wrong"}}')
                        reply = json.loads(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT))
                        counts[reply.get("err", "ok")] += 1
            except ConnectionClosed as closed:
                counts[f"closed {closed.rcvd.code if closed.rcvd else 'abnormally'}"] += 1
            except (OSError, InvalidHandshake, TimeoutError) as error:
                counts[type(error).__name__] += 1
                await asyncio.sleep(0.1)

    await asyncio.gather(*(attacker() for _ in range(flooders)))
    return dict(counts)


# The good client ----------------------------------------------------------------------


async def good_client(url: str, secret: str, seconds: float) -> dict:
    from websockets.asyncio.client import connect

    pings: list[float] = []
    auths: list[float] = []
    failures: collections.Counter = collections.Counter()
    stop_at = time.monotonic() + seconds

    reauths: list[float] = []

    async def reauthenticator() -> None:
        """auth on a connection that is open already: what the server takes to check a key."""
        async with connect(url, local_addr=(GOOD, 0), open_timeout=OPEN_TIMEOUT, compression=None) as ws:
            while time.monotonic() < stop_at:
                sent = time.perf_counter()
                await ws.send(json.dumps({"auth": {"secret": secret}}))
                reply = json.loads(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT))
                if reply.get("ok"):
                    reauths.append((time.perf_counter() - sent) * 1000)
                else:
                    failures[reply.get("err")] += 1
                await ws.send('{"logout":true}')
                await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT)
                await asyncio.sleep(AUTH_EVERY)

    async def pinger() -> None:
        async with connect(url, local_addr=(GOOD, 0), open_timeout=OPEN_TIMEOUT, compression=None) as ws:
            await ws.send(json.dumps({"auth": {"secret": secret}}))
            await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT)
            n = 0
            while time.monotonic() < stop_at:
                n += 1
                sent = time.perf_counter()
                await ws.send(json.dumps({"ping": True, "id": n}))
                await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT)
                pings.append((time.perf_counter() - sent) * 1000)
                await asyncio.sleep(PING_EVERY)

    async def authenticate_once() -> None:
        started = time.perf_counter()
        try:
            async with connect(url, local_addr=(GOOD, 0), open_timeout=OPEN_TIMEOUT, compression=None) as ws:
                await ws.send(json.dumps({"auth": {"secret": secret}}))
                reply = json.loads(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT))
                if reply.get("ok"):
                    auths.append((time.perf_counter() - started) * 1000)
                else:
                    failures[reply.get("err")] += 1
        except Exception as error:
            failures[type(error).__name__] += 1

    async def authenticator() -> None:
        tasks = []
        while time.monotonic() < stop_at:
            tasks.append(asyncio.create_task(authenticate_once()))
            await asyncio.sleep(AUTH_EVERY)
        await asyncio.gather(*tasks)

    await asyncio.gather(pinger(), authenticator(), reauthenticator())
    return {
        "ping_ms": summary(pings),
        "auth_ms": summary(reauths),
        "connect_and_auth_ms": summary(auths),
        "auth_failures": dict(failures),
    }


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {
        "n": len(values),
        "p50": round(statistics.median(ordered), 1),
        "p95": round(ordered[int(len(ordered) * 0.95) - 1 if len(ordered) > 1 else 0], 1),
        "max": round(ordered[-1], 1),
    }


# One configuration --------------------------------------------------------------------


def run_config(workdir: Path, database: str, redis: RedisServer, secret: str, limits: dict, args) -> dict:
    server = HardenedServer(
        workdir,
        database=database,
        redis_url=redis.url,
        realtime=limits,
        server="uvicorn",
        log_level="warning",
    ).start()
    try:
        rest = asyncio.run(good_client(server.ws_url, secret, REST_SECONDS))
        rss_before, cpu_before = rss_kib(server.process.pid), cpu_seconds(server.process.pid)
        flooder = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--flood",
                server.ws_url,
                str(args.seconds + WARMUP_SECONDS),
                str(args.flooders),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        try:
            time.sleep(WARMUP_SECONDS)
            started = time.monotonic()
            during = asyncio.run(good_client(server.ws_url, secret, args.seconds))
            wall = time.monotonic() - started
            cpu = (cpu_seconds(server.process.pid) - cpu_before) / wall
            rss_peak = rss_kib(server.process.pid)
            out, _ = flooder.communicate(timeout=args.seconds + WARMUP_SECONDS + 60)
        finally:
            if flooder.poll() is None:
                flooder.kill()
                flooder.wait(timeout=10)
        flood_counts = json.loads(out.strip().splitlines()[-1])
        return {
            "limits": limits,
            "rest": rest,
            "flood": during,
            "flood_got": flood_counts,
            "server_cpu_cores": round(cpu, 2),
            "server_rss_mib": [round(rss_before / 1024), round(rss_peak / 1024)],
        }
    finally:
        server.stop()


def pair(stats: dict) -> str:
    return f"{stats.get('p50', '-')} / {stats.get('p95', '-')}"


def table(results: dict, args) -> str:
    lines = [
        f"Wrong-secret flood: {args.flooders:,} connections from one address, reconnecting after "
        f"each close, for {args.seconds:.0f} s; a good client on another address. uvicorn with "
        "realtime's protocol classes, on Redis.",
        "",
        "| server limits | phase | good client's auth p50 / p95 (ms) | connect + auth p50 / p95 (ms) "
        "| ping p50 / p95 (ms) "
        "| flood's auths checked / refused unchecked | flood's connections (closed 4002 / 4008) "
        "| server CPU (cores) | server RSS (MiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        got = result["flood_got"]
        checked, unchecked = got.get("invalid_credentials", 0), got.get("too_many_auth_failures", 0)
        opened = (
            f"{got.get('connections', 0):,} ({got.get('closed 4002', 0):,} / {got.get('closed 4008', 0):,})"
        )
        rss = "{} → {}".format(*result["server_rss_mib"])
        rest, flood = result["rest"], result["flood"]
        lines.append(
            f"| {name} | at rest | {pair(rest['auth_ms'])} | {pair(rest['connect_and_auth_ms'])} "
            f"| {pair(rest['ping_ms'])} | | | | |"
        )
        lines.append(
            f"| {name} | flood | {pair(flood['auth_ms'])} | {pair(flood['connect_and_auth_ms'])} "
            f"| {pair(flood['ping_ms'])} "
            f"| {checked:,} / {unchecked:,} | {opened} | {result['server_cpu_cores']} | {rss} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flooders", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--flood", nargs=3, metavar=("URL", "SECONDS", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.flood:
        url, seconds, flooders = args.flood
        print(json.dumps(asyncio.run(flood(url, float(seconds), int(flooders)))))
        return
    os.environ.update(DJANGO_DEBUG="0", REALTIME_LOG_LEVEL="WARNING")
    workdir = Path(tempfile.mkdtemp(prefix="realtime-flood-"))
    database = str(workdir / "bench.sqlite3")
    secret = prepare_database(database)
    redis = RedisServer(workdir).start()
    results = {}
    try:
        for name, limits in CONFIGS.items():
            results[name] = run_config(workdir, database, redis, secret, limits, args)
    finally:
        redis.stop()
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "flood.json").write_text(json.dumps(results, indent=2))
    if not args.no_write:
        print(table(results, args))


if __name__ == "__main__":
    main()
