"""History, offsets and recovery with the in-memory store (the embedded default), in process.

The Redis store, across processes and restarts, is tested in test_live_history.py.
"""

import asyncio

import pytest

pytestmark = pytest.mark.asyncio


@pytest.fixture
def history_channel(make_channel, uid):
    return make_channel(f"hist-{uid}", history_size=100)


async def data_of(client, count):
    frames = [(await client.next_message())["message"] for _ in range(count)]
    return [(frame["offset"], frame["data"]) for frame in frames]


async def assert_nothing_more(client):
    with pytest.raises(TimeoutError):
        await client.next_message(timeout=0.2)


async def test_publications_carry_offsets_that_increase_and_the_reply_says_which(
    communicator, amake_key, history_channel
):
    reader, writer = await communicator(), await communicator()
    await reader.auth(await amake_key(access="read-only"))
    await writer.auth(await amake_key())
    reply = await reader.subscribe(history_channel.name)
    assert reply["offset"] == 0 and len(reply["epoch"]) == 16

    acks = [await writer.publish(history_channel.name, "n", n) for n in range(6)]

    assert [ack["offset"] for ack in acks] == [1, 2, 3, 4, 5, 6]
    assert {ack["epoch"] for ack in acks} == {reply["epoch"]}
    assert await data_of(reader, 6) == [(n + 1, n) for n in range(6)]
    page = (await reader.history(history_channel.name))["history"]
    assert page["offset"] == 6 and page["complete"] is True and page["next"] is None
    assert [p["data"] for p in page["publications"]] == list(range(6))
    assert all(p["epoch"] == reply["epoch"] for p in page["publications"])


@pytest.mark.parametrize("kind", ["exact", "covered", "durable", "presence"])
async def test_a_reconnecting_subscriber_gets_exactly_what_it_missed_in_order_then_live_ones(
    communicator, amake_key, amake_channel, uid, kind
):
    if kind == "covered":
        await amake_channel(f"rooms-{uid}", include_subchannels=True, history_size=50)
        name = f"rooms-{uid}/42"
    else:
        fields = {"history_durable": kind == "durable", "presence": kind == "presence"}
        name = (await amake_channel(f"{kind}-{uid}", history_size=50, **fields)).name
    key = await amake_key(access="read-only")
    writer = await communicator()
    await writer.auth(await amake_key())
    first = await communicator()
    await first.auth(key)
    await first.subscribe(name)
    await writer.publish(name, "n", 0)
    position = (await first.next_message())["message"]
    await first.close()

    for n in range(1, 6):  # published while it is away
        await writer.publish(name, "n", n)
    again = await communicator()
    await again.auth(key)
    reply = await again.subscribe(name, since={"offset": position["offset"], "epoch": position["epoch"]})
    await writer.publish(name, "n", 6)

    assert reply["recovered"] is True and reply["offset"] == 6
    assert await data_of(again, 6) == [(n + 1, n) for n in range(1, 7)]
    await assert_nothing_more(again)
    if kind == "presence":
        # The reply names this connection as it appears in presence, recovery or not.
        members = (await again.presence(name))["presence"]["members"]
        assert {"user": None, "clients": [reply["client"]]} in members
    else:
        assert "client" not in reply


async def test_publications_made_while_subscribing_arrive_once_recovered_or_live(
    communicator, amake_key, history_channel
):
    name = history_channel.name
    writer, reader = await communicator(), await communicator()
    await writer.auth(await amake_key())
    await reader.auth(await amake_key(access="read-only"))
    epoch = (await writer.publish(name, "n", 1))["epoch"]

    await reader.send({"subscribe": {"channel": name, "since": {"offset": 0, "epoch": epoch}}, "id": "s"})
    for n in range(2, 41):
        await writer.send({"publish": {"channel": name, "event": "n", "data": n}})

    got = []
    while len(got) < 40:
        frame = await reader.recv()
        if "message" in frame:
            got.append((frame["message"]["offset"], frame["message"]["data"]))
        else:
            assert frame["ok"] is True and frame["id"] == "s", frame
    assert got == [(n, n) for n in range(1, 41)]
    await assert_nothing_more(reader)


async def test_a_changed_epoch_or_a_gap_older_than_the_history_is_not_recovered(
    communicator, amake_key, amake_channel, uid
):
    short = (await amake_channel(f"short-{uid}", history_size=3)).name
    writer = await communicator()
    await writer.auth(await amake_key())
    acks = [await writer.publish(short, "n", n) for n in range(10)]
    reader, other = await communicator(), await communicator()
    await reader.auth(await amake_key(access="read-only"))
    await other.auth(await amake_key(access="read-only"))

    lost = await reader.subscribe(short, since={"offset": 2, "epoch": acks[0]["epoch"]})
    stale = await other.subscribe(short, since={"offset": 9, "epoch": "0123456789abcdef"})

    assert lost["recovered"] is False and lost["offset"] == 10
    assert stale["recovered"] is False and stale["epoch"] == acks[0]["epoch"]
    kept = (await reader.history(short))["history"]
    assert [p["data"] for p in kept["publications"]] == [7, 8, 9]
    assert kept["complete"] is False
    await writer.publish(short, "n", 10)
    assert (await reader.next_message())["message"]["data"] == 10  # live after all
    assert (await other.next_message())["message"]["data"] == 10


