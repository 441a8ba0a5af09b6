"""Server-sent events at /realtime/sse, against real server processes and Redis."""

import json
import socket
import subprocess
import time

import pytest
from django.contrib.auth.models import User

from realtime import tokens
from realtime.models import AccessKey, Channel
from tests.conftest import _start
from tests.services import VENV_BIN, AsgiServer
from tests.sse_client import EventStream

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("redis_layer")]


class HypercornServer(AsgiServer):
    def command(self):
        return [str(VENV_BIN / "hypercorn"), "demo_site.asgi:application", "--bind", f"127.0.0.1:{self.port}"]


@pytest.fixture(scope="module")
def sse_server(request, service_dir, redis_server, test_database):
    """uvicorn with quick heartbeats and reconnects, and revalidation every second."""
    realtime = {"SSE_HEARTBEAT": 0.3, "SSE_RETRY": 0.2, "REVALIDATE_INTERVAL": 1}
    return _start(
        request, service_dir, database=test_database, redis_url=redis_server.url, realtime=realtime,
        server="uvicorn",
    )  # fmt: skip


@pytest.fixture(scope="module")
def hypercorn_server(request, service_dir, redis_server, test_database):
    server = HypercornServer(service_dir, database=test_database, redis_url=redis_server.url).start()
    request.addfinalizer(server.stop)
    return server


@pytest.fixture
def streams():
    opened = []

    def open_stream(server, channels, **kwargs):
        stream = EventStream(server, channels, **kwargs)
        opened.append(stream)
        return stream

    yield open_stream
    for stream in opened:
        stream.close()


def subscribed(stream, count=1):
    events = [stream.next() for _ in range(count)]
    assert [event.event for event in events] == ["realtime:subscribed"] * count, events
    return [event.json for event in events]


def test_a_stream_carries_each_publication_as_the_socket_sends_it(
    servers, streams, connect, make_key, make_channel, uid
):
    news = make_channel(f"news-{uid}", anonymous_read=True, history_size=10)
    stream = streams(servers[0], [news.name])
    assert stream.status == 200
    assert stream.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert "no-transform" in stream.headers["Cache-Control"]
    [opened] = subscribed(stream)
    assert opened["channel"] == news.name and opened["offset"] == 0
    socket_reader = connect(servers[0])
    socket_reader.subscribe(news.name)
    writer = connect(servers[1])
    writer.auth(make_key())

    ack = writer.publish(news.name, "chat", {"text": "héllo\nworld"})

    event = stream.next()
    raw = socket_reader.ws.recv(timeout=5)
    assert raw.startswith('{"message":')
    assert event.event == "chat"
    assert event.data == raw[len('{"message":') : -1]  # the very object the socket sends
    assert event.id == f"{ack['epoch']}:{ack['offset']}" == f"{opened['epoch']}:1"
    message = event.json
    assert message["data"] == {"text": "héllo\nworld"} and abs(message["time"] - time.time()) < 5


def test_several_channels_and_a_pattern_with_one_id_for_all_positions(
    servers, streams, connect, make_key, make_channel, uid
):
    make_channel(f"a-{uid}", anonymous_read=True, history_size=10)
    make_channel(f"b-{uid}", anonymous_read=True, history_size=10)
    make_channel(f"rooms-{uid}", include_subchannels=True, history_size=10)
    key = make_key(access="read-only")
    stream = streams(
        servers[0], [f"a-{uid}", f"b-{uid}", f"rooms-{uid}/*"], headers={"Authorization": f"Bearer {key}"}
    )
    replies = subscribed(stream, 3)
    epochs = {reply["channel"]: reply.get("epoch") for reply in replies}
    writer = connect(servers[1])
    writer.auth(make_key())
    writer.publish(f"a-{uid}", "x", 1)
    writer.publish(f"rooms-{uid}/7", "y", 2)
    writer.publish(f"b-{uid}", "z", 3)

    first, pattern, third = stream.publications(3)

    assert (first.event, first.json["data"]) == ("x", 1)
    assert first.id == f"a-{uid}={epochs[f'a-{uid}']}:1,b-{uid}={epochs[f'b-{uid}']}:0"
    assert (pattern.event, pattern.json["channel"]) == ("y", f"rooms-{uid}/7")
    assert pattern.id == first.id  # a pattern's publications are not positions of this stream
    assert third.id == f"a-{uid}={epochs[f'a-{uid}']}:1,b-{uid}={epochs[f'b-{uid}']}:1"


