"""Bayeux on real server processes, at the wire level (docs/bayeux.md).

The same channels, keys and tokens as the native protocol. The real client libraries
(Faye, CometD, aiocometd) are driven in tests/test_live_bayeux_clients.py.
"""

import json
import threading
import time
import urllib.parse

import pytest

from realtime.models import AccessKey
from tests.bayeux.wire import LongPolling, WebSocket, bayeux_url, post, request
from tests.matchers import SERVER_TIME

pytestmark = [pytest.mark.live]


@pytest.fixture
def sockets():
    opened = []

    def open_socket(server, **kwargs):
        opened.append(WebSocket(server, **kwargs))
        return opened[-1]

    yield open_socket
    for socket in opened:
        socket.close()


def eventually(check, timeout=8.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


# Handshake ---------------------------------------------------------------------------


def test_a_handshake_with_a_key_opens_a_session_with_an_unguessable_client_id(server, make_key):
    client = LongPolling(server)
    reply = client.handshake({"secret": make_key()})
    assert reply["successful"] is True
    assert reply["channel"] == "/meta/handshake"
    assert reply["version"] == "1.0"
    assert reply["supportedConnectionTypes"] == ["websocket", "long-polling", "callback-polling"]
    assert reply["advice"] == {"reconnect": "retry", "interval": 0, "timeout": 5000}
    assert len(reply["clientId"]) >= 32
    assert reply["clientId"] != LongPolling(server).handshake({"secret": make_key()})["clientId"]


def test_a_handshake_with_a_bad_secret_is_denied_and_told_not_to_retry(server, make_key):
    reply = LongPolling(server).handshake({"secret": "rt_nope"})
    assert reply["successful"] is False
    assert reply["error"] == "403:invalid_credentials:handshake_denied"
    assert reply["advice"] == {"reconnect": "none"}


def test_a_revoked_key_and_read_write_asked_of_a_read_only_key_are_denied(server, make_key):
    secret = make_key(name="gone")
    AccessKey.objects.filter(name="gone").update(is_active=False)
    assert LongPolling(server).handshake({"secret": secret})["successful"] is False
    read_only = make_key(access="read-only")
    reply = LongPolling(server).handshake({"secret": read_only, "access": "read-write"})
    assert reply["error"] == "403:invalid_credentials:handshake_denied"


def test_an_anonymous_handshake_is_allowed_only_when_some_channel_may_be_read_anonymously(
    server, make_channel, uid
):
    make_channel(f"private-{uid}")
    denied = eventually(lambda: LongPolling(server).handshake()["successful"] is False)
    assert denied, "anonymous handshakes are refused while no channel is open to anonymous readers"
    assert LongPolling(server).handshake()["error"] == "403:authentication_required:handshake_denied"

    open_channel = make_channel(f"public-{uid}", anonymous_read=True)
    client = LongPolling(server)
    assert eventually(lambda: client.handshake()["successful"]), (
        "the new channel is announced to every process"
    )
    assert client.subscribe(f"/{open_channel.name}")["successful"] is True
    refused = client.subscribe(f"/private-{uid}")
    assert refused["error"] == f"403:/private-{uid}:access_denied"
    assert client.publish(f"/{open_channel.name}", "hi")["error"] == f"403:/{open_channel.name}:access_denied"


def test_a_handshake_offering_no_connection_type_of_ours_is_refused(server, make_key):
    reply = LongPolling(server).handshake({"secret": make_key()}, supportedConnectionTypes=["iframe"])
    assert reply["error"] == "301:websocket%2Clong-polling%2Ccallback-polling:connection_types_unsupported"


# Long-polling ------------------------------------------------------------------------


def test_the_first_connect_is_answered_at_once_and_later_ones_are_held(server, make_key):
    client = LongPolling(server)
    client.handshake({"secret": make_key()})
    started = time.monotonic()
    [first] = client.connect()
    assert first == {
        "channel": "/meta/connect",
        "successful": True,
        "id": "2",
        "advice": {"reconnect": "retry", "interval": 0, "timeout": 5000},
    }
    assert time.monotonic() - started < 2
    [second] = client.connect(timeout_ms=1000)
    assert second["successful"] is True
    assert time.monotonic() - started >= 1


def test_a_held_connect_returns_as_soon_as_a_publication_arrives_with_it(server, make_key, make_channel, uid):
    room = make_channel(f"room-{uid}")
    listener, talker = LongPolling(server), LongPolling(server)
    listener.handshake({"secret": make_key()})
    talker.handshake({"secret": make_key()})
    listener.connect()
    assert listener.subscribe(f"/{room.name}") == {
        "channel": "/meta/subscribe",
        "successful": True,
        "id": "3",
        "subscription": f"/{room.name}",
    }
    replies = []
    held = threading.Thread(target=lambda: replies.extend(listener.connect()))
    held.start()
    time.sleep(0.5)
    started = time.monotonic()
    ack = talker.publish(f"/{room.name}", {"text": "hi"})
    held.join(10)
    assert ack == {"channel": f"/{room.name}", "successful": True, "id": "2"}  # no data in an ack
    assert time.monotonic() - started < 3
    delivery, connect_reply = replies
    assert delivery == {
        "channel": f"/{room.name}",
        "data": {"text": "hi"},
        "ext": {"realtime": {"event": "message", "time": SERVER_TIME}},
    }
    assert connect_reply["channel"] == "/meta/connect" and connect_reply["successful"] is True


def test_a_new_connect_completes_the_held_one_at_once(server, make_key):
    client = LongPolling(server)
    client.handshake({"secret": make_key()})
    client.connect()
    replies = []
    held = threading.Thread(target=lambda: replies.extend(client.connect()))
    held.start()
    time.sleep(0.5)
    started = time.monotonic()
    client.connect(timeout_ms=0)
    held.join(5)
    assert time.monotonic() - started < 2
    assert [reply["channel"] for reply in replies] == ["/meta/connect"]


def test_an_unknown_client_is_told_to_handshake_again(server):
    client = LongPolling(server)
    client.client_id = "not-a-session"
    for reply in (client.connect()[0], client.subscribe("/a"), client.publish("/a", 1)):
        assert reply["successful"] is False
        assert reply["error"] == "402::session_unknown"
        assert reply["advice"] == {"reconnect": "handshake", "interval": 0}


def test_a_session_nobody_polls_is_forgotten_after_the_max_interval(server, make_key):
    client = LongPolling(server)
    client.handshake({"secret": make_key()})
    client.connect()
    time.sleep(4.5)  # BAYEUX_MAX_INTERVAL is 3 s on the test servers
    assert client.connect()[0]["error"] == "402::session_unknown"


def test_disconnect_ends_the_session(server, make_key):
    client = LongPolling(server)
    client.handshake({"secret": make_key()})
    assert client.disconnect() == {"channel": "/meta/disconnect", "successful": True, "id": "2"}
    assert client.connect()[0]["error"] == "402::session_unknown"


def test_cometd_url_suffixes_reach_the_same_endpoint(server, make_key):
    client = LongPolling(server, "/handshake")
    assert client.handshake({"secret": make_key()})["successful"] is True
    client.url = bayeux_url(server, "/connect")
    assert client.connect()[0]["successful"] is True
    client.url = bayeux_url(server, "/")
    assert client.disconnect()["successful"] is True


# Subscribing and publishing ----------------------------------------------------------


def test_subscriptions_are_echoed_as_sent_and_checked_like_native_ones(server, make_key, make_channel, uid):
    room = make_channel(f"room-{uid}", include_subchannels=True)
    make_channel(f"other-{uid}")
    client = LongPolling(server)
    client.handshake({"secret": make_key(channels=[room])})
    both = [f"/{room.name}/1", f"/{room.name}/*"]
    assert client.subscribe(both)["subscription"] == both
    assert client.subscribe(f"/other-{uid}")["error"] == f"403:/other-{uid}:access_denied"
    assert client.subscribe(f"/nowhere-{uid}")["error"] == f"404:/nowhere-{uid}:invalid_channel"
    assert client.subscribe("/a b")["error"] == "405:/a b:channel_invalid"
    assert client.subscribe("/meta/connect")["error"] == "403:/meta/connect:subscribe_failed"
    assert client.subscribe("/service/echo")["successful"] is True  # a no-op, as in CometD
    assert client.subscribe([])["error"] == "403::subscription_missing"
    assert client.unsubscribe(both) == {
        "channel": "/meta/unsubscribe",
        "successful": True,
        "id": "9",
        "subscription": both,
    }


def test_publishing_is_checked_like_native_publishing(server, make_key, make_channel, uid):
    room = make_channel(f"room-{uid}")
    writer, reader = LongPolling(server), LongPolling(server)
    writer.handshake({"secret": make_key()})
    reader.handshake({"secret": make_key(access="read-only")})
    assert reader.publish(f"/{room.name}", 1)["error"] == f"403:/{room.name}:access_denied"
    assert writer.publish(f"/{room.name}/*", 1)["error"] == f"405:/{room.name}/*:channel_invalid"
    assert writer.publish(f"/nowhere-{uid}", 1)["error"] == f"404:/nowhere-{uid}:invalid_channel"
    assert writer.send({"channel": f"/{room.name}"})[0]["error"].endswith(":invalid_data")
    assert writer.publish("/meta/nothing", 1)["error"] == "404:/meta/nothing:unknown_channel"
    huge = "x" * 70_000
    status, replies = post(bayeux_url(server), json.dumps([{"channel": f"/{room.name}", "data": huge}]))
    assert status == 413 and replies[0]["error"] == "413:65536:message_too_large"


def test_a_publication_matching_several_subscriptions_is_delivered_once(
    server, sockets, make_key, make_channel, uid
):
    make_channel(f"tree-{uid}", include_subchannels=True)
    client = sockets(server)
    client.handshake({"secret": make_key()})
    for subscription in (f"/tree-{uid}/a/b", f"/tree-{uid}/a/*", f"/tree-{uid}/**", "/**"):
        assert client.subscribe(subscription)["successful"] is True
    client.publish(f"/tree-{uid}/a/b", "once")
    client.publish(f"/tree-{uid}/a/c", "twice")
    seen = [client.next_delivery()["data"], client.next_delivery()["data"]]
    assert seen == ["once", "twice"]
    with pytest.raises(TimeoutError):
        client.next_delivery(timeout=1)


def test_deliveries_carry_no_publisher_id_or_client_id(server, sockets, make_key, make_channel, uid):
    room = make_channel(f"room-{uid}")
    client = sockets(server)
    client.handshake({"secret": make_key()})
    client.subscribe(f"/{room.name}")
    client.publish(f"/{room.name}", [1, 2], ext={"realtime": {"event": "numbers"}})
    assert client.next_delivery() == {
        "channel": f"/{room.name}",
        "data": [1, 2],
        "ext": {"realtime": {"event": "numbers", "time": SERVER_TIME}},
    }


def test_native_and_bayeux_clients_talk_to_each_other_across_two_processes(
    servers, connect, sockets, make_key, make_channel, uid
):
    room = make_channel(f"room-{uid}")
    native = connect(servers[0])
    native.auth(make_key())
    native.subscribe(room.name)
    bayeux = sockets(servers[1])
    bayeux.handshake({"secret": make_key()})
    bayeux.subscribe(f"/{room.name}")

    assert bayeux.publish(f"/{room.name}", {"from": "bayeux"}, ext={"realtime": {"event": "chat"}})[
        "successful"
    ]
    assert native.next_message() == {
        "message": {"channel": room.name, "event": "chat", "data": {"from": "bayeux"}, "time": SERVER_TIME}
    }
    assert bayeux.next_delivery()["data"] == {"from": "bayeux"}  # its own, as it is subscribed

    native.publish(room.name, "news", {"from": "native"})
    assert bayeux.next_delivery() == {
        "channel": f"/{room.name}",
        "data": {"from": "native"},
        "ext": {"realtime": {"event": "news", "time": SERVER_TIME}},
    }


def test_a_token_opens_a_session_and_its_user_is_attached_to_what_it_publishes(
    server, connect, sockets, make_key, make_channel, uid, django_user_model
):
    from realtime import tokens

    room = make_channel(f"room-{uid}")
    user = django_user_model.objects.create_user(f"ann-{uid}", password="x")
    bayeux = sockets(server)
    assert bayeux.handshake({"token": tokens.issue_token(user, "read-write", [room.name])[0]})["successful"]
    native = connect(server)
    native.auth(make_key(access="read-only"))
    native.subscribe(room.name)
    bayeux.subscribe(f"/{room.name}")
    # The client cannot forge who it is: the server sets the user.
    bayeux.publish(f"/{room.name}", "hello", ext={"realtime": {"event": "chat", "user": {"id": 0}}})
    me = {"id": user.pk, "name": user.get_username()}
    assert bayeux.next_delivery()["ext"]["realtime"] == {"event": "chat", "user": me, "time": SERVER_TIME}
    assert native.next_message()["message"]["user"] == me
    expired, _ = tokens.issue_token(user, ttl=-1)
    refused = WebSocket(server)
    try:
        assert refused.handshake({"token": expired})["error"] == "403:invalid_credentials:handshake_denied"
    finally:
        refused.close()


# Service channels --------------------------------------------------------------------


def test_a_service_handler_answers_the_sender_alone(server, sockets, make_key, uid):
    caller, bystander = sockets(server), sockets(server)
    caller.handshake({"secret": make_key(name=f"caller-{uid}")})
    bystander.handshake({"secret": make_key()})
    assert bystander.subscribe("/service/**")["successful"] is True
    reply = caller.publish("/service/echo", {"q": 1})
    assert reply == {
        "channel": "/service/echo",
        "successful": True,
        "id": "4",  # after the handshake and two connects
        "data": {"echo": {"q": 1}, "user": None},
    }
    # and an acknowledgement without data, which CometD's WebSocket transport waits for
    assert list(caller.pending) == [{"channel": "/service/echo", "successful": True, "id": "4"}]
    with pytest.raises(TimeoutError):
        bystander.next_delivery(timeout=1)


def test_an_async_service_handler_sees_the_session_and_may_refuse(server, make_key, make_channel, uid):
    client = LongPolling(server)
    client.handshake({"secret": make_key(access="read-only")})
    data = client.send({"channel": "/service/whoami", "data": None})[0]["data"]
    assert data["access"] == "read-only" and len(data["client"]) == 32
    make_channel(f"open-{uid}", anonymous_read=True)
    anonymous = LongPolling(server)
    assert eventually(lambda: anonymous.handshake()["successful"])
    assert anonymous.publish("/service/whoami", None)["error"] == "403:/service/whoami:access_denied"


def test_a_service_channel_without_a_handler_acknowledges_and_broadcasts_nothing(server, make_key):
    client = LongPolling(server)
    client.handshake({"secret": make_key()})
    assert client.publish("/service/nobody", 1) == {
        "channel": "/service/nobody",
        "successful": True,
        "id": "2",
    }


# HTTP transports ---------------------------------------------------------------------


def jsonp(server, messages, callback="cb"):
    query = urllib.parse.urlencode({"message": json.dumps(messages), "jsonp": callback})
    return request(f"{bayeux_url(server)}?{query}")


def test_callback_polling_wraps_replies_in_the_named_callback(server, make_key):
    handshake = {
        "channel": "/meta/handshake",
        "version": "1.0",
        "id": "1",
        "ext": {"auth": {"secret": make_key()}},
    }
    status, headers, body = jsonp(server, [handshake], "jQuery_123.done")
    assert status == 200
    assert headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert headers["X-Content-Type-Options"] == "nosniff"
    text = body.decode()
    assert text.startswith("/**/jQuery_123.done([") and text.endswith("]);")
    [reply] = json.loads(text[len("/**/jQuery_123.done(") : -2])
    assert reply["successful"] is True and reply["id"] == "1"


@pytest.mark.parametrize("callback", ["alert(1)", "a-b", "1x", "x" * 65, "a..b"])
def test_a_callback_name_that_is_no_javascript_identifier_is_refused(server, callback):
    status, _, body = jsonp(server, [{"channel": "/meta/handshake"}], callback)
    assert status == 400
    assert callback.encode() not in body


def test_faye_style_form_posts_carry_messages_in_message_parameters(server, make_key):
    handshake = {
        "channel": "/meta/handshake",
        "version": "1.0",
        "id": "1",
        "ext": {"auth": {"secret": make_key()}},
    }
    body = urllib.parse.urlencode({"message": json.dumps(handshake)}).encode()
    status, headers, text = request(
        bayeux_url(server),
        "POST",
        {"Content-Type": "application/x-www-form-urlencoded"},
        body,
    )
    assert status == 200 and headers["Cache-Control"] == "no-cache, no-store"
    assert json.loads(text)[0]["successful"] is True


def test_allowed_origins_get_cors_headers_and_others_are_refused(server):
    status, headers, _ = request(bayeux_url(server), "OPTIONS", {"Origin": "http://localhost:8000"})
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "http://localhost:8000"
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert headers["Access-Control-Allow-Methods"] == "POST, GET, OPTIONS"
    assert "Content-Type" in headers["Access-Control-Allow-Headers"]
    assert headers["Access-Control-Max-Age"] == "86400"

    status, headers, body = request(bayeux_url(server), "OPTIONS", {"Origin": "https://evil.example"})
    assert status == 403 and "Access-Control-Allow-Origin" not in headers
    status, _, body = request(
        bayeux_url(server), "POST", {"Origin": "https://evil.example"}, b'[{"channel":"/meta/handshake"}]'
    )
    assert status == 403 and json.loads(body)[0]["error"] == "403::origin_not_allowed"


# Bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"{", 400, "400:payload is not valid JSON:invalid_data"),
        (b"[]", 400, "400:payload must be a message or a non-empty array of messages:invalid_data"),
        (json.dumps([{"channel": "/meta/connect"}] * 101).encode(), 413, "413:100:too_many_messages"),
        (b"[" + b" " * 70_000 + b"]", 413, "413:65536:message_too_large"),
    ],
)
def test_malformed_payloads_get_a_documented_error(server, body, status, error):
    found_status, replies = post(bayeux_url(server), body)
    assert (found_status, replies) == (
        status,
        [{"channel": "/meta/unknown", "successful": False, "error": error}],
    )


