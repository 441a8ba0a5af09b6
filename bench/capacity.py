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


async def publish_cost(url: str, processes: int, history: bool, count: int) -> float:
    """Redis CPU microseconds per publication with ``processes`` subscribed readers."""
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
    for _ in range(3):
        before = cpu(sync)
        for _ in range(count):
            await broker.publish(name, frame, info)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="publications per measurement")
    options = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="realtime-capacity-"))
    server = RedisServer(workdir).start()
    try:
        version = redis.Redis.from_url(server.url).info("server")["redis_version"]
        print(f"Redis {version}, {os.cpu_count()} cores")
        print("| subscribed processes | Redis CPU per publication, no history | with history (1,000 kept) |")
        print("|---|---|---|")
        for processes in (1, 10, 50, 100):
            plain = asyncio.run(publish_cost(server.url, processes, False, options.count))
            kept = asyncio.run(publish_cost(server.url, processes, True, options.count))
            print(f"| {processes} | {plain:.1f} µs | {kept:.1f} µs |")
        per_subscription = memory_per_subscription(server.url, 20_000)
        per_stored, frame_bytes = asyncio.run(memory_per_stored(server.url, 5_000))
        print(f"Redis memory per subscribed group (one process): {per_subscription:.0f} bytes")
        print(f"Redis memory per stored publication ({frame_bytes}-byte frame): {per_stored:.0f} bytes")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
