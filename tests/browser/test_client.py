"""realtime.js in real Chromium, against live daphne processes.

Each test drives the client through ``page.evaluate``; ``window.T`` holds the helpers the
test page defines (``TestSocket`` wraps the browser's WebSocket and records frames).
"""

import json

import pytest
from django.contrib.auth.models import User

from realtime import tokens
from realtime.models import AccessKey
from tests.matchers import SERVER_TIME
from tests.services import AsgiServer

pytestmark = [pytest.mark.live]

# Short delays so that reconnecting takes tens of milliseconds, not seconds.
FAST = {"reconnect": {"minDelay": 50, "maxDelay": 250}}


@pytest.fixture
def restartable_server(service_dir, test_database):
    """A server of this test's own (in-memory layer), to stop and start again on its port."""
    server = AsgiServer(service_dir, database=test_database).start()
    yield server
    server.stop()


def start_client(page, url, options=None, subscribe=()):
    """Create window.client (with window.log and window.received), subscribe, connect."""
    page.evaluate(
        """async ([url, options, channels]) => {
            window.client = new T.Realtime.RealtimeClient(url, {WebSocket: T.TestSocket, ...options});
            window.log = T.record(client);
            window.received = [];
            window.subs = channels.map((channel) => client.subscribe(channel, (m) => received.push(m)));
            await T.within(client.connect(), "connect()");
            await T.within(Promise.all(subs.map((sub) => sub.ready)), "subscriptions ready");
        }""",
        [url, options or {}, list(subscribe)],
    )


def states(page):
    return [detail["state"] for detail in page.evaluate("log.states")]


def sent_frames(page, socket_index):
    return page.evaluate("(i) => T.sockets.at(i).frames()", socket_index)


def test_key_auth_subscribe_and_receive_a_publication_made_elsewhere(
    client_page, servers, connect, make_key, make_channel, uid
):
    room = make_channel(f"room-{uid}")
    page = client_page(servers[0])
    start_client(page, servers[0].ws_url, {"secret": make_key()}, [room.name])
    assert page.evaluate("[client.state, client.authenticated]") == ["connected", True]

    publisher = connect(servers[1])
    publisher.auth(make_key())
    publisher.publish(room.name, "chat", {"text": "hi"})

    page.wait_for_function("received.length === 1")
    expected = {"channel": room.name, "event": "chat", "data": {"text": "hi"}, "time": SERVER_TIME}
    assert page.evaluate("received") == [expected]
    assert page.evaluate("log.messages") == [expected]
    assert [next(iter(frame)) for frame in sent_frames(page, 0)] == ["auth", "subscribe"]


def test_pattern_subscription_receives_subchannel_publications_once(
    client_page, servers, connect, make_key, make_channel, uid
):
    rooms = make_channel(f"rooms-{uid}", include_subchannels=True)
    page = client_page(servers[0])
    start_client(page, servers[0].ws_url, {"secret": make_key()}, [f"{rooms.name}/*", f"{rooms.name}/1"])

    publisher = connect(servers[1])
    publisher.auth(make_key())
    for name in (f"{rooms.name}/1", f"{rooms.name}/2", f"{rooms.name}/2/deep"):
        publisher.publish(name, "chat", name)
    publisher.publish(f"{rooms.name}/3", "chat", "last")

    page.wait_for_function("log.messages.length === 3")
    # rooms/1 matches both subscriptions: the server sends it once, both handlers see it.
    assert [m["data"] for m in page.evaluate("log.messages")] == [
        f"{rooms.name}/1",
        f"{rooms.name}/2",
        "last",
    ]
    assert [m["data"] for m in page.evaluate("received")] == [
        f"{rooms.name}/1",
        f"{rooms.name}/1",
        f"{rooms.name}/2",
        "last",
    ]


def test_publish_from_the_browser_reaches_a_python_subscriber(
    client_page, servers, connect, make_key, make_channel, uid
):
    room = make_channel(f"room-{uid}")
    subscriber = connect(servers[1])
    subscriber.auth(make_key())
    subscriber.subscribe(room.name)
    page = client_page(servers[0])
    start_client(page, servers[0].ws_url, {"secret": make_key()})

    reply = page.evaluate(
        "(channel) => client.publish(channel, 'chat', {text: 'from the browser'})", room.name
    )

    assert reply["ok"] is True and isinstance(reply["id"], int)
    assert subscriber.next_message() == {
        "message": {
            "channel": room.name,
            "event": "chat",
            "data": {"text": "from the browser"},
            "time": SERVER_TIME,
        }
    }


