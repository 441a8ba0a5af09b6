"""History with offsets, recovery after a reconnect, and the HTTP event log.

Every test runs against real server processes sharing a real Redis (``servers``): the
Redis store, across processes and restarts. The in-memory store, and the error replies,
are tested in process (test_consumer_history.py).
"""

import json
import re
import time
import urllib.error
import urllib.request

import pytest
from django.contrib.auth.models import User
from django.utils.http import parse_http_date

import realtime
from realtime import tokens

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("redis_layer")]


def data_of(client, count, timeout=5):
    frames = [client.next_message(timeout=timeout)["message"] for _ in range(count)]
    return [(frame["offset"], frame["data"]) for frame in frames]


def assert_nothing_more(client):
    with pytest.raises(TimeoutError):
        client.next_message(timeout=0.5)


@pytest.fixture
def history_channel(make_channel, uid):
    return make_channel(f"hist-{uid}", history_size=100)


def test_publications_carry_offsets_that_increase_and_the_reply_says_which(
    servers, connect, make_key, history_channel
):
    reader = connect(servers[0])
    reader.auth(make_key(access="read-only"))
    reply = reader.subscribe(history_channel.name)
    assert reply.get("offset") == 0, reply
    assert reply["offset"] == 0 and len(reply["epoch"]) == 16
    writers = [connect(server) for server in servers]
    for writer in writers:
        writer.auth(make_key())

    acks = [writers[n % 2].publish(history_channel.name, "n", n) for n in range(6)]

    assert [ack["offset"] for ack in acks] == [1, 2, 3, 4, 5, 6]
    assert {ack["epoch"] for ack in acks} == {reply["epoch"]}
    assert data_of(reader, 6) == [(n + 1, n) for n in range(6)]
    frame = reader.history(history_channel.name)["history"]
    assert frame["offset"] == 6 and frame["complete"] is True and frame["next"] is None
    assert [p["data"] for p in frame["publications"]] == list(range(6))
    assert all(p["epoch"] == reply["epoch"] for p in frame["publications"])


@pytest.mark.parametrize("kind", ["exact", "covered", "durable", "presence"])
def test_a_reconnecting_subscriber_gets_exactly_what_it_missed_in_order_then_live_ones(
    servers, connect, make_key, make_channel, uid, kind
):
    if kind == "covered":
        make_channel(f"rooms-{uid}", include_subchannels=True, history_size=50)
        name = f"rooms-{uid}/42"
    else:
        fields = {"history_durable": kind == "durable", "presence": kind == "presence"}
        name = make_channel(f"{kind}-{uid}", history_size=50, **fields).name
    key = make_key(access="read-only")
    writer = connect(servers[1])
    writer.auth(make_key())
    first = connect(servers[0])
    first.auth(key)
    first.subscribe(name)
    writer.publish(name, "n", 0)
    position = first.next_message()["message"]
    first.close()

    for n in range(1, 6):  # published on the other process while it is away
        writer.publish(name, "n", n)
    again = connect(servers[0])
    again.auth(key)
    reply = again.subscribe(name, since={"offset": position["offset"], "epoch": position["epoch"]})
    writer.publish(name, "n", 6)

    assert reply["recovered"] is True and reply["offset"] == 6
    assert data_of(again, 6) == [(n + 1, n) for n in range(1, 7)]
    assert_nothing_more(again)
    if kind == "presence":
        # The reply names this connection as it appears in presence, recovery or not.
        members = again.presence(name)["presence"]["members"]
        assert {"user": None, "clients": [reply["client"]]} in members
    else:
        assert "client" not in reply


def test_recovery_holds_back_live_publications_so_none_is_lost_or_doubled(
    servers, connect, make_key, history_channel
):
    name = history_channel.name
    writer = connect(servers[1])
    writer.auth(make_key())
    epoch = writer.publish(name, "n", 1)["epoch"]
    readers = []
    for server in servers:
        reader = connect(server)
        reader.auth(make_key(access="read-only"))
        readers.append(reader)
    # Publish while the readers subscribe: each publication arrives once, recovered or live.
    for reader in readers:
        reader.send({"subscribe": {"channel": name, "since": {"offset": 0, "epoch": epoch}}, "id": "s"})
    for n in range(2, 41):
        writer.send({"publish": {"channel": name, "event": "n", "data": n}})

    for reader in readers:
        got = []
        while len(got) < 40:
            frame = reader.recv()
            if "message" in frame:
                got.append((frame["message"]["offset"], frame["message"]["data"]))
            else:
                assert frame.get("ok") is True, frame
        assert got == [(n, n) for n in range(1, 41)]
        assert_nothing_more(reader)


