"""Redis Sentinel: a master, a replica and three Sentinels on loopback; the master is
killed under traffic from publishers and subscribers on two server processes.

What is shown, with every publish accounted for: delivery resumes on its own (no server
process restarts), every publication acknowledged ``ok`` on a channel with history is
delivered to every subscriber once and in order (live, or recovered after the
``missed`` notice: ``REDIS_WAIT_REPLICAS`` = 1 puts each on the replica before ``ok``),
and on a channel without history each subscriber is told (``missed``) before anything
published after the publications it lost.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import redis as redis_py

from tests.accounting import Publisher, Subscriber, delivery_report
from tests.services import AsgiServer, RedisSentinel, RedisServer

pytestmark = [pytest.mark.live, pytest.mark.timeout(240)]


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except redis_py.RedisError:
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


@pytest.fixture
def sentinel_cluster(service_dir):
    master = RedisServer(service_dir).start()
    replica = RedisServer(service_dir, replica_of=master).start()
    sentinels = [RedisSentinel(service_dir, master).start() for _ in range(3)]
    try:

        def in_sync():
            with replica.client() as client:
                return client.info("replication")["master_link_status"] == "up"

        def quorum():
            with redis_py.Redis(port=sentinels[0].port, socket_timeout=5, decode_responses=True) as client:
                reply = client.execute_command("SENTINEL", "CKQUORUM", "mymaster")
                replicas = client.execute_command("SENTINEL", "REPLICAS", "mymaster")
            return "3 usable" in reply and len(replicas) == 1

        wait_until(in_sync, 20, "the replica is in sync")
        wait_until(quorum, 30, "the Sentinels know each other and the replica")
        yield master, replica, sentinels
    finally:
        for process in [*sentinels, replica, master]:
            process.stop()


def test_master_killed_under_traffic_delivery_resumes_and_every_acknowledged_publication_arrives(
    sentinel_cluster, service_dir, test_database, make_key, make_channel, uid
):
    master, replica, sentinels = sentinel_cluster
    environment = {
        "REDIS_URL": "",
        "REDIS_SENTINELS": ",".join(sentinel.address for sentinel in sentinels),
        "REDIS_SENTINEL_MASTER": "mymaster",
    }
    realtime = {
        "REDIS_TIMEOUT": 2,
        "REDIS_CLOCK_SKEW": 0.5,
        "REDIS_WAIT_REPLICAS": 1,
        "REDIS_WAIT_TIMEOUT": 0.5,
    }
    servers = [
        AsgiServer(
            service_dir, database=test_database, realtime=realtime, server="uvicorn", env=environment
        ).start()
        for _ in range(2)
    ]
    pids = [server.process.pid for server in servers]
    kept = make_channel(f"kept-{uid}", history_size=10_000).name
    plain = make_channel(f"news-{uid}").name
    secret = make_key()
    timeline = {}

    async def publish_until(publisher, stop: asyncio.Event):
        count = 0
        while not stop.is_set():
            for name in (kept, plain):
                count += 1
                await publisher.publish(name, f"{publisher.tag}:{count}", retries=60)
            await asyncio.sleep(0.05)

    async def scenario():
        subscribers = [
            await Subscriber(server.ws_url, secret, {kept: True, plain: False}).start() for server in servers
        ]
        publishers = [
            await Publisher(server.ws_url, secret, f"p{n}").start() for n, server in enumerate(servers)
        ]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(publish_until(publisher, stop)) for publisher in publishers]
        await asyncio.sleep(3)

        old = sentinels[0].master_address()
        master.kill()
        timeline["killed"] = time.monotonic()
        new = await asyncio.to_thread(
            wait_until,
            lambda: sentinels[0].master_address() != old and sentinels[0].master_address(),
            30,
            "failover",
        )
        assert new[1] == replica.port

        def agreed():
            return all(sentinel.master_address() == new for sentinel in sentinels)

        await asyncio.to_thread(wait_until, agreed, 30, "every Sentinel names the new master")
        timeline["failed_over"] = time.monotonic()
        # The old master comes back (a supervisor restarts it) and Sentinel makes it the
        # new master's replica: WAIT 1 can be met again.
        master.start()

        def replicated():
            with replica.client() as client:
                return client.info("replication")["connected_slaves"] >= 1

        await asyncio.to_thread(wait_until, replicated, 60, "the old master replicates the new one")
        timeline["replicated"] = time.monotonic()
        await asyncio.sleep(5)
        stop.set()
        await asyncio.gather(*tasks)
        await asyncio.sleep(4)
        for client in [*publishers, *subscribers]:
            await client.connection.close()
        return publishers, subscribers

    try:
        publishers, subscribers = asyncio.run(scenario())
        alive = [server.process.poll() is None for server in servers]
    finally:
        for server in servers:
            server.stop()

    killed, failed_over = timeline["killed"], timeline["failed_over"]
    print(
        f"\nfailover took {failed_over - killed:.1f}s; the old master replicated again "
        f"{timeline['replicated'] - failed_over:.1f}s later"
    )
    assert alive == [True, True] and [server.process.pid for server in servers] == pids
    for publisher in publishers:
        print(
            f"publisher {publisher.tag}: {len(publisher.outcomes)} publications, replies {publisher.counts()}"
        )
        assert {outcome.final for outcome in publisher.outcomes} <= {"ok", "unavailable"}
        # Delivery resumed: publications first sent after the old master was back were acknowledged.
        assert any(o.final == "ok" and o.sent_at > timeline["replicated"] for o in publisher.outcomes)

    for index, subscriber in enumerate(subscribers):
        for name in (kept, plain):
            events = subscriber.events[name]
            notices = subscriber.notices(name)
            print(
                f"subscriber on process {index + 1}, {name}: notices {notices}, dropped {subscriber.dropped}"
            )
            for publisher in publishers:
                mine = [
                    event for event in events if event[0] != "pub" or event[1].startswith(publisher.tag + ":")
                ]
                acknowledged = sorted(
                    (o for o in publisher.outcomes if o.channel == name and o.final == "ok"),
                    key=lambda o: o.offset or 0,
                )
                report = delivery_report([o.data for o in acknowledged], publisher.refused(name), mine)
                print(f"  from {publisher.tag}: {dict(report, lost=len(report['lost']))}")
                assert (
                    report["twice"] == 0 and report["out_of_order"] == 0 and report["refused_delivered"] == []
                )
                assert report["missed_notices"] >= 1
                after = [o.data for o in acknowledged if o.sent_at > timeline["replicated"]]
                assert set(after) <= set(subscriber.received(name)), "live delivery did not resume"
                if name == kept:
                    assert report["lost"] == [], "an acknowledged publication with history was not recovered"
                    assert report["recoveries"] and all(report["recoveries"])
                else:
                    assert report["unexplained"] == []


def test_with_wait_replicas_ok_means_a_replica_has_it_and_a_retry_with_the_key_says_so(
    service_dir, test_database, connect, make_key, make_channel, uid
):
    master = RedisServer(service_dir).start()
    replica = RedisServer(service_dir, replica_of=master)
    realtime = {"REDIS_WAIT_REPLICAS": 1, "REDIS_WAIT_TIMEOUT": 0.3}
    server = AsgiServer(service_dir, database=test_database, redis_url=master.url, realtime=realtime).start()
    try:
        kept = make_channel(f"kept-{uid}", history_size=10).name
        plain = make_channel(f"news-{uid}").name
        secret = make_key()
        reader, writer = connect(server), connect(server)
        reader.auth(secret)
        writer.auth(secret)
        reader.subscribe(kept)
        reader.subscribe(plain)

        def publish(name, data, key=None):
            body = {"channel": name, "event": "e", "data": data}
            if key is not None:
                body["idempotency_key"] = key
            return writer.request("publish", body)

        # No replica: Redis ran it (it is delivered, once) but cannot say it would survive.
        first = publish(kept, "kept", "k-1")
        assert first["err"] == "unknown_outcome", first
        assert "replica" in first["detail"]
        assert publish(kept, "kept", "k-1")["err"] == "unknown_outcome"  # still none: not published again
        # Nothing stored, no key: nothing to wait for.
        assert publish(plain, "plain")["ok"] is True

        replica.start()
        wait_until(lambda: replica.client().info("replication")["master_link_status"] == "up", 20, "sync")
        again = publish(kept, "kept", "k-1")
        assert again["ok"] is True and again["offset"] == 1, again

        got = [reader.next_message()["message"]["data"] for _ in range(2)]
        assert sorted(got) == ["kept", "plain"]
        reader.request("ping")
        assert not [frame for frame in reader.pending if "message" in frame]
    finally:
        server.stop()
        replica.stop()
        master.stop()
