"""Presence: who is subscribed, across processes, with join and leave events."""

import time

import pytest
from django.contrib.auth import get_user_model

from realtime import tokens

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("redis_layer")]


@pytest.fixture
def room(make_channel, uid):
    return make_channel(f"presence-{uid}", presence=True, join_leave=True)


@pytest.fixture
def alice(transactional_db, uid):
    return get_user_model().objects.create_user(f"alice-{uid}", password="x")


def as_user(connect, server, user, channel):
    client = connect(server)
    assert client.request("auth", {"token": tokens.issue_token(user, "read-only", [channel])[0]})["ok"]
    return client


def members(client, channel):
    reply = client.presence(channel)
    assert reply["ok"] is True, reply
    return reply["presence"]["members"]


def notices(client, kind, count, timeout=5):
    seen = []
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        frame = client.next_message(timeout=max(0.1, deadline - time.monotonic()))
        if kind in frame:
            seen.append(frame[kind])
    return seen


def test_presence_lists_every_member_across_processes_and_a_user_with_tabs_once(
    servers, connect, make_key, room, alice
):
    tabs = [as_user(connect, server, alice, room.name) for server in servers]
    replies = [tab.subscribe(room.name) for tab in tabs]
    service = connect(servers[1])
    service.auth(make_key(access="read-only"))
    service_client = service.subscribe(room.name)["client"]

    listed = members(service, room.name)

    user = {"id": alice.pk, "name": alice.username}
    assert {"user": user, "clients": sorted(r["client"] for r in replies)} in listed
    assert {"user": None, "clients": [service_client]} in listed
    assert len(listed) == 2


def test_join_and_leave_are_announced_once_per_member(servers, connect, make_key, room, alice):
    watcher = connect(servers[0])
    watcher.auth(make_key(access="read-only"))
    own = watcher.subscribe(room.name)["client"]
    first = as_user(connect, servers[1], alice, room.name)
    first.subscribe(room.name)
    second = as_user(connect, servers[0], alice, room.name)
    second.subscribe(room.name)

    mine, join = notices(watcher, "join", 2)
    assert mine == {"channel": room.name, "client": own, "user": None}
    assert join["channel"] == room.name and join["user"]["id"] == alice.pk
    with pytest.raises(TimeoutError):  # the second tab is no new member
        notices(watcher, "join", 1, timeout=0.7)
    second.unsubscribe(room.name)  # alice still has a tab open: no leave
    listed = {m["user"]["id"] if m["user"] else None: m["clients"] for m in members(watcher, room.name)}
    assert len(listed[alice.pk]) == 1
    first.close()
    (leave,) = notices(watcher, "leave", 1)
    assert leave["user"]["id"] == alice.pk
    assert [m["user"] for m in members(watcher, room.name)] == [None]


def test_members_of_a_killed_process_expire_and_leave(
    request, service_dir, redis_server, test_database, servers, connect, make_key, room
):
    from tests.services import AsgiServer

    doomed = AsgiServer(
        service_dir, database=test_database, redis_url=redis_server.url, realtime={"PRESENCE_TTL": 3}
    ).start()
    request.addfinalizer(doomed.stop)
    watcher = connect(servers[0])
    watcher.auth(make_key(access="read-only"))
    watcher.subscribe(room.name)
    ghost = connect(doomed)
    ghost.auth(make_key(access="read-only"))
    ghost_id = ghost.subscribe(room.name)["client"]
    assert ghost_id in [c for m in members(watcher, room.name) for c in m["clients"]]

    doomed.process.kill()  # no goodbye

    (leave,) = notices(watcher, "leave", 1, timeout=10)
    assert leave["client"] == ghost_id
    assert ghost_id not in [c for m in members(watcher, room.name) for c in m["clients"]]