def test_a_changed_epoch_or_a_gap_older_than_the_history_is_not_recovered(
    servers, connect, make_key, make_channel, uid
):
    short = make_channel(f"short-{uid}", history_size=3).name
    writer = connect(servers[1])
    writer.auth(make_key())
    acks = [writer.publish(short, "n", n) for n in range(10)]
    reader = connect(servers[0])
    reader.auth(make_key(access="read-only"))

    lost = reader.subscribe(short, since={"offset": 2, "epoch": acks[0]["epoch"]})
    assert lost["recovered"] is False and lost["offset"] == 10
    other = connect(servers[0])
    other.auth(make_key(access="read-only"))
    stale = other.subscribe(short, since={"offset": 9, "epoch": "0123456789abcdef"})
    assert stale["recovered"] is False and stale["epoch"] == acks[0]["epoch"]
    kept = reader.history(short)["history"]
    assert [p["data"] for p in kept["publications"]] == [7, 8, 9]
    assert kept["complete"] is False
    writer.publish(short, "n", 10)
    assert reader.next_message()["message"]["data"] == 10  # live after all
    assert other.next_message()["message"]["data"] == 10


def test_history_pages_with_since_and_limit(servers, connect, make_key, history_channel):
    writer = connect(servers[0])
    writer.auth(make_key())
    for n in range(7):
        writer.publish(history_channel.name, "n", n)

    page = writer.history(history_channel.name, since=0, limit=3)["history"]
    assert [p["offset"] for p in page["publications"]] == [1, 2, 3] and page["next"] == 3
    page = writer.history(history_channel.name, since=page["next"], limit=3)["history"]
    assert [p["offset"] for p in page["publications"]] == [4, 5, 6] and page["next"] == 6
    page = writer.history(history_channel.name, since=6, limit=3)["history"]
    assert [p["offset"] for p in page["publications"]] == [7] and page["next"] is None


def test_history_survives_server_restarts_and_a_flush_changes_the_epoch(
    request, service_dir, redis_server, test_database, connect, make_key, make_channel, uid
):
    from tests.services import AsgiServer

    name = make_channel(f"restart-{uid}", history_size=10).name
    durable = make_channel(f"durable-{uid}", history_size=10, history_durable=True).name
    key = make_key()

    def start():
        server = AsgiServer(service_dir, database=test_database, redis_url=redis_server.url).start()
        request.addfinalizer(server.stop)
        return server

    server = start()
    client = connect(server)
    client.auth(key)
    before = {n: client.publish(n, "n", "kept") for n in (name, durable)}
    server.stop()
    server = start()
    client = connect(server)
    client.auth(key)
    for n in (name, durable):
        page = client.history(n)["history"]
        assert page["epoch"] == before[n]["epoch"]
        assert [p["data"] for p in page["publications"]] == ["kept"]

    redis_server.flush()

    plain_after = client.history(name)["history"]
    assert plain_after["epoch"] != before[name]["epoch"] and plain_after["publications"] == []
    durable_after = client.history(durable)["history"]
    assert durable_after["epoch"] == before[durable]["epoch"]
    assert [p["data"] for p in durable_after["publications"]] == ["kept"]
    assert client.publish(durable, "n", "next")["offset"] == 2


# History lifetime ----------------------------------------------------------------------


@pytest.mark.parametrize("store", ["redis", "durable"])
def test_publications_older_than_the_history_lifetime_are_gone_and_not_recovered(
    server, connect, make_key, make_channel, uid, store
):
    fields = {"history_size": 10, "history_ttl": 2, "history_durable": store == "durable"}
    name = make_channel(f"ttl-{uid}", **fields).name
    key = make_key()
    writer = connect(server)
    writer.auth(key)
    first = writer.publish(name, "n", 1)
    writer.publish(name, "n", 2)
    assert [p["data"] for p in writer.history(name)["history"]["publications"]] == [1, 2]

    time.sleep(2.5)  # past the two-second lifetime

    page = writer.history(name)["history"]
    assert page["publications"] == [] and page["complete"] is False
    assert (page["offset"], page["epoch"]) == (2, first["epoch"])  # numbering goes on
    reader = connect(server)
    reader.auth(key)
    reply = reader.subscribe(name, since={"offset": first["offset"], "epoch": first["epoch"]})
    assert reply["recovered"] is False
    assert (reply["offset"], reply["epoch"]) == (2, first["epoch"])
    assert_nothing_more(reader)


def test_a_durable_history_restored_after_a_flush_leaves_out_what_outlived_its_lifetime(
    server, redis_server, connect, make_key, make_channel, uid
):
    name = make_channel(f"ttl-durable-{uid}", history_size=10, history_ttl=2, history_durable=True).name
    client = connect(server)
    client.auth(make_key())
    old = client.publish(name, "n", "old")
    time.sleep(2.5)  # "old" outlives the two-second lifetime, in Redis and in the database
    client.publish(name, "n", "new")

    redis_server.flush()  # the stream comes back from the database

    page = client.history(name)["history"]
    assert (page["offset"], page["epoch"]) == (2, old["epoch"])
    assert [p["data"] for p in page["publications"]] == ["new"]
    assert page["complete"] is False


