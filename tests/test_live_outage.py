"""A server process that meets a dead Redis recovers once Redis is back."""

import json
import time
import urllib.error
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed

import realtime
from realtime.errors import Unavailable
from tests.services import AsgiServer, RedisServer

pytestmark = [pytest.mark.live]


@pytest.fixture
def lonely_redis(service_dir):
    redis = RedisServer(service_dir).start()
    yield redis
    redis.stop()


@pytest.fixture
def server_on_lonely_redis(service_dir, lonely_redis, test_database):
    server = AsgiServer(service_dir, database=test_database, redis_url=lonely_redis.url).start()
    yield server
    server.stop()


def test_connection_while_redis_is_down_is_closed_with_4005_and_the_process_recovers(
    lonely_redis, server_on_lonely_redis, connect
):
    lonely_redis.stop()
    client = connect(server_on_lonely_redis, timeout=15)
    with pytest.raises(ConnectionClosed):
        client.recv(timeout=15)
    assert client.close_code == 4005

    lonely_redis.start()
    client = connect(server_on_lonely_redis)
    assert client.request("ping")["ok"] is True


def test_publications_resume_after_redis_restarts_and_subscribers_are_told_of_the_gap(
    lonely_redis, server_on_lonely_redis, connect, make_key, make_channel, uid
):
    news = make_channel(f"news-{uid}")
    reader, writer = connect(server_on_lonely_redis), connect(server_on_lonely_redis)
    reader.auth(make_key(access="read-only"))
    writer.auth(make_key())
    reader.subscribe(news.name)
    writer.publish(news.name, "e", "before")
    assert reader.next_message()["message"]["data"] == "before"

    lonely_redis.stop()
    assert writer.publish(news.name, "e", "during")["err"] == "unavailable"
    lonely_redis.start()

    assert reader.next_message(timeout=15) == {
        "missed": {"channel": news.name, "reason": "broker_unavailable"}
    }
    assert writer.publish(news.name, "e", "after")["ok"] is True
    assert reader.next_message(timeout=10)["message"]["data"] == "after"


@pytest.mark.parametrize("durable", [True, False], ids=["durable", "redis-only"])
def test_after_an_outage_a_subscriber_recovers_from_history_where_the_channel_kept_it(
    lonely_redis, server_on_lonely_redis, connect, make_key, make_channel, uid, durable
):
    name = make_channel(f"kept-{uid}", history_size=10, history_durable=durable).name
    reader, writer = connect(server_on_lonely_redis), connect(server_on_lonely_redis)
    reader.auth(make_key(access="read-only"))
    writer.auth(make_key())
    reader.subscribe(name)
    writer.publish(name, "e", "before")
    seen = reader.next_message()["message"]

    lonely_redis.stop()  # this Redis keeps nothing on disk: its data is gone
    lonely_redis.start()
    assert reader.next_message(timeout=15) == {"missed": {"channel": name, "reason": "broker_unavailable"}}
    reader.unsubscribe(name)
    reply = reader.subscribe(name, since={"offset": seen["offset"], "epoch": seen["epoch"]})

    # A durable channel comes back from the database with its epoch and offsets; a channel
    # kept only in Redis starts a new epoch, and the subscriber is told it must reload.
    assert reply["recovered"] is durable
    assert (reply["epoch"] == seen["epoch"]) is durable
    after = writer.publish(name, "e", "after")
    assert after["offset"] == (2 if durable else 1)
    assert reader.next_message(timeout=10)["message"]["data"] == "after"


def post_publish(server, secret, body):
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


@pytest.fixture
def layer_on_lonely_redis(settings, lonely_redis):
    """Make this test process publish through the Redis that the test will stop."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [{"address": lonely_redis.url, "socket_connect_timeout": 2}]},
        }
    }


@pytest.mark.parametrize("history", [False, True], ids=["plain", "history"])
def test_http_publish_during_an_outage_answers_503_unavailable(
    lonely_redis, server_on_lonely_redis, make_key, make_channel, uid, history
):
    name = make_channel(f"news-{uid}", history_size=10 if history else 0).name
    secret = make_key()
    assert post_publish(server_on_lonely_redis, secret, {"channel": name, "event": "e", "data": 1})[0] == 200

    lonely_redis.stop()
    status, body = post_publish(server_on_lonely_redis, secret, {"channel": name, "event": "e", "data": 2})

    assert status == 503 and body["err"] == "unavailable", body


@pytest.mark.parametrize("history", [False, True], ids=["plain", "history"])
def test_publish_from_python_during_an_outage_raises_unavailable(
    lonely_redis, layer_on_lonely_redis, make_channel, uid, history
):
    name = make_channel(f"news-{uid}", history_size=10 if history else 0).name
    realtime.publish(name, "e", "before")

    lonely_redis.stop()

    with pytest.raises(Unavailable):
        realtime.publish(name, "e", "during")


# Each store answers unavailable when Redis is gone: history, presence (and publish above).


def test_history_during_an_outage_answers_unavailable(
    lonely_redis, server_on_lonely_redis, connect, make_key, make_channel, uid
):
    name = make_channel(f"kept-{uid}", history_size=10).name
    client = connect(server_on_lonely_redis, timeout=15)
    client.auth(make_key())
    assert client.publish(name, "e", 1)["ok"] is True

    lonely_redis.stop()

    reply = client.history(name)
    assert reply["err"] == "unavailable", reply
    assert "history" in reply["detail"]


def test_presence_during_an_outage_answers_unavailable(
    lonely_redis, server_on_lonely_redis, connect, make_key, make_channel, uid
):
    name = make_channel(f"room-{uid}", presence=True).name
    first = connect(server_on_lonely_redis, timeout=15)
    second = connect(server_on_lonely_redis, timeout=15)
    first.auth(make_key())
    second.auth(make_key())
    assert first.subscribe(name)["ok"] is True  # this process now listens on the channel

    lonely_redis.stop()

    # The subscription itself needs nothing new from Redis; recording presence does.
    reply = second.subscribe(name)
    assert reply["err"] == "unavailable", reply
    assert "presence" in reply["detail"]
    assert first.presence(name)["err"] == "unavailable"
    assert second.request("ping")["ok"] is True


def test_history_while_redis_hangs_answers_unavailable_once_the_socket_times_out(
    lonely_redis, server_on_lonely_redis, connect, make_key, make_channel, uid
):
    name = make_channel(f"kept-{uid}", history_size=10).name
    client = connect(server_on_lonely_redis, timeout=20)
    client.auth(make_key())
    assert client.publish(name, "e", 1)["ok"] is True

    lonely_redis.pause()
    try:
        # No answer within REDIS_TIMEOUT (5 s by default).
        reply = client.history(name)
        # Meanwhile, requests fail at once instead of each waiting as long.
        assert client.history(name)["err"] == "unavailable"
    finally:
        lonely_redis.resume()

    assert reply["err"] == "unavailable", reply
    # Back as soon as Redis answers the server's PING again.
    for _ in range(50):
        again = client.history(name)
        if again.get("ok"):
            break
        time.sleep(0.1)
    assert again["ok"] is True, again
