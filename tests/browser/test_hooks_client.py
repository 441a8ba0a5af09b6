"""realtime.js's rpc() and token refresh in real Chromium, against live servers (docs/hooks.md)."""

import json

import pytest
from django.contrib.auth.models import User

from realtime import tokens

pytestmark = [pytest.mark.live]


def start_client(page, url, options=None, subscribe=()):
    page.evaluate(
        """async ([url, options, channels]) => {
            window.client = new T.Realtime.RealtimeClient(url, {WebSocket: T.TestSocket, ...options});
            window.log = T.record(client);
            window.refreshes = [];
            client.addEventListener("realtime:refresh", (event) => refreshes.push(event.detail));
            window.received = [];
            window.ended = [];
            window.subs = channels.map((channel) => client.subscribe(
                channel, (m) => received.push(m), {onUnsubscribed: (info) => ended.push(info)},
            ));
            await T.within(client.connect(), "connect()");
            await T.within(Promise.all(subs.map((sub) => sub.ready)), "subscriptions ready");
        }""",
        [url, options or {}, list(subscribe)],
    )


class TokenEndpoint:
    """A token URL served by the page's own route: answers in order, then the last again."""

    def __init__(self, page, origin):
        self.answers: list[tuple[int, dict]] = []
        self.calls = 0

        def handle(route):
            self.calls += 1
            status, body = self.answers[min(self.calls, len(self.answers)) - 1]
            route.fulfill(status=status, body=json.dumps(body), content_type="application/json")

        page.route(f"{origin}/__token__", handle)


@pytest.fixture
def user(transactional_db, uid):
    return User.objects.create_user(f"alice-{uid}")


def issued(user, channels, session_ttl):
    token, expires = tokens.issue_token(user, "read-only", channels, session_ttl=session_ttl)
    return 200, {"token": token, "expires": expires}


# rpc() -------------------------------------------------------------------------------------------


def test_rpc_resolves_with_the_result_or_rejects_with_the_code(client_page, memory_server):
    page = client_page(memory_server)
    start_client(page, memory_server.ws_url)
    outcomes = page.evaluate(
        """async () => [
            await T.outcome(client.rpc("echo", {text: "hi", n: [1, 2]})),
            await T.outcome(client.rpc("echo")),
            await T.outcome(client.rpc("nosuch", 1)),
            await T.outcome(client.rpc("chat.recent", {room: "lobby"})),
            await T.outcome(client.rpc("a b")),
        ]"""
    )
    assert outcomes[0] == {"ok": True, "value": {"text": "hi", "n": [1, 2]}}
    assert outcomes[1] == {"ok": True, "value": None}
    assert [(o["code"], o["isRealtimeError"]) for o in outcomes[2:]] == [
        ("method_not_found", True),
        ("access_denied", True),
        ("invalid_data", True),
    ]
    assert page.evaluate("client.state") == "connected"
    sent = page.evaluate("T.sockets[0].frames().filter((f) => f.rpc).map((f) => f.rpc)")
    assert sent[0] == {"method": "echo", "data": {"text": "hi", "n": [1, 2]}}
    assert sent[1] == {"method": "echo", "data": None}


def test_rpc_made_before_connecting_waits_for_the_connection(client_page, memory_server):
    page = client_page(memory_server)
    result = page.evaluate(
        """async (url) => {
            const client = new T.Realtime.RealtimeClient(url, {WebSocket: T.TestSocket});
            const pending = client.rpc("echo", "early");
            client.connect();
            return await T.within(pending, "rpc before connect");
        }""",
        memory_server.ws_url,
    )
    assert result == "early"


# Token refresh ---------------------------------------------------------------------------------


def test_the_client_refreshes_its_token_before_it_ends_and_keeps_its_socket(
    client_page, servers, connect, make_key, make_channel, user, uid
):
    room = make_channel(f"rooms-{uid}", include_subchannels=True).name
    page = client_page(servers[0])
    endpoint = TokenEndpoint(page, servers[0].http_url)
    endpoint.answers = [issued(user, [room], session_ttl=3), issued(user, [room], session_ttl=60)]
    start_client(page, servers[0].ws_url, {"tokenUrl": "/__token__"}, [f"{room}/1"])

    page.wait_for_function("refreshes.length === 1", timeout=10_000)
    page.wait_for_timeout(2500)  # past the first token's end
    publisher = connect(servers[1])
    publisher.auth(make_key())
    assert publisher.publish(f"{room}/1", "e", "after the first token ended")["ok"] is True
    page.wait_for_function("received.length === 1")

    assert page.evaluate("received[0].data") == "after the first token ended"
    assert endpoint.calls == 2
    assert page.evaluate("T.sockets.length") == 1  # no reconnect
    commands = [next(iter(frame)) for frame in page.evaluate("T.sockets[0].frames()")]
    assert commands == ["auth", "subscribe", "refresh"]
    assert page.evaluate("[client.state, client.authenticated, log.notices, log.errors]") == [
        "connected",
        True,
        [],
        [],
    ]


def test_a_narrower_token_ends_the_subscriptions_it_no_longer_covers(
    client_page, servers, make_channel, user, uid
):
    rooms, news = (
        make_channel(f"rooms-{uid}", include_subchannels=True).name,
        make_channel(f"news-{uid}").name,
    )
    page = client_page(servers[1])
    endpoint = TokenEndpoint(page, servers[1].http_url)
    endpoint.answers = [issued(user, [rooms, news], session_ttl=2), issued(user, [rooms], session_ttl=60)]
    start_client(page, servers[1].ws_url, {"tokenUrl": "/__token__"}, [f"{rooms}/1", news])

    page.wait_for_function("refreshes.length === 1", timeout=10_000)
    page.wait_for_function("ended.length === 1")
    assert page.evaluate("ended") == [{"channel": news, "reason": "access_revoked"}]
    assert page.evaluate("client.subscriptions.map((s) => s.channel)") == [f"{rooms}/1"]
    assert page.evaluate("T.sockets.length") == 1


def test_when_no_fresh_token_comes_the_connection_is_told_and_goes_on_anonymously(
    client_page, servers, make_channel, user, uid
):
    news = make_channel(f"news-{uid}", anonymous_read=True).name
    page = client_page(servers[0])
    endpoint = TokenEndpoint(page, servers[0].http_url)
    endpoint.answers = [issued(user, [news], session_ttl=2), (403, {"err": "access_denied"})]
    start_client(page, servers[0].ws_url, {"tokenUrl": "/__token__"}, [news])

    page.wait_for_function("log.notices.length === 1", timeout=10_000)
    assert page.evaluate("log.notices") == [{"logout": {"reason": "token_expired"}}]
    assert page.evaluate("log.errors.map((e) => e.code)") == ["token_unavailable"]
    assert page.evaluate("[client.state, client.authenticated]") == ["connected", False]
    assert page.evaluate("T.sockets.length") == 1
