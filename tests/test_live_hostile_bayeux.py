"""Bayeux against hostile clients: no key secrets in URLs, Bayeux sessions and anonymous
subscriptions capped per address, sockets that never handshake closed."""

import http.client
import json
import time
import urllib.parse

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from tests.hostile import LIMITS, fresh_address, http_request

pytestmark = [pytest.mark.live]


def bayeux(server, messages, address):
    status, _, replies = http_request(
        server, "POST", "/realtime/bayeux", json.dumps(messages).encode(), {}, address
    )
    assert status == 200, replies
    return replies


def handshake(server, address, auth=None):
    message = {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}
    if auth is not None:
        message["ext"] = {"auth": auth}
    [reply] = bayeux(server, [message], address)
    return reply


def jsonp(server, messages, address):
    query = urllib.parse.urlencode({"message": json.dumps(messages), "jsonp": "cb"})
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10, source_address=(address, 0))
    connection.request("GET", f"/realtime/bayeux?{query}")
    text = connection.getresponse().read().decode()
    connection.close()
    return json.loads(text[len("/**/cb(") : -2])


def test_callback_polling_refuses_a_key_secret_in_the_url_and_takes_a_token(
    hardened, make_key, transactional_db, uid
):
    from django.contrib.auth.models import User

    from realtime import tokens

    address = fresh_address()
    handshake_message = {"channel": "/meta/handshake", "version": "1.0", "id": "1"}
    [refused] = jsonp(hardened, [{**handshake_message, "ext": {"auth": {"secret": make_key()}}}], address)
    assert refused["successful"] is False
    assert refused["error"] == "403:secret_in_url:handshake_denied"
    assert refused["advice"] == {"reconnect": "none"}
    token, _ = tokens.issue_token(User.objects.create_user(f"jsonp-{uid}"), "read-only")
    [accepted] = jsonp(hardened, [{**handshake_message, "ext": {"auth": {"token": token}}}], address)
    assert accepted["successful"] is True
    # The same secret in a POST body is fine.
    assert handshake(hardened, fresh_address(), {"secret": make_key()})["successful"] is True


def test_bayeux_sessions_are_capped_per_address(hardened, make_key):
    address, secret = fresh_address(), make_key()
    sessions = [
        handshake(hardened, address, {"secret": secret})
        for _ in range(LIMITS["MAX_BAYEUX_SESSIONS_PER_ADDRESS"])
    ]
    assert all(reply["successful"] for reply in sessions)
    refused = handshake(hardened, address, {"secret": secret})
    assert refused["error"] == f"429:{LIMITS['MAX_BAYEUX_SESSIONS_PER_ADDRESS']}:too_many_sessions"
    assert refused["advice"] == {"reconnect": "handshake", "interval": LIMITS["BAYEUX_MAX_INTERVAL"] * 1000}
    assert handshake(hardened, fresh_address(), {"secret": secret})["successful"] is True
    # Ending a session makes room at once.
    [ended] = bayeux(
        hardened, [{"channel": "/meta/disconnect", "clientId": sessions[0]["clientId"]}], address
    )
    assert ended["successful"] is True
    assert handshake(hardened, address, {"secret": secret})["successful"] is True


def subscribe(server, session, channel, address):
    message = {"channel": "/meta/subscribe", "clientId": session["clientId"], "subscription": channel}
    [reply] = bayeux(server, [message], address)
    return reply


def test_anonymous_handshakes_are_capped_and_sessions_subscriptions_count_per_address(
    hardened, make_channel, uid
):
    news = make_channel(f"news-{uid}", include_subchannels=True, anonymous_read=True).name
    address = fresh_address()
    first, second = handshake(hardened, address), handshake(hardened, address)
    assert first["successful"] and second["successful"]
    assert handshake(hardened, address)["error"].endswith(":too_many_sessions")
    # Two channels each: four subscriptions from the address (its limit), two topics.
    for session in (first, second):
        for name in ("a", "b"):
            assert subscribe(hardened, session, f"/{news}/{name}", address)["successful"] is True
    refused = subscribe(hardened, second, f"/{news}/c", address)
    assert refused["error"] == f"400:/{news}/c:too_many_subscriptions"
    assert handshake(hardened, fresh_address())["successful"] is True  # another address


def test_a_bayeux_websocket_that_never_handshakes_is_closed_with_4006(hardened):
    url = f"ws://127.0.0.1:{hardened.port}/realtime/bayeux"
    with ws_connect(url, source_address=(fresh_address(), 0)) as socket:
        with pytest.raises(ConnectionClosed):
            deadline = time.monotonic() + LIMITS["STALE_TIMEOUT"] + 5
            while time.monotonic() < deadline:
                socket.recv(timeout=deadline - time.monotonic())
        assert socket.close_code == 4006
