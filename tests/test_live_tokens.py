"""Browser tokens over a live connection: who published travels with the publication."""

import pytest
from django.contrib.auth.models import AnonymousUser, User

from realtime import tokens
from tests.matchers import SERVER_TIME

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("redis_layer")]


@pytest.fixture
def users(transactional_db, uid):
    return [User.objects.create_user(f"{name}-{uid}") for name in ("alice", "bob")]


def test_token_user_publishes_and_subscribers_see_who_sent_it(servers, connect, users, make_channel, uid):
    room = make_channel(f"rooms-{uid}", include_subchannels=True)
    alice, bob = users
    a, b = connect(servers[0]), connect(servers[1])
    assert a.request("auth", {"token": tokens.issue_token(alice, "read-write", [room.name])[0]})["ok"]
    assert b.request("auth", {"token": tokens.issue_token(bob, "read-only", [room.name])[0]})["ok"]
    b.subscribe(f"{room.name}/lobby")

    a.publish(f"{room.name}/lobby", "chat", {"text": "hi", "user": {"id": 0, "name": "forged"}})

    assert b.next_message()["message"] == {
        "channel": f"{room.name}/lobby",
        "event": "chat",
        "data": {"text": "hi", "user": {"id": 0, "name": "forged"}},
        "user": {"id": alice.pk, "name": alice.username},
        "time": SERVER_TIME,
    }
    assert b.publish(f"{room.name}/lobby", "chat", 1)["err"] == "access_denied"


def test_token_scope_is_by_channel_name(server, connect, users, make_channel, uid):
    room, other = make_channel(f"rooms-{uid}", include_subchannels=True), make_channel(f"other-{uid}")
    client = connect(server)
    client.request("auth", {"token": tokens.issue_token(users[0], "read-write", [room.name])[0]})
    assert client.subscribe(f"{room.name}/42")["ok"] is True
    assert client.subscribe(other.name)["err"] == "access_denied"


def test_expired_or_tampered_token_is_invalid_credentials(server, connect, users):
    client = connect(server)
    expired, _ = tokens.issue_token(users[0], ttl=-1)
    assert client.request("auth", {"token": expired})["err"] == "invalid_credentials"
    assert client.request("auth", {"token": expired[:-3] + "abc"})["err"] == "invalid_credentials"


def test_anonymous_token_publications_carry_no_user(server, connect, make_channel, uid):
    news = make_channel(f"news-{uid}")
    client = connect(server)
    client.request("auth", {"token": tokens.issue_token(AnonymousUser(), "read-write", [news.name])[0]})
    client.subscribe(news.name)
    client.publish(news.name, "e", 1)
    assert client.next_message() == {
        "message": {"channel": news.name, "event": "e", "data": 1, "time": SERVER_TIME}
    }


def test_deactivating_the_user_logs_out_their_connections(server, connect, users):
    client = connect(server)
    client.request("auth", {"token": tokens.issue_token(users[0])[0]})
    User.objects.filter(pk=users[0].pk).update(is_active=False)
    assert client.next_message(timeout=6) == {"logout": {"reason": "user_inactive"}}


def test_ping_replies_ok(server, connect):
    client = connect(server)
    assert client.request("ping") == {"ok": True, "id": 1}
