"""Pure units of the Redis work: the rate-limit credit, where channels land among Redis
hosts, idempotency keys in one process, and the demo settings' Redis hosts."""

import asyncio

import pytest

from realtime import protocol, ratelimit
from realtime.broker import LocalBroker
from realtime.errors import InvalidData, UnknownOutcome
from realtime.names import group_name
from realtime.publishing import validate_idempotency_key
from realtime.registry import ChannelInfo
from realtime.topology import Topology
from tests.test_ratelimit import Clock


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(ratelimit, "time", clock)
    return clock


# The token bucket's credit for time spent waiting --------------------------------------


def test_frames_queued_while_a_command_waited_are_let_through(clock):
    bucket = ratelimit.TokenBucket(rate=4, burst=8)
    assert bucket.take()
    clock.advance(10)  # the command waited on Redis for 10 s: 40 frames queued up meanwhile
    bucket.credit(10)
    assert [bucket.take() for _ in range(47)] == [True] * 47  # 7 left + 40 credited
    assert bucket.take() is False


def test_credit_is_not_counted_twice_with_the_refill(clock):
    bucket = ratelimit.TokenBucket(rate=4, burst=8)
    for _ in range(8):
        bucket.take()
    clock.advance(2)  # 1 s of it waiting, 1 s not: 4 tokens refilled, 4 credited
    bucket.credit(1)
    assert [bucket.take() for _ in range(9)] == [True] * 8 + [False]


def test_unspent_credit_lapses_after_as_long_again(clock):
    bucket = ratelimit.TokenBucket(rate=4, burst=8)
    clock.advance(5)
    bucket.credit(5)  # 20 tokens above the burst, for 5 s
    clock.advance(5)
    assert [bucket.take() for _ in range(9)] == [True] * 8 + [False]


def test_a_quick_command_earns_only_what_the_refill_would(clock):
    bucket = ratelimit.TokenBucket(rate=4, burst=8)
    for _ in range(8):
        bucket.take()
    clock.advance(0.25)
    bucket.credit(0.25)
    assert [bucket.take() for _ in range(2)] == [True, False]


# Where channels land among several Redis hosts -----------------------------------------


def pubsub_layer(hosts):
    from channels_redis.pubsub import RedisPubSubChannelLayer

    return RedisPubSubChannelLayer(hosts=hosts, prefix="asgi")


HOSTS = [{"address": f"redis://127.0.0.1:{6379 + n}/0"} for n in range(3)]


def test_a_channel_lands_on_the_host_where_the_layer_puts_its_group():
    layer = pubsub_layer(HOSTS)
    topology = Topology.of(layer)

    async def shards():
        loop_layer = layer._get_layer()
        found = []
        for name in [f"rooms/{n}" for n in range(200)]:
            group_channel = loop_layer._get_group_channel_name(group_name(name))
            found.append(
                (topology.shard_of(name), loop_layer._shards.index(loop_layer._get_shard(group_channel)))
            )
        return found

    found = asyncio.run(shards())
    assert all(ours == theirs for ours, theirs in found)
    assert {ours for ours, _ in found} == {0, 1, 2}


def test_copy_topics_have_one_group_per_host_each_on_its_host():
    layer = pubsub_layer(HOSTS)
    topology = Topology.of(layer)
    for topic in ("tree:rooms", "*"):
        groups = topology.groups(topic)
        assert len(groups) == len(set(groups)) == 3
        assert [topology.shard_of_group(group) for group in groups] == [0, 1, 2]
    assert topology.groups("rooms/1") == [group_name("rooms/1")]


def test_with_one_host_nothing_is_renamed():
    topology = Topology.of(pubsub_layer(HOSTS[:1]))
    assert topology.groups("tree:rooms") == [group_name("tree:rooms")]
    assert topology.group_on("*", 0) == group_name("*")
    assert topology.shard_of("anything") == 0


def test_an_encrypted_layer_is_not_plain_msgpack():
    from channels_redis.pubsub import RedisPubSubChannelLayer

    layer = RedisPubSubChannelLayer(hosts=HOSTS[:1], symmetric_encryption_keys=["secret" * 6])
    assert Topology.of(layer).plain is False
    assert Topology.of(pubsub_layer(HOSTS[:1])).plain is True


class Unprintable:
    def __repr__(self):
        raise AssertionError("a pubsub message was turned into a string")


def test_pubsub_connections_hand_messages_on_without_a_debug_line():
    """redis-py's default pubsub handler formats every message for a debug line that is
    never shown (topology.quiet_pubsub)."""
    from realtime.topology import quiet_pubsub

    layer = pubsub_layer([*HOSTS[:1], {**HOSTS[1], "parser_class": "theirs"}])

    async def check():
        quiet_pubsub(layer)
        ours, theirs = (shard.host for shard in layer._get_layer()._shards)
        assert theirs["parser_class"] == "theirs"  # a host's own choice is kept
        parser = ours["parser_class"](socket_read_size=65536)
        message = [b"message", b"asgi__group__x", Unprintable()]
        assert await parser.handle_pubsub_push_response(message) is message

    asyncio.run(check())


# Idempotency keys ----------------------------------------------------------------------


def test_the_publish_frame_takes_an_idempotency_key():
    command = protocol.parse_frame(
        '{"publish": {"channel": "a", "event": "e", "data": 1, "idempotency_key": "k-1"}, "id": 1}', 1000
    )
    assert command.idempotency_key == "k-1"
    assert (
        protocol.parse_frame('{"publish": {"channel": "a", "event": "e", "data": 1}}', 1000).idempotency_key
        is None
    )


