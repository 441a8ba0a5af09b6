"""Several Redis hosts (shards): each channel's publications, history and presence live on
one host, the one the pub/sub layer puts the channel's group on; patterns see every
host; losing one host tells only the subscriptions that lived there."""

from __future__ import annotations

import time

import pytest
from channels_redis.pubsub import RedisPubSubChannelLayer

from realtime.topology import Topology
from tests.services import AsgiServer, RedisServer

pytestmark = [pytest.mark.live, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("shards")
    started = [RedisServer(workdir, persistent=True).start() for _ in range(2)]
    yield started
    for redis in started:
        redis.stop()


@pytest.fixture(scope="module")
def sharded_servers(shards, service_dir, test_database):
    url = ",".join(redis.url for redis in shards)
    started = [
        AsgiServer(
            service_dir,
            database=test_database,
            redis_url=url,
            server="uvicorn",
            realtime={"PRESENCE_TTL": 3, "REDIS_TIMEOUT": 2, "REDIS_CLOCK_SKEW": 0.5},
        ).start()
        for _ in range(2)
    ]
    yield started
    for server in started:
        server.stop()


def shard_of(shards, name: str) -> int:
    layer = RedisPubSubChannelLayer(hosts=[{"address": redis.url} for redis in shards])
    return Topology.of(layer).shard_of(name)


def names_on_both(shards, prefix: str, count: int = 8) -> list[str]:
    names = [f"{prefix}/{n}" for n in range(count)]
    assert {shard_of(shards, name) for name in names} == {0, 1}
    return names


def test_each_channel_keeps_its_history_and_presence_on_the_host_of_its_publications(
    shards, sharded_servers, connect, make_key, make_channel, uid
):
    make_channel(f"rooms{uid}", include_subchannels=True, history_size=50, presence=True)
    names = names_on_both(shards, f"rooms{uid}")
    secret = make_key()
    reader = connect(sharded_servers[1])
    reader.auth(secret)
    writer = connect(sharded_servers[0])
    writer.auth(secret)
    for name in names:
        assert reader.subscribe(name)["ok"]
    for round_ in (1, 2):
        for name in names:
            reply = writer.publish(name, "e", f"{name}#{round_}")
            assert reply["ok"] and reply["offset"] == round_, reply
    received = [reader.next_message()["message"]["data"] for _ in range(2 * len(names))]
    assert sorted(received) == sorted(f"{name}#{r}" for name in names for r in (1, 2))

    for name in names:
        assert [p["data"] for p in writer.history(name)["history"]["publications"]] == [
            f"{name}#1",
            f"{name}#2",
        ]
        members = writer.presence(name)["presence"]["members"]
        assert len(members) == 1
        home = shard_of(shards, name)
        for index, redis in enumerate(shards):
            with redis.client() as client:
                kept = client.exists(
                    f"realtime:history:{{{name}}}:log", f"realtime:presence:{{{name}}}:entries"
                )
            assert kept == (2 if index == home else 0), (name, index, home)


def test_patterns_receive_from_every_host_once(shards, sharded_servers, connect, make_key, make_channel, uid):
    make_channel(f"tree{uid}", include_subchannels=True)
    names = names_on_both(shards, f"tree{uid}")
    secret = make_key()
    readers = [connect(sharded_servers[1]) for _ in range(3)]
    for reader, pattern in zip(readers, [f"tree{uid}/*", f"tree{uid}/**", "**"], strict=True):
        reader.auth(secret)
        assert reader.subscribe(pattern)["ok"]
    writer = connect(sharded_servers[0])
    writer.auth(secret)
    for name in names:
        assert writer.publish(name, "e", name)["ok"]
    for reader in readers:
        got = []
        while len(got) < len(names):
            message = reader.next_message(timeout=10)["message"]
            if message["channel"].startswith(f"tree{uid}/"):
                got.append(message["data"])
        assert sorted(got) == sorted(names)
        reader.request("ping")
        assert not [
            f for f in reader.pending if "message" in f and f["message"]["channel"].startswith(f"tree{uid}")
        ]


def test_a_restarted_host_tells_only_the_subscriptions_it_carried(
    shards, sharded_servers, connect, make_key, make_channel, uid
):
    make_channel(f"lost{uid}", include_subchannels=True)
    names = names_on_both(shards, f"lost{uid}")
    on_first = next(name for name in names if shard_of(shards, name) == 0)
    on_second = next(name for name in names if shard_of(shards, name) == 1)
    secret = make_key()
    reader = connect(sharded_servers[1], timeout=15)
    reader.auth(secret)
    for name in (on_first, on_second, f"lost{uid}/*"):
        assert reader.subscribe(name)["ok"]

    shards[1].kill()
    shards[1].start()

    notices = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(notices) < 2:
        frame = reader.next_message(timeout=10)
        if "missed" in frame:
            notices.append(frame["missed"]["channel"])
    assert sorted(notices) == sorted([on_second, f"lost{uid}/*"])
    # The host that stayed up still delivers, and the restarted one delivers again.
    writer = connect(sharded_servers[0])
    writer.auth(secret)
    for name in (on_first, on_second):
        for _ in range(50):
            if writer.publish(name, "e", name).get("ok"):
                break
            time.sleep(0.1)
    got = set()
    while len(got) < 2:
        message = reader.next_message(timeout=10)
        if "message" in message and message["message"]["channel"] in (on_first, on_second):
            got.add(message["message"]["data"])
    assert reader.request("ping")["ok"]
    assert not [frame for frame in reader.pending if "missed" in frame]
