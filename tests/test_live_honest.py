"""What publishers are told while Redis hangs or dies is the truth, with every publish accounted for.

``unavailable`` means not delivered, now or later; ``ok`` means Redis took it; a reply
comes within REDIS_TIMEOUT (+ REDIS_CLOCK_SKEW) of the frame being handled, and frames
queued meanwhile are answered at once rather than each waiting out the timeout; the
hang does not turn into ``rate_limited``; a restart is noticed at once and subscribers
are told, and recover from history everything acknowledged.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.accounting import Publisher, Subscriber, delivery_report
from tests.services import AsgiServer, RedisServer

pytestmark = [pytest.mark.live, pytest.mark.timeout(180)]


@pytest.fixture
def start_server(service_dir, test_database):
    """A uvicorn process on its own Redis, with the given REALTIME settings."""
    started = []

    def start(redis, **realtime):
        server = AsgiServer(
            service_dir, database=test_database, redis_url=redis.url, realtime=realtime, server="uvicorn"
        ).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def own_redis(service_dir):
    started = []

    def start(**options):
        redis = RedisServer(service_dir, **options).start()
        started.append(redis)
        return redis

    yield start
    for redis in started:
        if redis.process is not None and redis.process.poll() is None:
            redis.resume()  # in case a test stopped it
        redis.stop()


async def publish_steadily(publisher, channels, rate, seconds, counter):
    """Publish on each channel in turn, one frame every 1/rate s, without waiting for replies."""
    sent = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name in channels:
            data = next(counter)
            body = {"channel": name, "event": "e", "data": data}
            request_id = publisher.connection.send("publish", body)
            sent.append((name, data, request_id, time.monotonic()))
            await asyncio.sleep(1 / rate)
    return sent


def test_redis_hang_unavailable_is_never_delivered_and_replies_do_not_wait_for_redis(
    own_redis, start_server, make_key, make_channel, uid
):
    redis = own_redis()
    server = start_server(redis, REDIS_TIMEOUT=1, REDIS_CLOCK_SKEW=0.5)
    plain = make_channel(f"news-{uid}").name
    kept = make_channel(f"kept-{uid}", history_size=1000).name
    secret = make_key()

    async def scenario():
        import itertools

        subscriber = await Subscriber(server.ws_url, secret, {plain: False, kept: False}).start()
        publisher = await Publisher(server.ws_url, secret, uid).start()
        replies = {}
        publisher.connection.on_frame = lambda frame: replies.setdefault(
            frame.get("id"), (frame, time.monotonic())
        )
        counter = itertools.count(1)
        before = await publish_steadily(publisher, [plain, kept], 20, 1, counter)
        redis.pause()
        paused_at = time.monotonic()
        during = await publish_steadily(publisher, [plain, kept], 20, 3, counter)
        await asyncio.sleep(max(0, paused_at + 8 - time.monotonic()))
        redis.resume()
        resumed_at = time.monotonic()
        after = await publish_steadily(publisher, [plain, kept], 20, 2, counter)
        for _, _, request_id, _ in before + during + after:
            await publisher.connection.wait(request_id)
        await asyncio.sleep(3)
        await publisher.connection.close()
        await subscriber.connection.close()
        return subscriber, replies, before, during, after, resumed_at

    subscriber, replies, before, during, after, resumed_at = asyncio.run(scenario())
    sent = before + during + after
    codes = {}
    for _, _, request_id, _ in sent:
        frame = replies[request_id][0]
        code = "ok" if frame.get("ok") else frame["err"]
        codes[code] = codes.get(code, 0) + 1
    print(f"\n{len(sent)} publishes: {codes}")
    # Only the two honest answers: never rate_limited, never unknown for a hang.
    assert set(codes) <= {"ok", "unavailable"}, codes
    assert codes.get("unavailable", 0) > 0
    # Every frame sent during the hang is answered while Redis is still stopped: a reply
    # never waits for Redis longer than REDIS_TIMEOUT + REDIS_CLOCK_SKEW, and frames
    # queued behind a waiting one are not made to wait that long each.
    late = [request_id for _, _, request_id, _ in during if replies[request_id][1] >= resumed_at]
    assert late == [], f"{len(late)} of {len(during)} replies came only after Redis resumed"
    for name in (plain, kept):
        ok = [data for n, data, rid, _ in sent if n == name and replies[rid][0].get("ok")]
        refused = [data for n, data, rid, _ in sent if n == name and not replies[rid][0].get("ok")]
        report = delivery_report(ok, refused, subscriber.events[name])
        print(name, {k: v for k, v in report.items() if k != "lost"}, "lost:", len(report["lost"]))
        assert report["refused_delivered"] == []
        assert report["lost"] == [] and report["twice"] == 0 and report["out_of_order"] == 0


def test_redis_hang_does_not_turn_into_rate_limited(own_redis, start_server, make_key, make_channel, uid):
    redis = own_redis()
    # A publisher keeps to 15 frames/s, under the limit of 20; Redis hangs for longer than
    # the burst covers while a frame waits out the 3.5 s timeout.
    server = start_server(redis, REDIS_TIMEOUT=3, REDIS_CLOCK_SKEW=0.5, RATE_LIMIT=20, RATE_BURST=20)
    plain = make_channel(f"news-{uid}").name
    secret = make_key()

    async def scenario():
        import itertools

        publisher = await Publisher(server.ws_url, secret, uid).start()
        replies = {}
        publisher.connection.on_frame = lambda frame: replies.setdefault(frame.get("id"), frame)
        counter = itertools.count(1)
        sent = await publish_steadily(publisher, [plain], 15, 1, counter)
        redis.pause()
        sent += await publish_steadily(publisher, [plain], 15, 8, counter)
        redis.resume()
        sent += await publish_steadily(publisher, [plain], 15, 3, counter)
        for _, _, request_id, _ in sent:
            await publisher.connection.wait(request_id)
        await publisher.connection.close()
        return sent, replies

    sent, replies = asyncio.run(scenario())
    codes = {}
    for _, _, request_id, _ in sent:
        frame = replies[request_id]
        code = "ok" if frame.get("ok") else frame["err"]
        codes[code] = codes.get(code, 0) + 1
    print(f"\n{len(sent)} publishes at 15/s with RATE_LIMIT 20: {codes}")
    assert "rate_limited" not in codes, codes
    assert codes.get("unavailable", 0) > 0 and codes.get("ok", 0) > 0


def test_redis_killed_and_restarted_subscribers_are_told_and_history_recovers_every_acknowledged(
    own_redis, start_server, make_key, make_channel, uid
):
    # Acknowledged writes survive SIGKILL (an append-only file synced on every write).
    redis = own_redis(persistent=True)
    server = start_server(redis, REDIS_TIMEOUT=2, REDIS_CLOCK_SKEW=0.5)
    plain = make_channel(f"news-{uid}").name
    kept = make_channel(f"kept-{uid}", history_size=1000).name
    secret = make_key()

    async def scenario():
        subscriber = await Subscriber(server.ws_url, secret, {plain: False, kept: True}).start()
        publisher = await Publisher(server.ws_url, secret, uid).start()
        data = 0
        started = time.monotonic()
        killed = False
        while time.monotonic() - started < 8:
            if not killed and time.monotonic() - started > 2:
                redis.kill()
                redis.start()  # back at once, on the same port, with its data
                killed = True
            for name in (plain, kept):
                data += 1
                await publisher.publish(name, data)
            await asyncio.sleep(0.05)
        await asyncio.sleep(4)
        await publisher.connection.close()
        await subscriber.connection.close()
        return subscriber, publisher

    subscriber, publisher = asyncio.run(scenario())
    print(f"\npublishes: {len(publisher.outcomes)}, replies: {publisher.counts()}")
    assert {outcome.final for outcome in publisher.outcomes} <= {"ok", "unavailable"}

    history = delivery_report(publisher.acknowledged(kept), publisher.refused(kept), subscriber.events[kept])
    print(
        "history channel:", {k: v for k, v in history.items() if k != "lost"}, "dropped", subscriber.dropped
    )
    # Told at once, then recovered: every acknowledged publication once, in order.
    assert history["missed_notices"] >= 1 and history["recoveries"] and all(history["recoveries"])
    assert history["lost"] == [] and history["twice"] == 0 and history["out_of_order"] == 0
    assert history["refused_delivered"] == []

    plain_report = delivery_report(
        publisher.acknowledged(plain), publisher.refused(plain), subscriber.events[plain]
    )
    print(
        "plain channel:",
        {k: v for k, v in plain_report.items() if k != "lost"},
        "lost:",
        plain_report["lost"],
    )
    # Without history, publications made before the process had subscribed again are
    # lost, but the subscriber is told before anything published after them arrives.
    assert plain_report["missed_notices"] >= 1
    assert (
        plain_report["unexplained"] == [] and plain_report["twice"] == 0 and plain_report["out_of_order"] == 0
    )
    assert plain_report["refused_delivered"] == []


def post_publish(server, secret, body):
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        server.http_url + "/realtime/api/publish",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {secret}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize("history", [False, True], ids=["plain", "history"])
def test_a_retry_with_the_same_idempotency_key_publishes_once_from_every_entry_point(
    servers, redis_layer, connect, make_key, make_channel, uid, history
):
    import realtime

    name = make_channel(f"once-{uid}", history_size=100 if history else 0).name
    secret = make_key()
    # A subscriber on each process: the publications come from the first one.
    readers = [connect(server) for server in servers]
    for reader in readers:
        reader.auth(secret)
        reader.subscribe(name)
    writer = connect(servers[0])
    writer.auth(secret)

    def native(key, data):
        return writer.request(
            "publish", {"channel": name, "event": "e", "data": data, "idempotency_key": key}
        )

    first = native("ws-1", "socket")
    again = native("ws-1", "socket, again")
    status, http_first = post_publish(
        servers[1], secret, {"channel": name, "event": "e", "data": "http", "idempotency_key": "http-1"}
    )
    status_again, http_again = post_publish(
        servers[0],
        secret,
        {"channel": name, "event": "e", "data": "http, again", "idempotency_key": "http-1"},
    )
    python_first = realtime.publish(name, "e", "python", idempotency_key="py-1")
    python_again = realtime.publish(name, "e", "python, again", idempotency_key="py-1")
    other_key = native("ws-2", "another key")

    assert first["ok"] and again["ok"] and other_key["ok"]
    assert (status, status_again) == (200, 200)
    if history:
        assert again["offset"] == first["offset"] and again["epoch"] == first["epoch"]
        assert http_again == http_first
        assert (python_again.offset, python_again.epoch) == (python_first.offset, python_first.epoch)
        assert [first["offset"], http_first["offset"], python_first.offset, other_key["offset"]] == [
            1,
            2,
            3,
            4,
        ]
    for reader in readers:
        received = [reader.next_message()["message"]["data"] for _ in range(4)]
        assert received == ["socket", "http", "python", "another key"]
        assert reader.request("ping")["ok"]
        assert not [frame for frame in reader.pending if "message" in frame]
