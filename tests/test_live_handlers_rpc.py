"""Publish handlers and RPC on real server processes (docs/hooks.md).

The demo's chat handler and RPC methods (demo_site/chat.py, demo_site/rpc.py) and the
test ones (tests/hooks_support.py) run in the servers.
"""

import json
import time
import urllib.request

import pytest
from django.contrib.auth.models import User

import realtime
from demo_site.models import ChatMessage
from realtime import tokens
from tests.bayeux.wire import LongPolling
from tests.hooks_support import APPS
from tests.matchers import SERVER_TIME
from tests.services import AsgiServer

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("redis_layer")]

APP_SETTINGS = {
    "PUBLISH_HANDLERS": {"rooms": "demo_site.chat.on_message", "wrapped": "tests.hooks_support.wrap"},
    "HANDLER_TIMEOUT": 1,
    "RPC_MAX_RESULT_SIZE": 1000,
    "REVALIDATE_INTERVAL": 1,
    # The Bayeux alias registers into the same registry, for native clients too.
    "BAYEUX_SERVICES": {"/service/aliased": "demo_site.bayeux_services.echo"},
}


@pytest.fixture(scope="module")
def app_server(request, service_dir, redis_server, test_database):
    server = AsgiServer(
        service_dir,
        database=test_database,
        redis_url=redis_server.url,
        realtime=APP_SETTINGS,
        env={"REALTIME_TEST_APPS": json.dumps(APPS)},
    ).start()
    request.addfinalizer(server.stop)
    return server


@pytest.fixture
def people(transactional_db, uid):
    return [User.objects.create_user(f"{name}-{uid}") for name in ("alice", "bob")]


@pytest.fixture
def rows(make_channel):
    return {
        "rooms": make_channel("rooms", include_subchannels=True),
        "users": make_channel("users", include_subchannels=True, personal=True),
        "wrapped": make_channel("wrapped", include_subchannels=True),
    }


def as_user(connect, server, user, channels=("rooms", "wrapped"), access="read-write"):
    client = connect(server)
    assert client.request("auth", {"token": tokens.issue_token(user, access, list(channels))[0]})["ok"]
    return client


def subscribed(connect, server, make_key, channel):
    client = connect(server)
    client.auth(make_key(access="read-only"))
    assert client.subscribe(channel)["ok"] is True
    return client