@pytest.mark.parametrize("across", ["same server", "other server"])
def test_last_event_id_recovers_exactly_what_was_missed_then_live_ones(
    servers, streams, connect, make_key, make_channel, uid, across
):
    news = make_channel(f"news-{uid}", anonymous_read=True, history_size=50)
    writer = connect(servers[1])
    writer.auth(make_key())
    first = streams(servers[0], [news.name])
    subscribed(first)
    for n in range(2):
        writer.publish(news.name, "n", n)
    seen = first.publications(2)
    first.close()
    for n in range(2, 5):
        writer.publish(news.name, "n", n)

    again = streams(servers[0 if across == "same server" else 1], [news.name],
                    headers={"Last-Event-ID": seen[-1].id})  # fmt: skip
    [reply] = subscribed(again)
    assert reply["recovered"] is True
    writer.publish(news.name, "n", 5)

    replayed = again.publications(4)
    assert [event.json["data"] for event in replayed] == [2, 3, 4, 5]
    assert [event.json["offset"] for event in replayed] == [3, 4, 5, 6]
    with pytest.raises(TimeoutError):
        again.next(timeout=0.5)


def test_a_reconnect_that_cannot_be_recovered_says_so(servers, streams, connect, make_key, make_channel, uid):
    news = make_channel(f"news-{uid}", anonymous_read=True, history_size=50)
    plain = make_channel(f"plain-{uid}", anonymous_read=True)
    stream = streams(servers[0], [news.name, plain.name], headers={"Last-Event-ID": "not-an-id"})
    events = stream.events_until(
        lambda event: event.json.get("channel") == plain.name and "reason" in event.json
    )
    missed = [event.json for event in events if event.event == "realtime:missed"]
    assert missed == [
        {"channel": news.name, "reason": "not_recovered"},
        {"channel": plain.name, "reason": "not_recovered"},
    ]
    stale = streams(servers[0], [news.name], headers={"Last-Event-ID": "0000000000000000:3"})
    [reply] = subscribed(stale)
    assert reply["recovered"] is False
    assert stale.next().json == {"channel": news.name, "reason": "not_recovered"}


def test_the_same_credentials_as_the_socket(server, streams, make_key, make_channel, uid):
    closed = make_channel(f"closed-{uid}", history_size=5)
    other = make_channel(f"other-{uid}")
    user = User.objects.create_user(f"ann-{uid}")
    token, _ = tokens.issue_token(user, "read-only", [closed.name])
    scoped = make_key(access="read-only", channels=[closed])

    assert streams(server, [closed.name], token=token).status == 200
    assert streams(server, [closed.name], headers={"Authorization": f"Bearer {scoped}"}).status == 200
    assert streams(server, [closed.name], headers={"Authorization": f"Bearer {token}"}).status == 200

    anonymous = streams(server, [closed.name])
    assert (anonymous.status, anonymous.json()["err"]) == (401, "invalid_credentials")
    assert anonymous.headers["WWW-Authenticate"] == 'Bearer realm="realtime"'
    forged = streams(server, [closed.name], token=token[:-4] + "abcd")
    assert (forged.status, forged.json()["err"]) == (401, "invalid_credentials")
    in_url = streams(server, [closed.name], secret=scoped)
    assert (in_url.status, in_url.json()["err"]) == (400, "invalid_data")
    as_token = streams(server, [closed.name], token=scoped)
    assert (as_token.status, as_token.json()["err"]) == (400, "invalid_data")
    outside = streams(server, [other.name], headers={"Authorization": f"Bearer {scoped}"})
    assert (outside.status, outside.json()["err"]) == (403, "access_denied")
    missing = streams(server, [f"nosuch-{uid}"], headers={"Authorization": f"Bearer {make_key()}"})
    assert (missing.status, missing.json()["err"]) == (404, "invalid_channel")
    bad_name = streams(server, ["meta/x"], token=token)
    assert (bad_name.status, bad_name.json()["err"]) == (400, "invalid_channel_name")
    none = streams(server, [], token=token)
    assert (none.status, none.json()["err"]) == (400, "invalid_data")


def test_the_subscription_limit_counts_channels(strict_server, streams, make_channel, uid):
    names = [make_channel(f"c{n}-{uid}", anonymous_read=True).name for n in range(4)]
    assert streams(strict_server, names[:3]).status == 200
    over = streams(strict_server, names)
    assert (over.status, over.json()["err"]) == (400, "too_many_subscriptions")


def test_a_revoked_key_logs_the_stream_out_and_ends_it(sse_server, streams, make_key, make_channel, uid):
    closed = make_channel(f"closed-{uid}")
    secret = make_key(f"revoked-{uid}", access="read-only")
    stream = streams(sse_server, [closed.name], headers={"Authorization": f"Bearer {secret}"})
    subscribed(stream)
    AccessKey.objects.filter(name=f"revoked-{uid}").update(is_active=False)

    event = stream.next(timeout=10)
    assert (event.event, event.json) == ("realtime:logout", {"reason": "key_revoked"})
    with pytest.raises(EOFError):
        stream.next(timeout=5)


