"""Browser tokens over a live connection: who published travels with the publication."""

import pytest
from django.contrib.auth.models import User

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


def test_deactivating_the_user_logs_out_their_connections(server, connect, users):
    client = connect(server)
    client.request("auth", {"token": tokens.issue_token(users[0])[0]})
    User.objects.filter(pk=users[0].pk).update(is_active=False)
    assert client.next_message(timeout=6) == {"logout": {"reason": "user_inactive"}}