def test_a_bad_message_in_a_batch_is_refused_alone(server, make_key, make_channel, uid):
    room = make_channel(f"room-{uid}")
    client = LongPolling(server)
    client.handshake({"secret": make_key()})
    replies = client.send(
        {"channel": f"/{room.name}", "data": 1},
        "not a message",
        {"channel": "/meta/subscribe"},
        {"channel": f"/{room.name}", "data": 2},
    )
    assert [reply["successful"] for reply in replies] == [True, False, False, True]
    assert replies[1]["error"] == "400:each message must be an object:invalid_data"
    assert replies[2]["error"] == "403::subscription_missing"


def test_a_websocket_that_keeps_sending_garbage_is_closed_and_others_carry_on(
    strict_server, sockets, make_key, make_channel, uid
):
    from websockets.exceptions import ConnectionClosed

    room = make_channel(f"room-{uid}")
    good, bad = sockets(strict_server), sockets(strict_server)
    good.handshake({"secret": make_key()})
    good.subscribe(f"/{room.name}")
    bad.send_raw(b"\x00binary")
    assert bad.recv()[0]["error"] == "400:binary frames are not supported; send JSON text:invalid_data"
    bad.send_raw("[")
    bad.send_raw("{}}")
    with pytest.raises(ConnectionClosed):
        while True:
            bad.recv()
    assert bad.ws.close_code == 4001
    good.publish(f"/{room.name}", "still here")
    assert good.next_delivery()["data"] == "still here"