def next_publication(client, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        frame = client.next_message(timeout=max(0.05, deadline - time.monotonic()))
        if "message" in frame:
            return frame["message"]


def nothing_more(client, wait=0.5):
    with pytest.raises(TimeoutError):
        frame = client.next_message(timeout=wait)
        pytest.fail(f"unexpected frame {frame}")


def rpc(client, method, data=None):
    return client.request("rpc", {"method": method, "data": data})


# Publish handlers ----------------------------------------------------------------------------


def test_the_chat_handler_refuses_a_banned_word_with_its_code_and_detail(
    app_server, connect, make_key, people, rows
):
    listener = subscribed(connect, app_server, make_key, "rooms/lobby")
    alice = as_user(connect, app_server, people[0])

    refused = alice.publish("rooms/lobby", "chat", {"text": "buy SPAM now"})

    assert refused == {
        "err": "banned_word",
        "detail": "Messages may not contain the word “spam”.",
        "id": refused["id"],
    }
    nothing_more(listener)
    assert not ChatMessage.objects.exists()
    assert alice.request("ping")["ok"] is True


def test_the_chat_handler_stores_a_message_and_adds_its_id_to_what_is_published(
    app_server, connect, make_key, people, rows
):
    listener = subscribed(connect, app_server, make_key, "rooms/lobby")
    alice = as_user(connect, app_server, people[0])

    assert alice.publish("rooms/lobby", "chat", {"text": "  hello  ", "extra": "dropped"})["ok"] is True

    stored = ChatMessage.objects.get()
    assert (stored.room, stored.user, stored.text) == ("lobby", people[0], "hello")
    assert next_publication(listener) == {
        "channel": "rooms/lobby",
        "event": "chat",
        "data": {"text": "hello", "id": stored.pk},
        "user": {"id": people[0].pk, "name": people[0].username},
        "time": SERVER_TIME,
    }
    recent = rpc(alice, "chat.recent", {"room": "lobby"})["result"]
    assert [(m["id"], m["text"], m["user"]["name"]) for m in recent] == [
        (stored.pk, "hello", people[0].username)
    ]


def test_a_mention_reaches_the_mentioned_users_personal_channel_once_saved(app_server, connect, people, rows):
    alice, bob = people
    bob_client = as_user(connect, app_server, bob, ["rooms"], "read-only")
    assert bob_client.subscribe(f"users/{bob.pk}")["ok"] is True
    alice_client = as_user(connect, app_server, alice)

    assert (
        alice_client.publish("rooms/dev", "chat", {"text": f"ping @{bob.username}, and @nobody"})["ok"]
        is True
    )

    message = next_publication(bob_client)
    assert message["channel"] == f"users/{bob.pk}" and message["event"] == "mention"
    assert message["data"] == {
        "room": "dev",
        "from": alice.username,
        "text": f"ping @{bob.username}, and @nobody",
        "message": ChatMessage.objects.get().pk,
    }
    assert "user" not in message  # published by the server


def test_an_async_handler_may_change_refuse_or_fail_and_the_connection_stays(
    app_server, connect, make_key, people, rows
):
    listener = subscribed(connect, app_server, make_key, "wrapped/1")
    alice = as_user(connect, app_server, people[0])

    assert alice.publish("wrapped/1", "e", 42)["ok"] is True
    message = next_publication(listener)
    assert message["event"] == "e.wrapped"
    assert message["data"]["wrapped"] == 42 and message["data"]["by"] == people[0].pk
    assert len(message["data"]["client"]) == 32

    assert alice.publish("wrapped/1", "e", "reject") == {
        "err": "not_this_one",
        "detail": "this one is refused",
        "id": alice._next_id,
    }
    assert alice.publish("wrapped/1", "e", "invalid")["err"] == "invalid_data"
    failed = alice.publish("wrapped/1", "e", "boom")
    assert failed["err"] == "internal_error" and failed["detail"] == "the publish handler of 'wrapped' failed"
    late = alice.publish("wrapped/1", "e", "slow")
    assert late["err"] == "handler_timeout"
    nothing_more(listener)
    assert alice.request("ping")["ok"] is True
    log = app_server.log.read_text()
    assert "a handler with a bug" in log and "took more than HANDLER_TIMEOUT" in log


def test_server_side_publications_do_not_pass_through_the_handler(app_server, connect, make_key, rows):
    listener = subscribed(connect, app_server, make_key, "rooms/lobby")
    realtime.publish("rooms/lobby", "chat", {"text": "spam from the server"})
    assert next_publication(listener)["data"] == {"text": "spam from the server"}

    request = urllib.request.Request(
        f"{app_server.http_url}/realtime/api/publish",
        data=json.dumps(
            {"channel": "rooms/lobby", "event": "chat", "data": {"text": "spam over http"}}
        ).encode(),
        headers={"Authorization": f"Bearer {make_key()}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert json.loads(response.read()) == {"ok": True}
    assert next_publication(listener)["data"] == {"text": "spam over http"}
    assert not ChatMessage.objects.exists()


def test_bayeux_publications_pass_through_the_same_handler(app_server, connect, make_key, people, rows):
    listener = subscribed(connect, app_server, make_key, "wrapped/2")
    client = LongPolling(app_server)
    token = tokens.issue_token(people[0], "read-write", ["rooms", "wrapped"])[0]
    assert client.handshake({"token": token})["successful"] is True

    assert client.publish("/wrapped/2", 7)["successful"] is True
    assert next_publication(listener)["data"]["wrapped"] == 7
    refused = client.publish("/rooms/lobby", {"text": "spam"}, ext={"realtime": {"event": "chat"}})
    assert refused["successful"] is False and refused["error"] == "403:/rooms/lobby:banned_word"


# RPC -------------------------------------------------------------------------------------------


def test_rpc_calls_a_method_and_replies_with_its_result(app_server, connect, people, rows):
    anonymous = connect(app_server)
    assert anonymous.request(
        "rpc",
        {
            "method": "echo",
            "data": {"n": [1, 2]},
        },
    ) == {
        "ok": True,
        "id": 1,
        "result": {"n": [1, 2]},
    }
    assert rpc(anonymous, "echo")["result"] is None  # data may be left out
    alice = as_user(connect, app_server, people[0])
    assert rpc(alice, "tests.whoami", "hi")["result"] == {
        "username": people[0].username,
        "protocol": "native",
        "data": "hi",
    }
    assert rpc(alice, "whoami")["result"]["user"] == {"id": people[0].pk, "name": people[0].username}
    # BAYEUX_SERVICES entries are methods too.
    assert rpc(alice, "aliased", 5)["result"] == {
        "echo": 5,
        "user": {"id": people[0].pk, "name": people[0].username},
    }


def test_rpc_errors_have_their_codes_and_never_close_the_connection(app_server, connect, people, rows):
    client = connect(app_server)
    cases = [
        ("nosuch", None, "method_not_found", "no method 'nosuch'"),
        ("chat.recent", {"room": "lobby"}, "access_denied", "authenticate first"),
        ("whoami", None, "access_denied", "anonymous connections have no identity"),
        ("tests.refuse", None, "try_tomorrow", "not today"),
        ("tests.fail", None, "internal_error", "the method 'tests.fail' failed"),
        ("tests.slow", None, "handler_timeout", "the method 'tests.slow' took more than 1 s"),
        (
            "tests.big",
            2000,
            "internal_error",
            "the result of 'tests.big' is larger than RPC_MAX_RESULT_SIZE (1000 bytes)",
        ),
        (
            "tests.unencodable",
            None,
            "internal_error",
            "the method 'tests.unencodable' returned what JSON cannot encode",
        ),
    ]
    for method, data, code, detail in cases:
        reply = rpc(client, method, data)
        assert (reply.get("err"), reply.get("detail")) == (code, detail), method
    assert rpc(client, "tests.big", 10)["result"] == "x" * 10
    alice = as_user(connect, app_server, people[0])
    assert rpc(alice, "chat.recent", {"room": "nope"})["err"] == "invalid_data"
    for bad in ({"method": ""}, {"method": "a b"}, {"method": 7}, {"data": 1}, "echo"):
        assert client.request("rpc", bad)["err"] == "invalid_data"
    assert client.request("ping")["ok"] is True
    log = app_server.log.read_text()
    assert "a method with a bug" in log


def test_rpc_is_rate_limited_and_size_limited_like_every_frame(strict_server, connect):
    client = connect(strict_server)  # RATE_LIMIT 5/s, burst 10; MAX_MESSAGE_SIZE 1024
    client.send({"rpc": {"method": "echo", "data": "x" * 2000}, "id": 1})
    assert client.recv() == {"err": "message_too_large", "detail": "frames are limited to 1024 bytes"}
    for n in range(30):
        client.send({"rpc": {"method": "echo", "data": n}, "id": 100 + n})
    replies = [client.recv() for _ in range(30)]
    assert {r.get("err") for r in replies if "err" in r} == {"rate_limited"}
    assert [r["result"] for r in replies if r.get("ok")] == list(
        range(len([r for r in replies if r.get("ok")]))
    )


def test_bayeux_service_channels_call_the_same_methods(app_server, people, rows):
    client = LongPolling(app_server)
    assert client.handshake({"token": tokens.issue_token(people[0], "read-only", ["rooms"])[0]})["successful"]
    reply = client.send({"channel": "/service/echo", "data": {"q": 1}})[0]
    assert reply["successful"] is True and reply["data"] == {"q": 1}
    assert client.send({"channel": "/service/tests.whoami", "data": None})[0]["data"]["protocol"] == "bayeux"
    refused = client.publish("/service/tests.refuse", None)
    assert refused["successful"] is False and refused["error"] == "403:/service/tests.refuse:try_tomorrow"
    # A service channel without a method is acknowledged and goes nowhere, as in CometD.
    nothing = client.publish("/service/nosuch", 1)
    assert nothing["successful"] is True and "data" not in nothing
