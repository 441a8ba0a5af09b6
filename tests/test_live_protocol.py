"""The native protocol, end to end: real daphne processes, real Redis, real sockets."""

import pytest
from websockets.exceptions import ConnectionClosed

from tests.matchers import SERVER_TIME

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("redis_layer")]


@pytest.fixture
def news(make_channel, uid):
    return make_channel(f"news-{uid}")


def test_subscriber_receives_each_publication_as_one_message_frame(server, connect, make_key, news):
    writer, reader = connect(server), connect(server)
    assert writer.auth(make_key(access="read-write")) == {"ok": True, "id": 1}
    assert reader.auth(make_key(access="read-only")) == {"ok": True, "id": 1}
    assert reader.subscribe(news.name) == {"ok": True, "id": 2}

    assert writer.publish(news.name, "headline", {"text": "hi", "n": [1, 2]})["ok"] is True

    assert reader.next_message() == {
        "message": {
            "channel": news.name,
            "event": "headline",
            "data": {"text": "hi", "n": [1, 2]},
            "time": SERVER_TIME,
        }
    }


def test_reply_echoes_string_and_integer_ids(server, connect, make_key, news):
    client = connect(server)
    client.send({"auth": {"secret": make_key()}, "id": "login-1"})
    assert client.recv() == {"ok": True, "id": "login-1"}
    client.send({"subscribe": {"channel": news.name}, "id": 42})
    assert client.recv() == {"ok": True, "id": 42}
    client.send({"subscribe": {"channel": news.name}})
    assert client.recv() == {"ok": True}


def test_publication_on_one_process_reaches_subscribers_on_the_other(servers, connect, make_key, news):
    first, second = servers
    reader = connect(first)
    reader.auth(make_key(access="read-only"))
    reader.subscribe(news.name)
    writer = connect(second)
    writer.auth(make_key())

    writer.publish(news.name, "e", 1)

    assert reader.next_message()["message"]["data"] == 1


def test_publications_arrive_in_publish_order_across_processes(servers, connect, make_key, news):
    first, second = servers
    readers = [connect(first), connect(second)]
    for reader in readers:
        reader.auth(make_key(access="read-only"))
        reader.subscribe(news.name)
    writer = connect(second)
    writer.auth(make_key())

    for n in range(200):
        writer.send({"publish": {"channel": news.name, "event": "n", "data": n}})

    for reader in readers:
        assert [reader.next_message()["message"]["data"] for _ in range(200)] == list(range(200))


def test_publisher_subscribed_to_its_channel_receives_its_own_message(server, connect, make_key, news):
    client = connect(server)
    client.auth(make_key())
    client.subscribe(news.name)
    assert client.publish(news.name, "echo", None)["ok"] is True
    assert client.next_message() == {
        "message": {"channel": news.name, "event": "echo", "data": None, "time": SERVER_TIME}
    }


def test_read_only_key_cannot_publish(server, connect, make_key, news):
    client = connect(server)
    client.auth(make_key(access="read-only"))
    assert client.publish(news.name, "e", 1)["err"] == "access_denied"


def test_unauthenticated_client_can_neither_subscribe_nor_publish(server, connect, news):
    client = connect(server)
    assert client.subscribe(news.name)["err"] == "access_denied"
    assert client.publish(news.name, "e", 1)["err"] == "access_denied"


def test_anonymous_client_may_read_a_channel_open_to_anonymous_readers(
    server, connect, make_key, make_channel, uid
):
    public = make_channel(f"public-{uid}", anonymous_read=True)
    anonymous, writer = connect(server), connect(server)
    assert anonymous.subscribe(public.name)["ok"] is True
    assert anonymous.publish(public.name, "e", 1)["err"] == "access_denied"
    writer.auth(make_key())
    writer.publish(public.name, "e", 2)
    assert anonymous.next_message()["message"]["data"] == 2


def test_anonymous_client_learns_nothing_about_unknown_channels(server, connect, uid):
    client = connect(server)
    assert client.subscribe(f"nothing-{uid}")["err"] == "access_denied"


def test_unknown_secret_is_invalid_credentials(server, connect):
    client = connect(server)
    assert client.auth("rt_not-a-real-secret")["err"] == "invalid_credentials"


def test_expired_key_is_invalid_credentials(server, connect, make_key):
    from datetime import timedelta

    from django.utils import timezone

    client = connect(server)
    secret = make_key(expires_at=timezone.now() - timedelta(seconds=1))
    assert client.auth(secret)["err"] == "invalid_credentials"


def test_asking_read_write_with_a_read_only_key_is_invalid_credentials(server, connect, make_key):
    client = connect(server)
    assert client.auth(make_key(access="read-only"), access="read-write")["err"] == "invalid_credentials"


def test_read_write_key_can_open_a_read_only_session(server, connect, make_key, news):
    client = connect(server)
    assert client.auth(make_key(), access="read-only")["ok"] is True
    assert client.subscribe(news.name)["ok"] is True
    assert client.publish(news.name, "e", 1)["err"] == "access_denied"


def test_second_auth_needs_a_logout_first(server, connect, make_key):
    client = connect(server)
    secret = make_key()
    client.auth(secret)
    assert client.auth(secret)["err"] == "already_authenticated"
    client.logout()
    assert client.auth(secret)["ok"] is True


def test_scoped_key_works_on_its_channels_and_their_subchannels_only(
    server, connect, make_key, make_channel, uid
):
    rooms = make_channel(f"rooms-{uid}", include_subchannels=True)
    other = make_channel(f"other-{uid}")
    client = connect(server)
    client.auth(make_key(channels=[rooms]))
    assert client.subscribe(f"{rooms.name}/42")["ok"] is True
    assert client.publish(f"{rooms.name}/42/typing", "e", 1)["ok"] is True
    assert client.subscribe(other.name)["err"] == "access_denied"
    assert client.publish(other.name, "e", 1)["err"] == "access_denied"


