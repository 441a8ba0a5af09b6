"""Redis's side of capacity planning: what one publication, one subscription and one
stored publication cost a Redis shard. A short run (under a minute) against its own
redis-server; docs/deployment.md#capacity turns the figures into processes and shards.

    .venv/bin/python bench/capacity.py

* CPU per publication: realtime's own publish path (``LayerBroker.publish``: one Lua
  script per publication, its copies for exact and pattern subscribers, the deadline
  check) with P server processes subscribed to the channel, each played by one
  pub/sub connection that reads everything, as a server process's layer connection
  does. Redis's CPU comes from INFO (``used_cpu_user`` + ``used_cpu_sys``).
* Memory per subscription: one connection subscribes to many group channels.
* Memory per stored publication: a channel with history keeps many frames.
* With ``--server``, a server process's side too (uvicorn, from /proc): its CPU per
  publication made by a client over its WebSocket, and per publication it receives
  from Redis for one local subscriber (each on a channel of its own).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

import redis  # noqa: E402
from channels_redis.pubsub import RedisPubSubChannelLayer  # noqa: E402

from realtime import protocol  # noqa: E402
from realtime.broker import LayerBroker  # noqa: E402
from realtime.names import group_name  # noqa: E402
from realtime.registry import ChannelInfo  # noqa: E402
from tests.services import RedisServer  # noqa: E402

FRAME_DATA = {"text": "a chat message of about a hundred bytes, as JSON", "n": 1}


def cpu(client) -> float:
    info = client.info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


async def publish_cost(url: str, processes: int, history: bool, count: int, concurrency: int = 1) -> float:
    """Redis CPU microseconds per publication with ``processes`` subscribed readers, made
    by ``concurrency`` publishers at once (Redis then writes several to a reader at once)."""
    import redis.asyncio as aioredis

    layer = RedisPubSubChannelLayer(hosts=[{"address": url}])
    broker = LayerBroker(layer)
    name = f"capacity/{processes}/{int(history)}"
    info = ChannelInfo(1, name, False, False, history_size=1000 if history else 0, history_ttl=0)
    channel = broker.topology.channel(group_name(name))
    readers = []
    for _ in range(processes):
        client = aioredis.Redis.from_url(url)
        pubsub = client.pubsub()
        await pubsub.subscribe(channel)
        readers.append((client, pubsub))
    received = [0]

    async def read(pubsub):
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                received[0] += 1

    tasks = [asyncio.create_task(read(pubsub)) for _, pubsub in readers]
    frame = protocol.message_frame(name, "chat", FRAME_DATA, None)
    sync = redis.Redis.from_url(url)
    for _ in range(200):
        await broker.publish(name, frame, info)
    runs = []

    async def publisher(share: int) -> None:
        for _ in range(share):
            await broker.publish(name, frame, info)

    share = count // concurrency
    count = share * concurrency
    for _ in range(3):
        before = cpu(sync)
        await asyncio.gather(*(publisher(share) for _ in range(concurrency)))
        runs.append((cpu(sync) - before) / count * 1e6)
    deadline = time.monotonic() + 10
    while received[0] < processes * (count * 3 + 200) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for task in tasks:
        task.cancel()
    for client, pubsub in readers:
        await pubsub.aclose()
        await client.aclose()
    assert received[0] == processes * (count * 3 + 200), (received[0], processes)
    return statistics.median(runs)


def memory_per_subscription(url: str, count: int) -> float:
    client = redis.Redis.from_url(url)
    before = client.info("memory")["used_memory"]
    pubsub = client.pubsub()
    for start in range(0, count, 1000):
        pubsub.subscribe(*[f"asgi__group__{group_name(f'm/{n}')}" for n in range(start, start + 1000)])
    while pubsub.get_message(timeout=0.01):
        pass
    after = client.info("memory")["used_memory"]
    pubsub.close()
    return (after - before) / count


async def memory_per_stored(url: str, count: int) -> float:
    layer = RedisPubSubChannelLayer(hosts=[{"address": url}])
    broker = LayerBroker(layer)
    info = ChannelInfo(1, "kept/memory", False, False, history_size=count, history_ttl=0)
    frame = protocol.message_frame(info.name, "chat", FRAME_DATA, None)
    client = redis.Redis.from_url(url)
    await broker.publish(info.name, frame, info)
    before = client.info("memory")["used_memory"]
    for _ in range(count):
        await broker.publish(info.name, frame, info)
    return (client.info("memory")["used_memory"] - before) / count, len(frame)


async def server_costs(url: str, server, secret: str, count: int, channels: int) -> tuple[float, float]:
    """Server CPU µs per publication made over a socket, and per one received from Redis."""
    from bench.harness import cpu_seconds
    from tests.accounting import Connection

    pid = server.process.pid
    publisher = await Connection(server.ws_url).open()
    assert (await publisher.request("auth", {"secret": secret}))["ok"]
    body = {"channel": "cap/nobody", "event": "chat", "data": FRAME_DATA}

    async def publish_all(total: int) -> None:
        window = []
        for _ in range(total):
            window.append(publisher.send("publish", body))
            if len(window) >= 16:
                assert (await publisher.wait(window.pop(0)))["ok"]
        for request_id in window:
            assert (await publisher.wait(request_id))["ok"]

    await publish_all(200)
    before = cpu_seconds(pid)
    await publish_all(count)
    per_publish = (cpu_seconds(pid) - before) / count * 1e6

    subscribers = []
    for index in range(channels):
        connection = Connection(server.ws_url)
        await connection.open()
        assert (await connection.request("subscribe", {"channel": f"cap/{index}"}))["ok"]
        subscribers.append(connection)
    layer = RedisPubSubChannelLayer(hosts=[{"address": url}])
    broker = LayerBroker(layer)
    infos = [ChannelInfo(1, f"cap/{index}", True, True) for index in range(channels)]
    frames = [protocol.message_frame(info.name, "chat", FRAME_DATA, None) for info in infos]
    rounds = max(1, count // channels)
    await asyncio.sleep(1)
    before = cpu_seconds(pid)
    for _ in range(rounds):
        for info, frame in zip(infos, frames, strict=True):
            await broker.publish(info.name, frame, info)
    await asyncio.sleep(2)  # the server delivers what is in flight; its idle CPU is tiny
    per_received = (cpu_seconds(pid) - before) / (rounds * channels) * 1e6
    for connection in [publisher, *subscribers]:
        await connection.close()
    return per_publish, per_received


def start_server(workdir: Path, url: str):
    import subprocess

    from tests.services import AsgiServer

    database = str(workdir / "capacity.sqlite3")
    env = {**os.environ, "DATABASE_PATH": database}
    script = (
        "import django; django.setup();"
        "from django.core.management import call_command; call_command('migrate', verbosity=0);"
        "from realtime.models import AccessKey, Channel;"
        "Channel.objects.create(name='cap', anonymous_read=True, include_subchannels=True);"
        "print(AccessKey.objects.create_key(name='cap', access='read-write', all_channels=True)[1])"
    )
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True)
    out.check_returncode()
    limits = {"RATE_LIMIT": 1_000_000, "RATE_BURST": 1_000_000, "MAX_SUBSCRIPTIONS": 10_000}
    server = AsgiServer(workdir, database=database, redis_url=url, realtime=limits, server="uvicorn").start()
    return server, out.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="publications per measurement")
    parser.add_argument("--server", action="store_true", help="also measure a uvicorn server process")
    options = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="realtime-capacity-"))
    server = RedisServer(workdir).start()
    try:
        version = redis.Redis.from_url(server.url).info("server")["redis_version"]
        print(f"Redis {version}, {os.cpu_count()} cores")
        print("Redis CPU per publication, by server processes subscribed to its channel:")
        print("| subscribed processes | no history, 1 publisher | with history | no history, 32 at once |")
        print("|---|---|---|---|")
        for processes in (1, 10, 50, 100):
            plain = asyncio.run(publish_cost(server.url, processes, False, options.count))
            kept = asyncio.run(publish_cost(server.url, processes, True, options.count))
            busy = asyncio.run(publish_cost(server.url, processes, False, options.count, 32))
            print(f"| {processes} | {plain:.1f} µs | {kept:.1f} µs | {busy:.1f} µs |")
        per_subscription = memory_per_subscription(server.url, 20_000)
        per_stored, frame_bytes = asyncio.run(memory_per_stored(server.url, 5_000))
        print(f"Redis memory per subscribed group (one process): {per_subscription:.0f} bytes")
        print(f"Redis memory per stored publication ({frame_bytes}-byte frame): {per_stored:.0f} bytes")
        if options.server:
            os.environ.update(DJANGO_DEBUG="0", REALTIME_LOG_LEVEL="WARNING")
            asgi, secret = start_server(workdir, server.url)
            try:
                per_publish, per_received = asyncio.run(
                    server_costs(server.url, asgi, secret, options.count, 500)
                )
            finally:
                asgi.stop()
            print(f"Server CPU per publication made over its WebSocket, no subscriber: {per_publish:.0f} µs")
            print(
                f"Server CPU per publication received from Redis, one local subscriber: {per_received:.0f} µs"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
