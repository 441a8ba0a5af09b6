"""Presence with the in-memory store (the embedded default), in process.

Members on several processes, and members of a process that died, are tested in
test_live_presence.py.
"""

import pytest
from django.contrib.auth import get_user_model

from realtime import tokens

pytestmark = pytest.mark.asyncio


@pytest.fixture
def room(make_channel, uid):
    return make_channel(f"presence-{uid}", presence=True, join_leave=True)


@pytest.fixture
def alice(transactional_db, uid):
    return get_user_model().objects.create_user(f"alice-{uid}", password="x")


async def as_user(communicator, user, channel):
    client = await communicator()
    token, _ = tokens.issue_token(user, "read-only", [channel])
    assert (await client.auth(token=token))["ok"] is True
    return client


async def members(client, channel):
    reply = await client.presence(channel)
    assert reply["ok"] is True, reply
    return reply["presence"]["members"]


async def notices(client, kind, count, timeout=None):
    seen = []
    while len(seen) < count:
        frame = await client.next_message(timeout=timeout)
        if kind in frame:
            seen.append(frame[kind])
    return seen


async def test_presence_lists_every_member_and_a_user_with_tabs_once(communicator, amake_key, room, alice):
    tabs = [await as_user(communicator, alice, room.name) for _ in range(2)]
    replies = [await tab.subscribe(room.name) for tab in tabs]
    service = await communicator()
    await service.auth(await amake_key(access="read-only"))
    service_client = (await service.subscribe(room.name))["client"]

    listed = await members(service, room.name)

    user = {"id": alice.pk, "name": alice.username}
    assert {"user": user, "clients": sorted(r["client"] for r in replies)} in listed
    assert {"user": None, "clients": [service_client]} in listed
    assert len(listed) == 2


async def test_join_and_leave_are_announced_once_per_member(communicator, amake_key, room, alice):
    watcher = await communicator()
    await watcher.auth(await amake_key(access="read-only"))
    own = (await watcher.subscribe(room.name))["client"]
    first = await as_user(communicator, alice, room.name)
    await first.subscribe(room.name)
    second = await as_user(communicator, alice, room.name)
    await second.subscribe(room.name)

    mine, join = await notices(watcher, "join", 2)
    assert mine == {"channel": room.name, "client": own, "user": None}
    assert join["channel"] == room.name and join["user"] == {"id": alice.pk, "name": alice.username}
    with pytest.raises(TimeoutError):  # the second tab is no new member
        await notices(watcher, "join", 1, timeout=0.2)
    await second.unsubscribe(room.name)  # alice still has a tab open: no leave
    listed = {m["user"]["id"] if m["user"] else None: m["clients"] for m in await members(watcher, room.name)}
    assert len(listed[alice.pk]) == 1
    await first.close()
    (leave,) = await notices(watcher, "leave", 1)
    assert leave["user"]["id"] == alice.pk
    assert [m["user"] for m in await members(watcher, room.name)] == [None]


async def test_a_member_that_disconnects_or_logs_out_leaves(communicator, amake_key, room):
    watcher, leaving, logging_out = await communicator(), await communicator(), await communicator()
    for client in (watcher, leaving, logging_out):
        await client.auth(await amake_key(access="read-only"))
    await watcher.subscribe(room.name)
    gone = (await leaving.subscribe(room.name))["client"]
    out = (await logging_out.subscribe(room.name))["client"]
    assert len(await notices(watcher, "join", 3)) == 3

    await leaving.disconnect()
    await logging_out.logout()

    assert [leave["client"] for leave in await notices(watcher, "leave", 2)] == [gone, out]
    assert len(await members(watcher, room.name)) == 1


async def test_presence_without_join_and_leave_events_sends_none(communicator, amake_key, amake_channel, uid):
    quiet = (await amake_channel(f"quiet-{uid}", presence=True)).name
    one, two = await communicator(), await communicator()
    for client in (one, two):
        await client.auth(await amake_key(access="read-only"))
    await one.subscribe(quiet)
    await two.subscribe(quiet)
    await two.close()
    with pytest.raises(TimeoutError):
        await one.next_message(timeout=0.2)
    assert len(await members(one, quiet)) == 1


async def test_pattern_subscribers_get_no_join_or_leave_events(communicator, amake_key, amake_channel, uid):
    rooms = await amake_channel(f"rooms-{uid}", include_subchannels=True, presence=True, join_leave=True)
    watcher, member = await communicator(), await communicator()
    await watcher.auth(await amake_key(access="read-only"))
    await member.auth(await amake_key(access="read-only"))
    assert (await watcher.subscribe(f"{rooms.name}/*")) == {"ok": True, "id": 2}
    await member.subscribe(f"{rooms.name}/1")
    await member.unsubscribe(f"{rooms.name}/1")
    with pytest.raises(TimeoutError):
        await watcher.next_message(timeout=0.2)


async def test_presence_is_refused_without_the_option_or_access(communicator, amake_key, amake_channel, uid):
    plain = (await amake_channel(f"plain-{uid}")).name
    scoped, other = await communicator(), await communicator()
    await scoped.auth(await amake_key(access="read-only", channels=[await amake_channel(f"other-{uid}")]))
    await other.auth(await amake_key())
    assert (await scoped.presence(plain))["err"] == "access_denied"
    assert await other.presence(plain) == {
        "err": "presence_disabled",
        "detail": f"'{plain}' has no presence",
        "id": 2,
    }