def test_a_deactivated_channel_unsubscribes_the_stream(sse_server, streams, make_channel, uid):
    news = make_channel(f"news-{uid}", anonymous_read=True)
    stream = streams(sse_server, [news.name])
    subscribed(stream)
    Channel.objects.filter(pk=news.pk).update(is_active=False)

    event = stream.next(timeout=10)
    assert event.event == "realtime:unsubscribed"
    assert event.json == {"channel": news.name, "reason": "channel_unavailable"}
    with pytest.raises(EOFError):
        stream.next(timeout=5)


def test_heartbeat_comments_keep_an_idle_stream_busy(sse_server, streams, make_channel, uid):
    news = make_channel(f"news-{uid}", anonymous_read=True)
    stream = streams(sse_server, [news.name])
    subscribed(stream)
    assert stream.retry == 200
    with pytest.raises(TimeoutError):
        stream.next(timeout=1.5)
    assert stream.comments >= 3


@pytest.mark.parametrize("kind", ["daphne", "uvicorn", "hypercorn"])
def test_a_client_that_goes_away_leaves_at_once(request, servers, streams, connect, make_channel, uid, kind):
    server = {"daphne": servers[0], "uvicorn": "uvicorn_server", "hypercorn": "hypercorn_server"}[kind]
    if isinstance(server, str):
        server = request.getfixturevalue(server)
    room = make_channel(f"room-{uid}", anonymous_read=True, presence=True, join_leave=True)
    watcher = connect(servers[1])
    watcher.subscribe(room.name)
    assert watcher.next_message()["join"]["channel"] == room.name  # its own
    stream = streams(server, [room.name])
    [reply] = subscribed(stream)
    assert watcher.next_message() == {"join": {"channel": room.name, "client": reply["client"], "user": None}}

    stream.close()

    assert watcher.next_message(timeout=5) == {
        "leave": {"channel": room.name, "client": reply["client"], "user": None}
    }


def test_a_browser_origin_that_may_not_connect_is_refused(server, streams, make_channel, uid):
    news = make_channel(f"news-{uid}", anonymous_read=True)
    refused = streams(server, [news.name], headers={"Origin": "https://evil.example"})
    assert (refused.status, refused.json()["err"]) == (403, "access_denied")
    allowed = streams(server, [news.name], headers={"Origin": f"http://localhost:{server.port}"})
    assert allowed.status == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == f"http://localhost:{server.port}"


def test_curl_reads_the_stream(servers, connect, make_key, make_channel, uid):
    news = make_channel(f"news-{uid}", anonymous_read=True, history_size=5)
    url = f"{servers[0].http_url}/realtime/sse?channel={news.name}"
    curl = subprocess.Popen(["curl", "-sN", "--max-time", "4", url], stdout=subprocess.PIPE, text=True)
    try:
        assert curl.stdout.readline().startswith(": realtime")
        writer = connect(servers[1])
        writer.auth(make_key())
        # The stream is live once it said so.
        lines = [curl.stdout.readline() for _ in range(6)]
        assert "event: realtime:subscribed\n" in lines, lines
        ack = writer.publish(news.name, "chat", {"text": "hi"})
        out, _ = curl.communicate(timeout=10)
    finally:
        if curl.poll() is None:
            curl.kill()
    block = out.split("event: chat\n", 1)[1].split("\n\n", 1)[0]
    data, event_id = block.split("\n")
    assert json.loads(data.removeprefix("data: "))["data"] == {"text": "hi"}
    assert event_id == f"id: {ack['epoch']}:{ack['offset']}"


PAYLOAD = "x" * 60_000
COUNT = 400


def test_a_stream_that_stops_reading_is_dropped_and_others_get_everything(
    slow_reader_server, streams, connect, make_key, make_channel, uid
):
    news = make_channel(f"news-{uid}", anonymous_read=True)
    stalled = socket.create_connection(("127.0.0.1", slow_reader_server.port))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(f"GET /realtime/sse?channel={news.name} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    healthy = streams(slow_reader_server, [news.name])
    subscribed(healthy)
    writer = connect(slow_reader_server)
    writer.auth(make_key())
    try:
        for n in range(COUNT):
            writer.send({"publish": {"channel": news.name, "event": "big", "data": PAYLOAD}, "id": n})
            assert healthy.next(timeout=10).event == "big"
        received = bytearray()
        stalled.settimeout(10)
        while chunk := stalled.recv(1 << 20):
            received += chunk
    finally:
        stalled.close()
    text = received.decode(errors="replace")
    assert text.count("event: big\n") < COUNT
    assert 'event: realtime:closed\ndata: {"reason":"too_slow"}' in text