def test_a_websocket_that_keeps_failing_to_handshake_is_closed(strict_server, sockets):
    from websockets.exceptions import ConnectionClosed

    client = sockets(strict_server)
    for _ in range(2):
        assert client.handshake({"secret": "rt_wrong"})["successful"] is False
    client.send({"channel": "/meta/handshake", "ext": {"auth": {"secret": "rt_wrong"}}})
    with pytest.raises(ConnectionClosed):
        while True:
            client.recv()
    assert client.ws.close_code == 4002


def test_a_websocket_from_a_foreign_origin_is_closed(server):
    from websockets.exceptions import ConnectionClosed

    client = WebSocket(server, origin="https://evil.example")
    try:
        with pytest.raises(ConnectionClosed):
            client.recv()
        assert client.ws.close_code == 4003
    finally:
        client.close()


# Access changes on live sessions -----------------------------------------------------


def test_revoking_a_key_ends_its_sessions_and_the_client_is_then_refused(
    server, sockets, make_key, make_channel, uid
):
    room = make_channel(f"room-{uid}")
    secret = make_key(name=f"doomed-{uid}")
    polling, socket = LongPolling(server), sockets(server)
    polling.handshake({"secret": secret})
    socket.handshake({"secret": secret})
    socket.subscribe(f"/{room.name}")
    key = AccessKey.objects.get(name=f"doomed-{uid}")
    key.is_active = False
    key.save()

    assert eventually(lambda: polling.connect(timeout_ms=0)[-1]["successful"] is False)
    assert socket.publish(f"/{room.name}", 1)["error"] == "402::session_unknown"
    assert socket.handshake({"secret": secret})["error"] == "403:invalid_credentials:handshake_denied"