def test_refused_requests_reject_with_the_servers_error_code(
    client_page, server, make_key, make_channel, uid
):
    room = make_channel(f"room-{uid}")
    page = client_page(server)
    start_client(page, server.ws_url, {"secret": make_key(access="read-only")})

    results = page.evaluate(
        """async (room) => {
            const missing = client.subscribe(room + "-missing");
            const badName = client.subscribe("meta/x");
            return {
                readOnlyPublish: await T.outcome(client.publish(room, "chat", 1)),
                missingChannel: await T.outcome(missing.ready),
                badName: await T.outcome(badName.ready),
                publishMissing: await T.outcome(client.publish(room + "-missing", "chat", 1)),
                left: client.subscriptions.map((sub) => sub.channel),
                active: [missing.active, badName.active],
            };
        }""",
        room.name,
    )

    def refused(code):
        return {
            "ok": False,
            "name": "RealtimeError",
            "code": code,
            "closeCode": None,
            "isRealtimeError": True,
        }

    assert results == {
        "readOnlyPublish": refused("access_denied"),
        "missingChannel": refused("invalid_channel"),
        "badName": refused("invalid_channel_name"),
        "publishMissing": refused("access_denied"),  # read-only is checked before the channel
        "left": [],
        "active": [False, False],
    }


def test_reconnects_reauthenticates_and_resubscribes_in_order_after_a_server_restart(
    client_page, restartable_server, connect, make_key, make_channel, uid
):
    first, second = make_channel(f"first-{uid}"), make_channel(f"second-{uid}")
    secret = make_key()
    page = client_page(restartable_server)
    start_client(page, restartable_server.ws_url, {"secret": secret, **FAST}, [first.name, second.name])

    restartable_server.stop()
    page.wait_for_function("client.state !== 'connected'")
    restartable_server.start()
    # Connected again, and both renewed subscriptions confirmed (auth + 2 subscribe replies).
    page.wait_for_function("client.state === 'connected' && T.replies(-1) >= 3")

    publisher = connect(restartable_server)
    publisher.auth(secret)
    publisher.publish(second.name, "after", 2)
    publisher.publish(first.name, "after", 1)
    page.wait_for_function("received.length === 2")
    assert [m["channel"] for m in page.evaluate("received")] == [second.name, first.name]

    renewed = sent_frames(page, -1)
    assert [(next(iter(frame)), frame[next(iter(frame))]) for frame in renewed[:3]] == [
        ("auth", {"secret": secret}),
        ("subscribe", {"channel": first.name}),
        ("subscribe", {"channel": second.name}),
    ]
    seen = states(page)
    assert seen[:2] == ["connecting", "connected"]
    assert "disconnected" in seen[2:] and seen[-2:] == ["connecting", "connected"]


def test_publish_made_while_disconnected_is_queued_and_sent_after_reconnect(
    client_page, restartable_server, make_key, make_channel, uid
):
    room = make_channel(f"room-{uid}")
    page = client_page(restartable_server)
    start_client(page, restartable_server.ws_url, {"secret": make_key(), **FAST}, [room.name])

    restartable_server.stop()
    page.wait_for_function("client.state === 'disconnected'")
    page.evaluate(
        "(channel) => { window.queued = T.outcome(client.publish(channel, 'queued', 42)); }", room.name
    )
    restartable_server.start()

    assert page.evaluate("queued")["ok"] is True
    page.wait_for_function("received.length === 1")
    assert page.evaluate("received") == [
        {"channel": room.name, "event": "queued", "data": 42, "time": SERVER_TIME}
    ]
    # After a reconnect: auth, then the renewed subscription, then the queue.
    assert [next(iter(frame)) for frame in sent_frames(page, -1)][:3] == ["auth", "subscribe", "publish"]