@pytest.mark.parametrize("key", ["", 1, ["k"], "k" * 129, "\ud800"])
def test_a_bad_idempotency_key_is_invalid_data(key):
    import json

    frame = json.dumps({"publish": {"channel": "a", "event": "e", "data": 1, "idempotency_key": key}})
    with pytest.raises(InvalidData):
        protocol.parse_frame(frame, 10_000)
    with pytest.raises(InvalidData):
        validate_idempotency_key(key)


def info(history=0):
    return ChannelInfo(
        id=1, name="news", include_subchannels=False, anonymous_read=False, history_size=history
    )


class Hub:
    def __init__(self, loop):
        self.loop = loop
        self.frames = []

    def deliver(self, name, frame, via=None, info=None, offset=None):
        self.frames.append(frame)


@pytest.mark.parametrize("history", [0, 10], ids=["plain", "history"])
def test_in_one_process_a_repeated_key_returns_the_first_outcome_and_delivers_once(history, settings):
    settings.REALTIME = {"IDEMPOTENCY_WINDOW": 60}

    async def scenario():
        broker = LocalBroker()
        hub = Hub(asyncio.get_running_loop())
        await broker.start(hub)
        first = await broker.publish("news", '{"message":{"channel":"news","data":1}}', info(history), "k")
        again = await broker.publish("news", '{"message":{"channel":"news","data":1}}', info(history), "k")
        other = await broker.publish("news", '{"message":{"channel":"news","data":2}}', info(history), "k2")
        elsewhere = await broker.publish(
            "sport", '{"message":{"channel":"sport","data":1}}', info(history), "k"
        )
        await asyncio.sleep(0)
        return first, again, other, elsewhere, hub.frames

    first, again, other, elsewhere, frames = asyncio.run(scenario())
    assert again == first
    assert len(frames) == 3  # the repeat delivered nothing
    if history:
        assert (first.offset, other.offset) == (1, 2)


def test_in_one_process_a_key_is_forgotten_after_the_window(settings, monkeypatch):
    import realtime.broker as broker_module

    settings.REALTIME = {"IDEMPOTENCY_WINDOW": 10}
    now = [1000.0]
    monkeypatch.setattr(broker_module.time, "monotonic", lambda: now[0])

    async def scenario():
        broker = LocalBroker()
        hub = Hub(asyncio.get_running_loop())
        await broker.start(hub)
        await broker.publish("news", "f", info(), "k")
        now[0] += 11
        await broker.publish("news", "f", info(), "k")
        await asyncio.sleep(0)
        return hub.frames, broker._keys

    frames, keys = asyncio.run(scenario())
    assert len(frames) == 2 and len(keys) == 1


def test_in_one_process_a_key_whose_publication_is_on_its_way_is_an_unknown_outcome():
    broker = LocalBroker()
    broker._keys[("news", "k")] = (float("inf"), broker_pending())
    with pytest.raises(UnknownOutcome):
        asyncio.run(broker.publish("news", "f", info(), "k"))


def broker_pending():
    from realtime import broker

    return broker._PENDING


# The demo settings' Redis hosts --------------------------------------------------------


def test_demo_settings_build_sentinel_hosts_from_the_environment():
    from demo_site.settings import redis_hosts

    hosts = redis_hosts("redis://:s%40cret@/2", "10.0.0.5:26379, 10.0.0.6:26380", "mymaster")
    assert hosts == [
        {
            "sentinels": [("10.0.0.5", 26379), ("10.0.0.6", 26380)],
            "master_name": "mymaster",
            "sentinel_kwargs": {"socket_connect_timeout": 5, "socket_timeout": 5},
            "db": 2,
            "password": "s@cret",
            "socket_connect_timeout": 5,
            "socket_timeout": 5,
        }
    ]
    assert [host["master_name"] for host in redis_hosts("", "h:1", "one,two")] == ["one", "two"]


def test_demo_settings_make_one_shard_per_url():
    from demo_site.settings import redis_hosts

    assert [host["address"] for host in redis_hosts("redis://a:1/0, redis://b:2/0", "", "mymaster")] == [
        "redis://a:1/0",
        "redis://b:2/0",
    ]


def test_a_channel_has_one_group_whichever_shard_is_asked():
    topology = Topology.of(pubsub_layer(HOSTS))
    assert {topology.group_on("rooms/1", shard) for shard in range(3)} == {group_name("rooms/1")}


# The pipelined connection's packing and the publication's layer message ---------------


def test_commands_are_packed_as_redis_py_packs_them():
    from redis.asyncio.connection import Connection

    from realtime.stores.redis import _pack

    commands = [
        ("EVALSHA", "0" * 40, 1, "key", "fr\u00e9me", b"\x85\x00\xff", 1_700_000_000_000_000, 0.25),
        ("EVAL", "return 1", 0),
    ]
    assert _pack(commands) == [b"".join(Connection().pack_commands(commands))]


def test_a_publication_layer_message_packed_in_parts_is_the_layer_message():
    import msgpack

    from realtime import broker

    info = ChannelInfo(1, "rooms", True, True)
    frame = '{"message":{"channel":"rooms/1","event":"e","data":"\u00e9"}}'
    layout = broker._Layout(0, [], broker._msgpack_prefix("rooms/1"))
    body = layout.prefix + broker._FRAME_KEY + msgpack.packb(frame) + broker._INFO_KEY
    body += msgpack.packb(info.as_list()) + broker._VIA["tree"]
    expected = {"type": broker.PUBLICATION, "channel": "rooms/1", "frame": frame, "info": info.as_list()}
    assert msgpack.unpackb(body) == {**expected, "via": "tree"}