# The HTTP event log ------------------------------------------------------------------


# An HTTP date as RFC 9110 says to send it: "Sun, 06 Nov 1994 08:49:37 GMT".
IMF_FIXDATE = r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT"


def get(server, path, headers=None):
    req = urllib.request.Request(server.http_url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_the_http_log_pages_with_etags_and_next_links(servers, connect, make_key, history_channel):
    key = make_key()
    writer = connect(servers[0])
    writer.auth(key)
    for n in range(5):
        writer.publish(history_channel.name, "n", n)
    auth = {"Authorization": f"Bearer {key}"}
    path = f"/realtime/log/{history_channel.name}?since=0&limit=3"

    status, headers, body = get(servers[1], path, auth)
    assert status == 200
    page = json.loads(body)
    assert [p["data"] for p in page["publications"]] == [0, 1, 2] and page["next"] == 3
    # The next page names the epoch, so that it can be cached for good once full.
    assert headers["Link"] == (
        f'</realtime/log/{history_channel.name}?since=3&limit=3&epoch={page["epoch"]}>; rel="next"'
    )
    assert "Last-Modified" in headers and headers["Cache-Control"] == "private, no-cache"
    status, _, body = get(servers[1], path, {**auth, "If-None-Match": headers["ETag"]})
    assert status == 304 and body == b""
    last = json.loads(get(servers[0], f"/realtime/log/{history_channel.name}?since=3", auth)[2])
    assert [p["data"] for p in last["publications"]] == [3, 4] and last["next"] is None


def test_the_http_log_needs_credentials_unless_the_channel_is_public(
    servers, make_key, make_channel, uid, history_channel
):
    public = make_channel(f"public-{uid}", history_size=5, anonymous_read=True).name
    plain = make_channel(f"plain-{uid}").name

    assert get(servers[0], f"/realtime/log/{history_channel.name}")[0] == 401
    assert get(servers[0], f"/realtime/log/{public}")[0] == 200
    bad = {"Authorization": "Bearer rt_nope"}
    assert get(servers[0], f"/realtime/log/{history_channel.name}", bad)[0] == 401
    reader = {"Authorization": f"Bearer {make_key(access='read-only')}"}
    assert get(servers[0], f"/realtime/log/{plain}", reader)[0] == 404
    status, _, body = get(servers[0], f"/realtime/log/{history_channel.name}?limit=0", reader)
    assert status == 400 and json.loads(body)["err"] == "invalid_data"


def test_the_http_log_accepts_a_signed_browser_token_for_the_channels_it_names(
    servers, make_channel, uid, history_channel
):
    user = User.objects.create_user(f"reader-{uid}")
    realtime.publish(history_channel.name, "n", "for the token")
    other = make_channel(f"elsewhere-{uid}", history_size=5).name
    token, _ = tokens.issue_token(user, "read-only", [history_channel.name])
    bearer = {"Authorization": f"Bearer {token}"}

    status, _, body = get(servers[1], f"/realtime/log/{history_channel.name}", bearer)
    assert status == 200
    assert [p["data"] for p in json.loads(body)["publications"]] == ["for the token"]
    status, _, body = get(servers[1], f"/realtime/log/{other}", bearer)
    assert status == 403 and json.loads(body)["err"] == "access_denied"
    forged = {"Authorization": f"Bearer {token[:-4]}abcd"}
    assert get(servers[1], f"/realtime/log/{history_channel.name}", forged)[0] == 401


def test_the_http_log_etag_and_last_modified_follow_new_publications(servers, make_key, history_channel):
    auth = {"Authorization": f"Bearer {make_key(access='read-only')}"}
    path = f"/realtime/log/{history_channel.name}"
    realtime.publish(history_channel.name, "n", 1)
    _, before, _ = get(servers[0], path, auth)
    time.sleep(1.1)  # Last-Modified counts whole seconds

    realtime.publish(history_channel.name, "n", 2)

    status, after, body = get(servers[0], path, auth)
    assert status == 200 and [p["data"] for p in json.loads(body)["publications"]] == [1, 2]
    assert after["ETag"] != before["ETag"]
    assert parse_http_date(after["Last-Modified"]) > parse_http_date(before["Last-Modified"])
    assert re.fullmatch(IMF_FIXDATE, after["Last-Modified"]), after["Last-Modified"]
    status, _, body = get(servers[0], path, {**auth, "If-None-Match": before["ETag"]})
    assert status == 200 and [p["data"] for p in json.loads(body)["publications"]] == [1, 2]
    status, revalidated, body = get(servers[0], path, {**auth, "If-None-Match": after["ETag"]})
    assert (status, body) == (304, b"")
    assert revalidated["ETag"] == after["ETag"]