def test_state_events_from_idle_to_connected_to_closed(client_page, server):
    page = client_page(server)
    page.evaluate(
        """(url) => {
            const options = {WebSocket: T.TestSocket, reconnect: {minDelay: 20}};
            window.client = new T.Realtime.RealtimeClient(url, options);
            window.log = T.record(client);
            window.initial = client.state;
        }""",
        server.ws_url,
    )
    assert page.evaluate("initial") == "idle"
    page.evaluate("T.within(client.connect(), 'connect()')")
    page.evaluate("client.close()")
    page.wait_for_timeout(300)  # time enough for a reconnect, were one (wrongly) scheduled

    assert page.evaluate("log.states") == [
        {"state": "connecting", "previous": "idle"},
        {"state": "connected", "previous": "connecting"},
        {"state": "closed", "previous": "connected", "code": 1000, "reason": "closed by the client"},
    ]
    assert page.evaluate("T.sockets.length") == 1
    # With no credentials, a ping is how the client hears from the server before "connected".
    assert sent_frames(page, 0) == [{"ping": True, "id": 1}, {"disconnect": True}]


def test_close_rejects_pending_requests_with_closed(client_page, server, make_key, make_channel, uid):
    room = make_channel(f"room-{uid}")
    page = client_page(server)
    start_client(page, server.ws_url, {"secret": make_key()})

    results = page.evaluate(
        """async (room) => {
            const inFlight = client.publish(room, "chat", 1);
            const subscription = client.subscribe(room);
            const idle = new T.Realtime.RealtimeClient(client.url);
            const queued = idle.publish(room, "chat", 2);
            client.close();
            idle.close();
            return {
                inFlight: await T.outcome(inFlight),
                ready: await T.outcome(subscription.ready),
                queued: await T.outcome(queued),
                afterClose: await T.outcome(client.publish(room, "chat", 3)),
                sent: T.sockets[0].frames().map((frame) => Object.keys(frame)[0]),
            };
        }""",
        room.name,
    )

    closed = {
        "ok": False,
        "name": "RealtimeError",
        "code": "closed",
        "closeCode": 1000,
        "isRealtimeError": True,
    }
    assert results["inFlight"] == closed
    assert results["ready"] == closed
    assert results["queued"] == closed
    assert results["afterClose"]["code"] == "closed"
    assert results["sent"] == ["auth", "publish", "subscribe", "disconnect"]


def test_heartbeat_notices_a_silent_connection_and_reconnects(
    client_page, server, connect, make_key, make_channel, uid
):
    room = make_channel(f"room-{uid}")
    secret = make_key()
    page = client_page(server)
    options = {"secret": secret, "heartbeatInterval": 300, "heartbeatTimeout": 300, **FAST}
    start_client(page, server.ws_url, options, [room.name])

    page.evaluate("T.sockets[0].silent = true")  # the socket stays open but nothing gets through
    page.wait_for_function("T.sockets.length === 2 && client.state === 'connected'")
    page.wait_for_function("T.replies(1) >= 2")  # auth and the renewed subscription

    assert any(frame.get("ping") is True for frame in sent_frames(page, 0))
    lost = [d for d in page.evaluate("log.states") if d["state"] == "disconnected"]
    assert lost[0]["reason"] == "heartbeat timeout"
    # The server answers pings, so the new connection outlives several heartbeats.
    page.wait_for_timeout(1500)
    assert page.evaluate("[T.sockets.length, client.state]") == [2, "connected"]
    assert sum(frame.get("ping") is True for frame in sent_frames(page, 1)) >= 2

    publisher = connect(server)
    publisher.auth(secret)
    publisher.publish(room.name, "alive", True)
    page.wait_for_function("received.length === 1")


def test_origin_refused_with_4003_closes_for_good(client_page, server):
    # 127.0.0.2 is not among the hosts the server allows (DEBUG: .localhost, 127.0.0.1, [::1]).
    page = client_page(server, origin=f"http://127.0.0.2:{server.port}")
    page.evaluate(
        """(url) => {
            const options = {WebSocket: T.TestSocket, reconnect: {minDelay: 20}};
            window.client = new T.Realtime.RealtimeClient(url, options);
            window.log = T.record(client);
            window.connected = T.outcome(client.connect());
        }""",
        server.ws_url,
    )

    assert page.evaluate("connected") == {
        "ok": False,
        "name": "RealtimeError",
        "code": "closed",
        "closeCode": 4003,
        "isRealtimeError": True,
    }
    page.wait_for_timeout(300)
    assert page.evaluate("[client.state, T.sockets.length]") == ["closed", 1]
    assert page.evaluate("log.states.at(-1)") == {
        "state": "closed",
        "previous": "connecting",
        "code": 4003,
        "reason": "",
    }


