"""Fan-out over server-sent events next to the same fan-out over WebSockets.

    .venv/bin/python bench/sse.py [--subscribers 500] [--messages 50] [--server uvicorn]

One server process (the in-memory layer, a SQLite database made here), N subscribers on one
anonymous channel (all SSE streams, then all WebSockets, from this process's event loop),
one publisher sending M publications one at a time through the HTTP endpoint. Prints
deliveries per second and the server's CPU. Not part of ``make bench``: a quick check that
SSE rides the same fan-out. Every wait is bounded; the server is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import cpu_seconds  # noqa: E402
from tests.services import AsgiServer  # noqa: E402

CHANNEL = "bench-sse"


def prepare(directory: Path) -> tuple[str, str]:
    database = str(directory / "bench.sqlite3")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_PATH": database,
        "REDIS_URL": "",
    }
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True, cwd=ROOT)
    subprocess.run([*manage, "realtime_channel", "create", CHANNEL, "--anonymous-read"], env=env, check=True,
                   cwd=ROOT, stdout=subprocess.DEVNULL)  # fmt: skip
    key = [*manage, "realtime_key", "create", "--name", "bench", "--access", "read-write", "--all-channels"]
    out = subprocess.run(key, env=env, check=True, cwd=ROOT, capture_output=True, text=True)
    return database, out.stdout.strip().splitlines()[-1]


async def sse_subscriber(port: int, messages: int, ready: asyncio.Event, counts: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /realtime/sse?channel={CHANNEL} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    seen = 0
    while seen < messages:
        line = await reader.readline()
        if not line:
            break
        if line.startswith(b"event: realtime:subscribed"):
            counts[0] += 1
            if counts[0] == counts[1]:
                ready.set()
        elif line.startswith(b"event: tick"):
            seen += 1
    counts[2] += seen
    writer.close()


async def ws_subscriber(port: int, messages: int, ready: asyncio.Event, counts: list) -> None:
    from websockets.asyncio.client import connect

    async with connect(f"ws://127.0.0.1:{port}/realtime/ws", compression=None, max_size=None) as ws:
        await ws.send(json.dumps({"subscribe": {"channel": CHANNEL}}))
        await ws.recv()
        counts[0] += 1
        if counts[0] == counts[1]:
            ready.set()
        seen = 0
        while seen < messages:
            if '"message"' in await ws.recv():
                seen += 1
        counts[2] += seen


def publish(port: int, secret: str, n: int) -> None:
    body = json.dumps({"channel": CHANNEL, "event": "tick", "data": {"n": n, "pad": "x" * 100}}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/realtime/api/publish", data=body,
                                     headers={"Authorization": f"Bearer {secret}"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


async def scenario(kind: str, server: AsgiServer, secret: str, subscribers: int, messages: int) -> dict:
    ready, counts = asyncio.Event(), [0, subscribers, 0]
    make = sse_subscriber if kind == "sse" else ws_subscriber
    tasks = [asyncio.create_task(make(server.port, messages, ready, counts)) for _ in range(subscribers)]
    await asyncio.wait_for(ready.wait(), 60)
    cpu_before, started = cpu_seconds(server.process.pid), time.monotonic()
    loop = asyncio.get_running_loop()
    for n in range(messages):
        await loop.run_in_executor(None, publish, server.port, secret, n)
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    wall = time.monotonic() - started
    cpu = cpu_seconds(server.process.pid) - cpu_before
    return {
        "kind": kind,
        "deliveries": counts[2],
        "per_second": round(counts[2] / wall),
        "server_cpu": round(cpu / wall, 2),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--server", default="uvicorn", choices=["uvicorn", "daphne"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="realtime-bench-sse-") as directory:
        database, secret = prepare(Path(directory))
        for kind in ("sse", "websocket"):
            server = AsgiServer(Path(directory), database=database, server=args.server,
                                realtime={"RATE_LIMIT": 1e6, "RATE_BURST": 10**6}).start()  # fmt: skip
            try:
                print(json.dumps(await scenario(kind, server, secret, args.subscribers, args.messages)))
            finally:
                server.stop()


if __name__ == "__main__":
    asyncio.run(main())
