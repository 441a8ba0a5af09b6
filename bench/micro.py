"""Micro-benchmarks of realtime's hot paths, in one process, no network.

    .venv/bin/python bench/micro.py

Measures: secret hashing, a full auth check against SQLite (uncached and cached), the
protocol parser, and the hub's fan-out cost per delivery (1,000 local subscribers
whose ASGI send completes at once, as daphne's and uvicorn's do for a writable socket).
Bounded loops; prints a markdown table.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_site.settings")
os.environ["DATABASE_PATH"] = str(Path(tempfile.mkdtemp()) / "bench.sqlite3")
os.environ.pop("REDIS_URL", None)
os.environ["REALTIME_LOG_LEVEL"] = "WARNING"

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

from realtime import auth, keys, protocol  # noqa: E402
from realtime.models import AccessKey  # noqa: E402
from realtime.outbox import Outbox  # noqa: E402
from realtime.runtime import get_hub  # noqa: E402


def rate(fn, seconds=1.0, batch=100):
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(batch):
            fn()
        count += batch
    return count / (time.perf_counter() - start)


class FakeConnection:
    __slots__ = ("outbox", "subscriptions", "principal", "sent")

    def __init__(self):
        self.sent = 0
        self.subscriptions = set()
        self.principal = None
        self.outbox = Outbox(self.send, 1000, lambda: None)

    async def send(self, message):
        self.sent += 1

    def push(self, frame):
        self.outbox.push(frame)


async def fanout(subscribers=1000, publications=200):
    hub = await get_hub()
    conns = [FakeConnection() for _ in range(subscribers)]
    for conn in conns:
        hub.add(conn)
        await hub.subscribe(conn, "bench")
    frame = protocol.message_frame("bench", "tick", {"value": 42, "text": "hello"})
    start = time.perf_counter()
    for _ in range(publications):
        hub.deliver("bench", frame)
    elapsed = time.perf_counter() - start
    assert sum(conn.sent for conn in conns) == subscribers * publications
    return elapsed / (subscribers * publications)


def main():
    call_command("migrate", verbosity=0)
    _, secret = AccessKey.objects.create_key(name="bench", access="read-write", all_channels=True)
    rows = [
        ("hash a secret (HMAC-SHA256)", rate(lambda: keys.hash_secret(secret)), "/s"),
        (
            "auth check, uncached (hash + SQLite lookup)",
            rate(lambda: auth.authenticate_secret(secret), batch=20),
            "/s",
        ),
    ]

    async def cached():
        await auth.authenticate(secret)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < 1.0:
            for _ in range(100):
                await auth.authenticate(secret)
            n += 100
        return n / (time.perf_counter() - start)

    rows.append(("auth check, cached (hash + cache hit)", asyncio.run(cached()), "/s"))
    text = '{"publish":{"channel":"rooms/42","event":"chat","data":{"text":"hello","n":1}},"id":7}'
    rows.append(("parse a publish frame", rate(lambda: protocol.parse_frame(text, 65536)), "/s"))
    per_delivery = asyncio.run(fanout())
    rows.append(("hub fan-out per delivery (1,000 subscribers)", per_delivery * 1e6, "µs"))
    print("| measurement | value |\n|---|---|")
    for name, value, unit in rows:
        shown = f"{value:,.0f} {unit}" if unit == "/s" else f"{value:.2f} {unit}"
        print(f"| {name} | {shown} |")


if __name__ == "__main__":
    main()
