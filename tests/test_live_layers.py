"""Publishing through layers the Lua scripts cannot append to (an encrypted pub/sub layer,
channels_redis's core layer), against a real Redis: still delivered once per idempotency
key, and through the encrypted layer still with a deadline."""

from __future__ import annotations

import asyncio
import json

import pytest

from realtime.broker import LayerBroker
from realtime.names import group_name
from realtime.registry import ChannelInfo

pytestmark = [pytest.mark.live]


def info(name, history=0):
    return ChannelInfo(1, name, False, False, history_size=history, history_ttl=0)


async def received(layer, channel, wait=0.5):
    got = []
    while True:
        try:
            got.append(await asyncio.wait_for(layer.receive(channel), wait))
        except TimeoutError:
            return got


@pytest.mark.parametrize("history", [0, 10], ids=["plain", "history"])
def test_an_encrypted_pubsub_layer_gets_one_copy_per_idempotency_key(redis_server, uid, history):
    from channels_redis.pubsub import RedisPubSubChannelLayer

    name = f"secret-{uid}-{history}"

    async def scenario():
        layer = RedisPubSubChannelLayer(
            hosts=[{"address": redis_server.url}], symmetric_encryption_keys=["k" * 32]
        )
        broker = LayerBroker(layer)
        assert broker.topology.pubsub and not broker.topology.plain
        channel = await layer.new_channel()
        await layer.group_add(group_name(name), channel)
        frame = json.dumps({"message": {"channel": name, "event": "e", "data": 1}})
        first = await broker.publish(name, frame, info(name, history), "k-1")
        again = await broker.publish(name, frame, info(name, history), "k-1")
        other = await broker.publish(name, frame, info(name, history), "k-2")
        messages = await received(layer, channel)
        await layer.flush()
        return first, again, other, messages

    first, again, other, messages = asyncio.run(scenario())
    exact = [m for m in messages if m["via"] == "exact"]
    if history:
        assert (first.offset, again.offset, other.offset) == (1, 1, 2)
        # Numbered once, but sent through the layer on every attempt: the copy of a repeat
        # carries the first one's offset, which subscribers' hubs and clients drop as seen.
        assert [m["offset"] for m in exact] == [f"{n:020d}" for n in (1, 1, 2)]
    else:
        assert first is again is other is None
        assert len(exact) == 2


def test_the_core_layer_gets_one_copy_per_idempotency_key(redis_server, uid):
    from channels_redis.core import RedisChannelLayer

    name = f"core-{uid}"

    async def scenario():
        layer = RedisChannelLayer(hosts=[redis_server.url])
        broker = LayerBroker(layer)
        assert not broker.topology.pubsub
        channel = await layer.new_channel()
        await layer.group_add(group_name(name), channel)
        frame = json.dumps({"message": {"channel": name, "event": "e", "data": 1}})
        for key in ("k-1", "k-1", "k-2"):
            await broker.publish(name, frame, info(name), key)
        messages = await received(layer, channel)
        get = "return redis.call('GET', KEYS[1])"
        records = [
            await broker.redis.of(name).run(get, [f"realtime:idem:{{{name}}}:{key}"], [], "records")
            for key in ("k-1", "k-2")
        ]
        await layer.flush()
        return messages, records

    messages, records = asyncio.run(scenario())
    assert len([m for m in messages if m["via"] == "exact"]) == 2
    assert records == ["1", "1"]
