"""Lifecycle signals on real server processes: per connection, and once per cluster (docs/hooks.md).

The receivers are tests/hooks_support.py's, connected in the servers by its app; they
write what they received to Redis, where these tests read it.
"""

import json
import time

import pytest
from django.contrib.auth.models import User
from websockets.exceptions import ConnectionClosed

import realtime
from realtime import tokens
from tests.bayeux.wire import LongPolling
from tests.hooks_support import APPS, Recorded
from tests.services import AsgiServer

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("redis_layer")]


@pytest.fixture(scope="module")
def hook_servers(request, service_dir, redis_server, test_database):
    """A daphne and a uvicorn process with the test receivers, sharing one Redis."""
    settings = {"SIGNAL_TIMEOUT": 1, "PRESENCE_TTL": 3, "REVALIDATE_INTERVAL": 2}
    started = []
    for kind in ("daphne", "uvicorn"):
        server = AsgiServer(
            service_dir,
            database=test_database,
            redis_url=redis_server.url,
            realtime=settings,
            server=kind,
            env={"REALTIME_TEST_APPS": json.dumps(APPS)},
        ).start()
        request.addfinalizer(server.stop)
        started.append(server)
    return started


@pytest.fixture
def recorded(redis_server):
    recorded = Recorded(redis_server.url)
    recorded.clear()
    return recorded


def signals_of(recorded, client, expected_last, timeout=10.0):
    """The names of the signals recorded for ``client``, once ``expected_last`` is among them."""
    deadline = time.monotonic() + timeout
    while True:
        events = recorded.events(client=client)
        names = [event["signal"] for event in events]
        if expected_last in names or time.monotonic() > deadline:
            return events


def test_a_connections_life_is_told_in_order_with_its_arguments(
    hook_servers, connect, make_key, make_channel, recorded, uid
):
    news = make_channel(f"news-{uid}").name
    client = connect(hook_servers[1])  # uvicorn: it passes the client's close reason on
    client.auth(make_key(access="read-only"))
    me = client.subscribe(f"{news}")  # no presence: the reply has no client id
    assert me["ok"] is True
    client.unsubscribe(news)
    client.subscribe(news)
    client.ws.close(4100, "bye")

    # The connection's public id is in the first event; every later one names it too.
    (connected,) = recorded.wait_for(signal="connected", path="/realtime/ws", timeout=10)[-1:]
    events = signals_of(recorded, connected["client"], "disconnected")
    # The plain receiver runs in Django's sync thread, beside the async ones.
    assert [e["signal"] for e in events].count("connected.sync") == 1
    events = [e for e in events if e["signal"] != "connected.sync"]
    assert [(e["signal"], e.get("channel"), e.get("reason")) for e in events] == [
        ("connected", None, None),
        ("authenticated", None, None),
        ("subscribed", news, None),
        ("unsubscribed", news, "client"),
        ("subscribed", news, None),
        ("unsubscribed", news, "closed"),
        ("disconnected", None, "bye"),
    ]
    assert {e["sender"] for e in events if "sender" in e} == {"RealtimeConsumer"}
    assert {e["protocol"] for e in events if "protocol" in e} == {"native"}
    assert events[1]["key_id"] is not None and events[1]["refreshed"] is False
    assert events[-1]["code"] == 4100


def test_a_server_that_closes_says_so_with_its_close_code(hook_servers, connect, recorded):
    client = connect(hook_servers[0])
    for _ in range(10):  # MAX_INVALID_FRAMES
        client.send_raw("not json")
    with pytest.raises(ConnectionClosed):
        while True:
            client.recv(timeout=5)
    assert client.close_code == 4001
    (disconnected,) = recorded.wait_for(signal="disconnected", code=4001)
    assert disconnected["reason"] == "too_many_invalid_frames"


def test_without_a_reason_from_the_server_a_client_close_says_client(hook_servers, connect, recorded):
    client = connect(hook_servers[0])  # daphne passes no close reason on
    assert client.request("ping")["ok"] is True
    client.ws.close(4100, "bye")
    (disconnected,) = recorded.wait_for(signal="disconnected", code=4100)
    assert disconnected["reason"] == "client"


def test_a_receiver_that_raises_or_dawdles_never_stalls_delivery(
    hook_servers, connect, make_key, make_channel, recorded, uid
):
    explode, slow = make_channel(f"explode-{uid}").name, make_channel(f"slow-{uid}").name
    client = connect(hook_servers[0])
    client.auth(make_key(access="read-only"))
    assert client.subscribe(explode)["ok"] is True
    assert client.subscribe(slow)["ok"] is True  # a receiver now sleeps 30 s on this one

    for n in range(20):
        realtime.publish(slow if n % 2 else explode, "n", n)
    got = [client.next_message(timeout=5)["message"]["data"] for _ in range(20)]
    assert got == list(range(20))
    assert client.request("ping")["ok"] is True

    # The slow receivers were abandoned after SIGNAL_TIMEOUT (1 s): later signals are sent.
    client.unsubscribe(slow)
    unsubscribed = recorded.wait_for(signal="unsubscribed", channel=slow, reason="client")
    assert len(unsubscribed) == 1
    log = hook_servers[0].log.read_text()
    assert "a receiver that fails, on " + explode in log
    assert "took more than SIGNAL_TIMEOUT" in log