class TokenEndpoint:
    """A token URL on the test page's origin that answers ``(status, body)`` pairs in turn."""

    def __init__(self, page):
        self.page = page
        self.answers: list[tuple[int, dict]] = []
        self.calls = 0

    def route(self, origin: str) -> str:
        def handle(route):
            status, body = self.answers[min(self.calls, len(self.answers) - 1)]
            self.calls += 1
            route.fulfill(status=status, body=json.dumps(body), content_type="application/json")

        self.page.route(f"{origin}/__token__", handle)
        return "/__token__"


@pytest.fixture
def token_url(page):
    return TokenEndpoint(page)


@pytest.fixture
def user(transactional_db, uid):
    return User.objects.create_user(f"alice-{uid}")


def test_rejected_token_is_renewed_from_token_url_once(
    client_page, server, make_channel, token_url, user, uid
):
    room = make_channel(f"room-{uid}")
    token, expires = tokens.issue_token(user, "read-write", [room.name])
    token_url.answers = [(200, {"token": token, "expires": expires})]
    page = client_page(server)
    path = token_url.route(server.http_url)
    start_client(page, server.ws_url, {"token": "stale", "tokenUrl": path}, [room.name])

    assert token_url.calls == 1
    auths = [frame["auth"] for frame in sent_frames(page, 0) if "auth" in frame]
    assert auths == [{"token": "stale"}, {"token": token}]
    page.evaluate("(channel) => client.publish(channel, 'chat', 'hi')", room.name)
    page.wait_for_function("received.length === 1")
    assert page.evaluate("received[0].user") == {"id": user.pk, "name": user.username}


def test_token_url_refusal_leaves_the_client_anonymous(client_page, server, make_channel, token_url, uid):
    news = make_channel(f"news-{uid}", anonymous_read=True)
    token_url.answers = [(403, {"err": "access_denied"})]
    page = client_page(server)
    path = token_url.route(server.http_url)
    start_client(page, server.ws_url, {"tokenUrl": path}, [news.name])

    assert token_url.calls == 1
    assert page.evaluate("[client.state, client.authenticated]") == ["connected", False]
    assert [next(iter(frame)) for frame in sent_frames(page, 0)] == ["ping", "subscribe"]


def test_from_page_reads_the_meta_element_and_sets_window_realtime(
    client_page, server, connect, make_key, make_channel, user, uid
):
    room = make_channel(f"room-{uid}")
    token, expires = tokens.issue_token(user, "read-only", [room.name])
    meta = f'<meta name="realtime" data-url="/realtime/ws" data-token="{token}" data-expires="{expires}" '
    meta += 'data-token-url="/__token__">'
    page = client_page(server, head=meta)

    page.evaluate(
        """async (channel) => {
            window.client = T.Realtime.RealtimeClient.fromPage(document, {WebSocket: T.TestSocket});
            window.received = [];
            window.initial = client.state;
            const sub = client.subscribe(channel, (m) => received.push(m));
            await T.within(client.connect(), "connect()");
            await T.within(sub.ready, "subscription ready");
        }""",
        room.name,
    )

    assert page.evaluate("initial") == "idle"
    assert page.evaluate("client.url") == server.ws_url  # "/realtime/ws", resolved against the page
    assert page.evaluate("window.Realtime.RealtimeClient === T.Realtime.RealtimeClient") is True
    assert page.evaluate("T.sockets[0].frames()[0]") == {"auth": {"token": token}, "id": 1}
    publisher = connect(server)
    publisher.auth(make_key())
    publisher.publish(room.name, "chat", 1)
    page.wait_for_function("received.length === 1")


@pytest.mark.usefixtures("redis_layer")
def test_server_notices_end_subscriptions_and_forget_revoked_credentials(
    client_page, server, make_key, make_channel, uid
):
    room, other = make_channel(f"room-{uid}"), make_channel(f"other-{uid}")
    page = client_page(server)
    start_client(page, server.ws_url, {"secret": make_key(name=f"k-{uid}")})
    page.evaluate(
        """async ([room, other]) => {
            window.ended = [];
            const onUnsubscribed = (info, sub) => ended.push([info, sub.channel, sub.active]);
            await client.subscribe(room, null, {onUnsubscribed}).ready;
            await client.subscribe(other, null, {onUnsubscribed}).ready;
        }""",
        [room.name, other.name],
    )

    room.is_active = False
    room.save()
    page.wait_for_function("ended.length === 1")
    assert page.evaluate("ended") == [
        [{"channel": room.name, "reason": "channel_unavailable"}, room.name, False]
    ]
    assert page.evaluate("client.subscriptions.map((s) => s.channel)") == [other.name]

    key = AccessKey.objects.get(name=f"k-{uid}")
    key.is_active = False
    key.save()
    page.wait_for_function("ended.length === 2")
    assert page.evaluate("ended[1]") == [{"channel": other.name, "reason": "key_revoked"}, other.name, False]
    assert page.evaluate("log.notices") == [
        {"unsubscribed": {"channel": room.name, "reason": "channel_unavailable"}},
        {"logout": {"reason": "key_revoked"}},
    ]
    assert page.evaluate("[client.authenticated, client.subscriptions.length, client.state]") == [
        False,
        0,
        "connected",
    ]