async def test_since_on_a_channel_without_history_is_not_recovered_but_subscribes(
    communicator, amake_key, amake_channel, uid
):
    plain = (await amake_channel(f"plain-{uid}")).name
    client = await communicator()
    await client.auth(await amake_key())
    assert await client.subscribe(plain, since={"offset": 3, "epoch": "0123456789abcdef"}) == {
        "ok": True,
        "id": 2,
        "recovered": False,
    }
    await client.publish(plain, "e", "live")
    assert (await client.next_message())["message"]["data"] == "live"


async def test_history_pages_with_since_and_limit(communicator, amake_key, history_channel):
    client = await communicator()
    await client.auth(await amake_key())
    for n in range(7):
        await client.publish(history_channel.name, "n", n)

    page = (await client.history(history_channel.name, since=0, limit=3))["history"]
    assert [p["offset"] for p in page["publications"]] == [1, 2, 3] and page["next"] == 3
    page = (await client.history(history_channel.name, since=page["next"], limit=3))["history"]
    assert [p["offset"] for p in page["publications"]] == [4, 5, 6] and page["next"] == 6
    page = (await client.history(history_channel.name, since=6, limit=3))["history"]
    assert [p["offset"] for p in page["publications"]] == [7] and page["next"] is None


async def test_history_in_another_epoch_is_empty_and_incomplete(communicator, amake_key, history_channel):
    client = await communicator()
    await client.auth(await amake_key())
    await client.publish(history_channel.name, "n", 1)
    page = (await client.history(history_channel.name, epoch="0123456789abcdef"))["history"]
    assert page["publications"] == [] and page["complete"] is False and page["offset"] == 1


async def test_history_is_refused_where_the_channel_keeps_none_or_the_key_may_not_read(
    communicator, amake_key, amake_channel, uid, history_channel
):
    plain = (await amake_channel(f"plain-{uid}")).name
    elsewhere = await amake_channel(f"other-{uid}")
    scoped, anonymous, other = await communicator(), await communicator(), await communicator()
    await scoped.auth(await amake_key(access="read-only", channels=[elsewhere]))
    await other.auth(await amake_key())

    assert (await scoped.history(history_channel.name))["err"] == "access_denied"
    assert (await anonymous.history(history_channel.name))["err"] == "access_denied"
    assert await other.history(plain) == {
        "err": "history_disabled",
        "detail": f"'{plain}' keeps no history",
        "id": 2,
    }
    assert (await other.history(history_channel.name, epoch="x" * 65))["err"] == "invalid_data"
    assert (await other.history(history_channel.name, limit=0))["err"] == "invalid_data"
    assert (await other.history(history_channel.name, limit=1001))["err"] == "invalid_data"
    reply = await other.request("subscribe", {"channel": "x/*", "since": {"offset": 1, "epoch": "e"}})
    assert reply["err"] == "invalid_data"


async def test_history_of_a_channel_open_to_anonymous_readers_needs_no_credentials(
    communicator, amake_key, amake_channel, uid
):
    public = (await amake_channel(f"public-{uid}", history_size=5, anonymous_read=True)).name
    writer, anonymous = await communicator(), await communicator()
    await writer.auth(await amake_key())
    await writer.publish(public, "n", "for everyone")
    page = (await anonymous.history(public))["history"]
    assert [p["data"] for p in page["publications"]] == ["for everyone"]


async def test_publications_older_than_the_history_lifetime_are_gone_and_not_recovered(
    communicator, amake_key, amake_channel, uid
):
    name = (await amake_channel(f"ttl-{uid}", history_size=10, history_ttl=1)).name
    key = await amake_key()
    writer = await communicator()
    await writer.auth(key)
    first = await writer.publish(name, "n", 1)
    await writer.publish(name, "n", 2)
    assert [p["data"] for p in (await writer.history(name))["history"]["publications"]] == [1, 2]

    await asyncio.sleep(1.2)  # past the one-second lifetime

    page = (await writer.history(name))["history"]
    assert page["publications"] == [] and page["complete"] is False
    assert (page["offset"], page["epoch"]) == (2, first["epoch"])  # numbering goes on
    reader = await communicator()
    await reader.auth(key)
    reply = await reader.subscribe(name, since={"offset": first["offset"], "epoch": first["epoch"]})
    assert reply["recovered"] is False
    assert (reply["offset"], reply["epoch"]) == (2, first["epoch"])
    await assert_nothing_more(reader)
