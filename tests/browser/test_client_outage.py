"""realtime.js in real Chromium while Redis comes and goes: a recovery that Redis refuses
(``unavailable``) is tried again, so nothing acknowledged is lost."""

import pytest

from tests.browser.test_client import FAST, start_client
from tests.services import AsgiServer, RedisServer

pytestmark = [pytest.mark.live]


@pytest.fixture
def flaky_redis(service_dir):
    redis = RedisServer(service_dir, persistent=True).start()
    yield redis
    redis.stop()


@pytest.fixture
def server_on_flaky_redis(service_dir, test_database, flaky_redis):
    server = AsgiServer(service_dir, database=test_database, redis_url=flaky_redis.url).start()
    yield server
    server.stop()


def test_a_recovery_refused_while_redis_is_down_is_tried_again_and_replays_what_was_missed(
    client_page, flaky_redis, server_on_flaky_redis, connect, make_key, make_channel, uid
):
    room = make_channel(f"kept-{uid}", history_size=100)
    secret = make_key()
    server = server_on_flaky_redis
    page = client_page(server)
    start_client(page, server.ws_url, {"secret": secret, **FAST}, [room.name])
    publisher = connect(server, timeout=15)
    publisher.auth(secret)
    assert publisher.publish(room.name, "n", 1)["ok"]
    page.wait_for_function("received.length === 1")

    flaky_redis.stop()
    # The server says publications may have been lost; the client unsubscribes and
    # subscribes again with `since`, which Redis, being down, cannot serve.
    page.evaluate(
        """(channel) => T.sockets.at(-1).onmessage(
            {data: JSON.stringify({missed: {channel, reason: "broker_unavailable"}})})""",
        room.name,
    )
    page.wait_for_function(
        "T.sockets.at(-1).received.some((text) => JSON.parse(text).err === 'unavailable')", timeout=15000
    )
    flaky_redis.start()  # with what it acknowledged: an append-only file synced on every write
    for n in range(2, 5):
        for _ in range(50):
            if publisher.publish(room.name, "n", n).get("ok"):
                break
            page.wait_for_timeout(100)
    page.wait_for_function("received.length === 4", timeout=15000)

    assert [m["data"] for m in page.evaluate("received")] == [1, 2, 3, 4]
    assert page.evaluate("subs[0].active") is True
    assert page.evaluate("log.errors") == []
    assert page.evaluate("log.notices") == []


def test_a_publish_retried_with_the_same_idempotency_key_is_delivered_once(
    client_page, servers, connect, make_key, make_channel, uid
):
    room = make_channel(f"once-{uid}", history_size=10)
    secret = make_key()
    reader = connect(servers[1])
    reader.auth(secret)
    reader.subscribe(room.name)
    page = client_page(servers[0])
    start_client(page, servers[0].ws_url, {"secret": secret, **FAST})
    replies = page.evaluate(
        """async (channel) => [
            await client.publish(channel, "e", "first", {idempotencyKey: "k-1"}),
            await client.publish(channel, "e", "again", {idempotencyKey: "k-1"}),
            await client.publish(channel, "e", "other"),
        ]""",
        room.name,
    )
    assert [reply["offset"] for reply in replies] == [1, 1, 2]
    assert [reader.next_message()["message"]["data"] for _ in range(2)] == ["first", "other"]
    reader.request("ping")
    assert not [frame for frame in reader.pending if "message" in frame]