def test_deactivating_a_channel_stops_its_deliveries_to_bayeux_subscribers(
    servers, connect, sockets, make_key, make_channel, uid
):
    room = make_channel(f"room-{uid}")
    subscriber = sockets(servers[1])
    subscriber.handshake({"secret": make_key()})
    subscriber.subscribe(f"/{room.name}")
    witness = connect(servers[1])  # a native subscriber on the same process is told when
    witness.auth(make_key())
    witness.subscribe(room.name)
    room.is_active = False
    room.save()
    assert witness.next_message(timeout=8) == {
        "unsubscribed": {"channel": room.name, "reason": "channel_unavailable"}
    }
    room.is_active = True
    room.save()
    publisher = connect(servers[0])
    publisher.auth(make_key())
    assert eventually(lambda: publisher.publish(room.name, "e", "after").get("ok"))
    with pytest.raises(TimeoutError):
        subscriber.next_delivery(timeout=1.5)


# History -----------------------------------------------------------------------------


def test_a_bayeux_subscriber_recovers_what_it_missed_through_ext_since(
    servers, connect, sockets, make_key, make_channel, uid
):
    room = make_channel(f"kept-{uid}", history_size=50)
    publisher = connect(servers[0])
    publisher.auth(make_key())
    first = publisher.publish(room.name, "e", 1)
    for n in (2, 3):
        publisher.publish(room.name, "e", n)
    client = sockets(servers[1])
    client.handshake({"secret": make_key()})
    since = {"offset": first["offset"], "epoch": first["epoch"]}
    reply = client.subscribe(f"/{room.name}", ext={"realtime": {"since": since}})
    assert reply["ext"]["realtime"] == {"offset": 3, "epoch": first["epoch"], "recovered": True}
    replayed = [client.next_delivery(), client.next_delivery()]
    assert [(m["data"], m["ext"]["realtime"]["offset"]) for m in replayed] == [(2, 2), (3, 3)]
    ack = client.publish(f"/{room.name}", 4)
    assert ack["ext"]["realtime"]["offset"] == 4
    assert client.next_delivery()["data"] == 4


def test_a_bayeux_subscriber_is_listed_in_presence_like_a_native_one(
    servers, connect, sockets, make_key, make_channel, uid
):
    room = make_channel(f"here-{uid}", presence=True)
    bayeux = sockets(servers[1])
    bayeux.handshake({"secret": make_key()})
    reply = bayeux.subscribe(f"/{room.name}")
    client = reply["ext"]["realtime"]["client"]
    native = connect(servers[0])
    native.auth(make_key())
    members = native.presence(room.name)["presence"]["members"]
    assert members == [{"user": None, "clients": [client]}]
    assert client != bayeux.client_id  # the public id, never the bearer clientId