@pytest.fixture
def restartable_redis_server(service_dir, test_database, redis_server):
    """A server of this test's own that shares Redis with ``servers``, to stop and start again."""
    server = AsgiServer(service_dir, database=test_database, redis_url=redis_server.url).start()
    yield server
    server.stop()


def test_after_a_reconnect_the_client_recovers_exactly_what_it_missed_then_live_ones(
    client_page, restartable_redis_server, servers, connect, make_key, make_channel, uid
):
    room = make_channel(f"history-{uid}", history_size=100)
    secret = make_key()
    publisher = connect(servers[1])
    publisher.auth(secret)
    publisher.publish(room.name, "n", 0)
    page = client_page(restartable_redis_server)
    start_client(page, restartable_redis_server.ws_url, {"secret": secret, **FAST}, [room.name])
    publisher.publish(room.name, "n", 1)
    page.wait_for_function("received.length === 1")

    restartable_redis_server.stop()
    page.wait_for_function("client.state !== 'connected'")
    for n in range(2, 6):  # published on another process while the browser is away
        publisher.publish(room.name, "n", n)
    restartable_redis_server.start()
    page.wait_for_function("received.length === 5")
    publisher.publish(room.name, "n", 6)
    page.wait_for_function("received.length === 6")

    got = page.evaluate("received")
    assert [(m["offset"], m["data"]) for m in got] == [(n + 1, n) for n in range(1, 7)]
    assert page.evaluate("(c) => client.position(c).offset", room.name) == 7
    renewed = sent_frames(page, -1)[1]
    assert renewed["subscribe"] == {"channel": room.name, "since": {"offset": 2, "epoch": got[0]["epoch"]}}
    assert page.evaluate("log.notices") == []


def test_a_gap_that_cannot_be_recovered_is_reported_as_missed(
    client_page, restartable_redis_server, servers, connect, make_key, make_channel, uid
):
    room = make_channel(f"short-{uid}", history_size=2)
    secret = make_key()
    publisher = connect(servers[1])
    publisher.auth(secret)
    page = client_page(restartable_redis_server)
    start_client(page, restartable_redis_server.ws_url, {"secret": secret, **FAST}, [room.name])

    restartable_redis_server.stop()
    page.wait_for_function("client.state !== 'connected'")
    for n in range(5):  # more than the channel keeps
        publisher.publish(room.name, "n", n)
    restartable_redis_server.start()

    page.wait_for_function("log.notices.length === 1")
    assert page.evaluate("log.notices") == [{"missed": {"channel": room.name, "reason": "not_recovered"}}]
    assert page.evaluate("received") == []
    publisher.publish(room.name, "n", "live")
    page.wait_for_function("received.length === 1")
    assert page.evaluate("received[0].offset") == 6


def test_history_and_presence_from_the_browser(client_page, servers, connect, make_key, make_channel, uid):
    room = make_channel(f"both-{uid}", history_size=10, presence=True)
    secret = make_key()
    publisher = connect(servers[1])
    publisher.auth(secret)
    for n in range(3):
        publisher.publish(room.name, "n", n)
    page = client_page(servers[0])
    start_client(page, servers[0].ws_url, {"secret": secret}, [room.name])

    page_history = page.evaluate("(c) => client.history(c, {since: 1, limit: 5})", room.name)
    assert [p["data"] for p in page_history["publications"]] == [1, 2]
    assert page_history["complete"] is True and page_history["next"] is None
    members = page.evaluate("(c) => client.presence(c)", room.name)
    assert len(members) == 1 and members[0]["user"] is None and len(members[0]["clients"]) == 1