def test_channel_without_subchannel_option_does_not_cover_names_below_it(server, connect, make_key, news):
    client = connect(server)
    client.auth(make_key())
    assert client.subscribe(f"{news.name}/sub")["err"] == "invalid_channel"


@pytest.mark.parametrize(
    "name", ["", "a//b", "/lead", "trail/", "sp ace", "meta/x", "wild/*/x", "x" * 201, 7]
)
def test_badly_formed_channel_names_are_invalid_channel_name(server, connect, make_key, name):
    client = connect(server)
    client.auth(make_key())
    reply = client.subscribe(name)
    assert reply["err"] == ("invalid_data" if name == 7 else "invalid_channel_name")


def test_unknown_and_inactive_channels_are_invalid_channel(server, connect, make_key, make_channel, uid):
    make_channel(f"closed-{uid}", is_active=False)
    client = connect(server)
    client.auth(make_key())
    assert client.subscribe(f"unknown-{uid}")["err"] == "invalid_channel"
    assert client.subscribe(f"closed-{uid}")["err"] == "invalid_channel"
    assert client.publish(f"closed-{uid}", "e", 1)["err"] == "invalid_channel"


def test_unsubscribe_stops_delivery(server, connect, make_key, news, make_channel, uid):
    marker = make_channel(f"marker-{uid}")
    reader, writer = connect(server), connect(server)
    reader.auth(make_key())
    writer.auth(make_key())
    reader.subscribe(news.name)
    reader.subscribe(marker.name)
    assert reader.unsubscribe(news.name) == {"ok": True, "id": 4}
    writer.publish(news.name, "e", "dropped")
    writer.publish(marker.name, "e", "kept")
    assert reader.next_message()["message"]["data"] == "kept"


def test_unsubscribing_from_a_channel_never_subscribed_is_ok(server, connect, make_key, uid):
    client = connect(server)
    client.auth(make_key())
    assert client.unsubscribe(f"never-{uid}")["ok"] is True


def test_logout_drops_credentials_and_subscriptions_but_keeps_the_socket(server, connect, make_key, news):
    reader, writer = connect(server), connect(server)
    reader.auth(make_key())
    writer.auth(make_key())
    reader.subscribe(news.name)
    assert reader.logout()["ok"] is True
    assert reader.publish(news.name, "e", 1)["err"] == "access_denied"
    writer.publish(news.name, "e", "after logout")
    with pytest.raises(TimeoutError):
        reader.next_message(timeout=0.5)
    assert reader.auth(make_key())["ok"] is True


def test_disconnect_replies_ok_then_closes_normally(server, connect):
    client = connect(server)
    assert client.disconnect()["ok"] is True
    with pytest.raises(ConnectionClosed):
        client.recv(timeout=5)
    assert client.close_code == 1000


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1, 2]",
        '"just a string"',
        "{}",
        '{"explode": true}',
        '{"subscribe": {"channel": "a"}, "publish": {}}',
        '{"subscribe": "news"}',
        '{"publish": {"channel": "news", "event": "e"}}',
        '{"publish": {"channel": "news", "event": 5, "data": 1}}',
        '{"auth": {"secret": 123}}',
        '{"auth": {"secret": "x", "access": "admin"}}',
        '{"logout": "yes"}',
        '{"subscribe": {"channel": "news"}, "id": true}',
        '{"subscribe": {"channel": "news"}, "id": NaN}',
    ],
)
def test_malformed_frames_get_invalid_data_and_the_connection_keeps_working(server, connect, frame):
    client = connect(server)
    client.send_raw(frame)
    assert client.recv()["err"] == "invalid_data"
    assert client.logout()["ok"] is True


def test_binary_frames_get_invalid_data_not_a_crash(server, connect):
    client = connect(server)
    client.send_raw(b"\x00\xff binary")
    assert client.recv()["err"] == "invalid_data"
    assert client.logout()["ok"] is True


def test_errors_for_frames_with_a_readable_id_carry_it(server, connect):
    client = connect(server)
    client.send({"explode": True, "id": "x1"})
    assert client.recv() == {"err": "invalid_data", "detail": "unknown command 'explode'", "id": "x1"}


def test_lone_surrogates_are_refused_and_subscribers_keep_their_connection(server, connect, make_key, news):
    reader, writer = connect(server), connect(server)
    reader.auth(make_key())
    reader.subscribe(news.name)
    writer.auth(make_key())
    lone = '{"publish": {"channel": "CHANNEL", "event": "e", "data": "\\ud800"}, "id": 1}'
    writer.send_raw(lone.replace("CHANNEL", news.name))
    assert writer.recv()["err"] == "invalid_data"
    writer.send_raw('{"logout": true, "id": "\\udfff"}')
    assert writer.recv()["err"] == "invalid_data"
    writer.publish(news.name, "e", "fine")
    assert reader.next_message()["message"]["data"] == "fine"


def test_logging_in_keeps_access_to_channels_open_to_anonymous_readers(
    server, connect, make_key, make_channel, uid
):
    public = make_channel(f"public-{uid}", anonymous_read=True)
    scoped_elsewhere = make_channel(f"private-{uid}")
    client = connect(server)
    client.auth(make_key(channels=[scoped_elsewhere]))
    assert client.subscribe(public.name)["ok"] is True
    assert client.publish(public.name, "e", 1)["err"] == "access_denied"