@pytest.fixture
def people(transactional_db, uid):
    return [User.objects.create_user(f"{name}-{uid}") for name in ("alice", "bob")]


def as_user(connect, server, user, channel):
    client = connect(server)
    assert client.request("auth", {"token": tokens.issue_token(user, "read-only", [channel])[0]})["ok"]
    return client


def test_occupied_vacated_joined_and_left_fire_once_for_the_whole_cluster(
    hook_servers, connect, make_channel, people, recorded, uid
):
    room = make_channel(f"presence-{uid}", presence=True).name
    alice, bob = people
    alice_here = as_user(connect, hook_servers[0], alice, room)
    alice_there = as_user(connect, hook_servers[1], alice, room)
    bob_there = as_user(connect, hook_servers[1], bob, room)
    for client in (alice_here, alice_there, bob_there):
        assert client.subscribe(room)["ok"] is True

    assert len(recorded.wait_for(2, signal="member_joined", channel=room)) == 2
    alice_here.close()
    alice_there.unsubscribe(room)  # alice's last connection: she leaves
    bob_there.close()
    assert len(recorded.wait_for(1, signal="channel_vacated", channel=room)) == 1
    time.sleep(1)  # anything a second process would have added by now

    events = recorded.events(channel=room)
    cluster = [
        e
        for e in events
        if e["signal"] in ("channel_occupied", "channel_vacated", "member_joined", "member_left")
    ]
    assert [e["signal"] for e in cluster if e["signal"].startswith("channel")] == [
        "channel_occupied",
        "channel_vacated",
    ]
    joined = sorted(e["member"]["user"]["id"] for e in cluster if e["signal"] == "member_joined")
    left = sorted(e["member"]["user"]["id"] for e in cluster if e["signal"] == "member_left")
    assert joined == left == sorted([alice.pk, bob.pk])
    assert {e["sender"] for e in cluster} == {"Hub"}
    # Announced by the process whose presence update made the change, wherever that was.
    assert {e["pid"] for e in cluster} <= {server.process.pid for server in hook_servers}


def test_a_process_that_dies_leaves_its_members_and_the_cluster_hears_it_once(
    request,
    service_dir,
    redis_server,
    test_database,
    hook_servers,
    connect,
    make_key,
    make_channel,
    recorded,
    uid,
):
    room = make_channel(f"presence-{uid}", presence=True).name
    doomed = AsgiServer(
        service_dir, database=test_database, redis_url=redis_server.url, realtime={"PRESENCE_TTL": 3}
    ).start()
    request.addfinalizer(doomed.stop)
    ghost = connect(doomed)
    ghost.auth(make_key(access="read-only"))
    ghost_id = ghost.subscribe(room)["client"]
    watcher = connect(hook_servers[0])
    watcher.auth(make_key(access="read-only"))
    watcher_id = watcher.subscribe(room)["client"]

    doomed.process.kill()  # no goodbye: its entry expires, and the watcher's process sweeps it
    (gone,) = recorded.wait_for(1, timeout=20, signal="member_left", channel=room)
    assert gone["member"] == {"client": ghost_id, "user": None}
    assert recorded.events(signal="channel_vacated", channel=room) == []
    watcher.close()

    (vacated,) = recorded.wait_for(1, signal="channel_vacated", channel=room)
    assert vacated["pid"] == hook_servers[0].process.pid
    left = recorded.events(signal="member_left", channel=room)
    assert [e["member"]["client"] for e in left] == [ghost_id, watcher_id]


def test_a_bayeux_session_is_a_connection_too(hook_servers, make_key, make_channel, recorded, uid):
    channel = make_channel(f"bayeux-{uid}").name
    client = LongPolling(hook_servers[1])
    assert client.handshake({"secret": make_key(access="read-only")})["successful"] is True
    assert client.subscribe(f"/{channel}")["successful"] is True
    assert client.disconnect()["successful"] is True

    (subscribed,) = recorded.wait_for(signal="subscribed", channel=channel)
    events = [
        e
        for e in signals_of(recorded, subscribed["client"], "disconnected")
        if e["signal"] != "connected.sync"
    ]
    assert [(e["signal"], e.get("reason")) for e in events] == [
        ("connected", None),
        ("authenticated", None),
        ("subscribed", None),
        ("unsubscribed", "closed"),
        ("disconnected", "disconnect"),
    ]
    assert events[0]["protocol"] == "bayeux" and events[0]["path"] is None
    assert events[-1]["code"] is None and events[-1]["sender"] == "Session"
