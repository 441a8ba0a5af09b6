"""Fan-out over real sockets: N subscribers on one channel, one publisher, M messages.

    .venv/bin/python bench/fanout.py --server uvicorn --subscribers 1000 --messages 50

Starts one ASGI server process (daphne, uvicorn, hypercorn or granian; in-memory layer, SQLite) on a free
loopback port, then runs the load generator in this process (asyncio `websockets`
clients, a separate process from the server). Reports deliveries per second from the
first publish to the last delivery, publish-to-delivery latency p50/p99, and
delivered/expected. Every loop is bounded in count and time; the server is stopped by
its PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.services import AsgiServer  # noqa: E402

TIME_LIMIT = 120.0


def prepare_database(path: str) -> str:
    env = {**os.environ, "DATABASE_PATH": path, "DJANGO_SETTINGS_MODULE": "demo_site.settings"}
    script = (
        "import django; django.setup();"
        "from django.core.management import call_command; call_command('migrate', verbosity=0);"
        "from realtime.models import AccessKey, Channel;"
        "Channel.objects.create(name='bench', anonymous_read=True);"
        "print(AccessKey.objects.create_key(name='bench', access='read-write', all_channels=True)[1])"
    )
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True)
    out.check_returncode()
    return out.stdout.strip().splitlines()[-1]


async def run_load(url: str, secret: str, subscribers: int, messages: int) -> dict:
    from websockets.asyncio.client import connect

    latencies: list[float] = []
    received = 0
    done = asyncio.Event()
    expected = subscribers * messages
    last_delivery = 0.0

    async def subscriber(ws):
        nonlocal received, last_delivery
        async for frame in ws:
            if frame.startswith('{"message"'):
                now = time.time()
                sent = float(frame[frame.index('"t":') + 4 : frame.index("}")])
                latencies.append(now - sent)
                received += 1
                last_delivery = now
                if received == expected:
                    done.set()

    sockets = []
    connect_start = time.perf_counter()
    for _ in range(subscribers):
        ws = await connect(url, compression=None, max_queue=None, open_timeout=30)
        await ws.send('{"subscribe":{"channel":"bench"}}')
        assert json.loads(await ws.recv()) == {"ok": True}
        sockets.append(ws)
    connect_rate = subscribers / (time.perf_counter() - connect_start)
    tasks = [asyncio.create_task(subscriber(ws)) for ws in sockets]

    publisher = await connect(url, compression=None)
    await publisher.send(json.dumps({"auth": {"secret": secret}}))
    await publisher.recv()
    start = time.time()
    for n in range(messages):
        await publisher.send(
            json.dumps({"publish": {"channel": "bench", "event": "tick", "data": {"n": n, "t": time.time()}}})
        )
        await publisher.recv()
        await asyncio.sleep(0.005)
    try:
        await asyncio.wait_for(done.wait(), TIME_LIMIT)
    except TimeoutError:
        pass
    for task in tasks:
        task.cancel()
    for ws in [*sockets, publisher]:
        await ws.close()
    latencies.sort()
    elapsed = (last_delivery or time.time()) - start
    return {
        "deliveries_per_s": received / elapsed if elapsed > 0 else 0,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else None,
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99) - 1] if latencies else None,
        "delivered": f"{received}/{expected}",
        "connections_per_s": connect_rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=["daphne", "uvicorn", "hypercorn", "granian"], default="uvicorn")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=50)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="realtime-bench-"))
    database = str(workdir / "bench.sqlite3")
    secret = prepare_database(database)
    # Every subscriber connects from 127.0.0.1: the per-address limits are off.
    realtime = {
        "RATE_LIMIT": 1e6,
        "RATE_BURST": 10**6,
        "MAX_CONNECTIONS": None,
        "MAX_CONNECTIONS_PER_ADDRESS": None,
        "MAX_ANONYMOUS_TOPICS": None,
    }
    server = AsgiServer(workdir, database=database, server=args.server, realtime=realtime)
    server.start()
    try:
        result = asyncio.run(run_load(server.ws_url, secret, args.subscribers, args.messages))
    finally:
        server.stop()
    print(
        json.dumps(
            {"server": args.server, "subscribers": args.subscribers, "messages": args.messages, **result}
        )
    )


if __name__ == "__main__":
    main()
