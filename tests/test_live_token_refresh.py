"""Tokens whose authentication ends on live connections, refreshed without reconnecting (docs/hooks.md)."""

import time

import pytest
from django.contrib.auth.models import User
from django.db import transaction

import realtime
from realtime import tokens

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("redis_layer")]


@pytest.fixture
def people(transactional_db, uid):
    return [User.objects.create_user(f"{name}-{uid}") for name in ("alice", "bob")]


@pytest.fixture
def rows(make_channel, uid):
    return make_channel(f"rooms-{uid}", include_subchannels=True).name, make_channel(f"news-{uid}").name


def token(user, channels, session_ttl, access="read-only"):
    return tokens.issue_token(user, access, channels, session_ttl=session_ttl)[0]


def frames_until(client, check, timeout=8.0):
    seen = []
    deadline = time.monotonic() + timeout
    while not any(check(frame) for frame in seen):
        seen.append(client.next_message(timeout=max(0.05, deadline - time.monotonic())))
    return seen


def test_a_token_says_when_its_authentication_ends_and_then_the_connection_is_told(
    servers, connect, people, rows
):
    rooms, news = rows
    client = connect(servers[0])
    before = time.time()
    reply = client.request("auth", {"token": token(people[0], [rooms, news], session_ttl=2)})
    assert reply["ok"] is True and before + 1 <= reply["expires"] <= before + 3
    assert client.subscribe(f"{rooms}/1")["ok"] is True

    (notice,) = frames_until(client, lambda frame: "logout" in frame)
    assert notice == {"logout": {"reason": "token_expired"}}
    # Anonymous now, with no subscriptions.
    assert client.publish(f"{rooms}/1", "e", 1)["detail"] == "authenticate first"
    assert client.subscribe(news)["detail"] == "authenticate first"
    realtime.publish(f"{rooms}/1", "e", "after")
    with pytest.raises(TimeoutError):
        client.next_message(timeout=0.5)
    # A token whose session has ended cannot start another.
    stale = token(people[0], [rooms], session_ttl=-1)
    assert client.request("auth", {"token": stale})["err"] == "invalid_credentials"


def test_refresh_renews_the_authentication_on_the_live_connection(servers, connect, people, rows):
    rooms, _ = rows
    client = connect(servers[1])
    assert client.request("auth", {"token": token(people[0], [rooms], session_ttl=2)})["ok"] is True
    assert client.subscribe(f"{rooms}/1")["ok"] is True
    assert client.subscribe(f"{rooms}/*")["ok"] is True

    later = time.time() + 30
    reply = client.request("refresh", {"token": token(people[0], [rooms], session_ttl=30)})
    assert reply["ok"] is True and later - 1 <= reply["expires"] <= later + 1

    time.sleep(2.5)  # past the first token's end: nothing happens
    realtime.publish(f"{rooms}/1", "e", "still here")
    realtime.publish(f"{rooms}/2", "e", "and here")
    got = [client.next_message(timeout=5) for _ in range(2)]
    assert [frame["message"]["data"] for frame in got] == ["still here", "and here"]
    assert client.request("ping")["ok"] is True


def test_a_narrower_token_ends_the_subscriptions_it_no_longer_covers(servers, connect, people, rows):
    rooms, news = rows
    client = connect(servers[0])
    assert client.request("auth", {"token": token(people[0], [rooms, news], session_ttl=60)})["ok"] is True
    for name in (f"{rooms}/1", news, f"{rooms}/*"):
        assert client.subscribe(name)["ok"] is True

    reply = client.request("refresh", {"token": token(people[0], [rooms], session_ttl=60)})

    assert reply["ok"] is True
    assert client.pending.popleft() == {"unsubscribed": {"channel": news, "reason": "access_revoked"}}
    assert not client.pending
    realtime.publish(news, "e", "gone")
    realtime.publish(f"{rooms}/1", "e", "kept")
    assert client.next_message(timeout=5)["message"]["data"] == "kept"


def test_refresh_is_for_the_same_user_on_a_token_connection(servers, connect, people, rows, make_key):
    rooms, _ = rows
    alice, bob = people
    client = connect(servers[0])
    assert client.request("refresh", {"token": token(alice, [rooms], 60)})["detail"] == (
        "refresh renews a token's authentication; authenticate with a token first"
    )
    assert client.request("auth", {"token": token(alice, [rooms], 60)})["ok"] is True
    other = client.request("refresh", {"token": token(bob, [rooms], 60)})
    assert other["err"] == "invalid_credentials"
    assert client.request("refresh", {"token": "forged"})["err"] == "invalid_credentials"
    assert client.request("refresh", {"token": ""})["err"] == "invalid_data"
    # Still alice, still subscribed as before.
    assert client.subscribe(f"{rooms}/1")["ok"] is True

    keyed = connect(servers[0])
    keyed.auth(make_key())
    assert keyed.request("refresh", {"token": token(alice, [rooms], 60)})["err"] == "access_denied"


def test_a_token_without_a_session_end_stays_authenticated_as_before(servers, connect, people, rows):
    rooms, _ = rows
    client = connect(servers[0])
    reply = client.request("auth", {"token": tokens.issue_token(people[0], "read-only", [rooms])[0]})
    assert reply == {"ok": True, "id": reply["id"]}  # no "expires": it does not end


# Publish on commit ---------------------------------------------------------------------------


def test_publish_on_commit_waits_for_the_transaction_and_never_comes_after_a_rollback(
    servers, connect, make_key, rows
):
    _, news = rows
    listener = connect(servers[1])
    listener.auth(make_key(access="read-only"))
    assert listener.subscribe(news)["ok"] is True

    with transaction.atomic():
        assert realtime.publish(news, "e", "committed", on_commit=True) is None
        with pytest.raises(TimeoutError):  # not while the transaction is open
            listener.next_message(timeout=0.7)
    assert listener.next_message(timeout=5)["message"]["data"] == "committed"

    with pytest.raises(RuntimeError), transaction.atomic():
        realtime.publish(news, "e", "rolled back", on_commit=True)
        raise RuntimeError("roll back")
    realtime.publish(news, "e", "marker")  # outside a transaction: at once
    assert listener.next_message(timeout=5)["message"]["data"] == "marker"
