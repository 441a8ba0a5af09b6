"""The server API against two daphne processes and Redis, over Python, HTTP and the CLI.

Each call is made three ways: ``realtime.api`` in this test process (which reaches the
servers through the same Redis), ``/realtime/api/<call>`` on one of the servers, and
``manage.py realtime <call>`` in a process of its own. Their replies are the same.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from django.contrib.auth import get_user_model
from websockets.exceptions import ConnectionClosed

from realtime import api, tokens
from realtime.errors import CloseCode
from tests.matchers import SERVER_TIME
from tests.services import ROOT

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("redis_layer")]

SURFACES = ["python", "http", "cli"]


class Surfaces:
    """Makes one call of the server API through Python, HTTP (on ``servers[0]``) or the CLI."""

    def __init__(self, servers, redis_server, database, secret):
        self.servers = servers
        self.redis_server = redis_server
        self.database = database
        self.secret = secret

    def python(self, call, *args, **kwargs):
        return getattr(api, call)(*args, **kwargs)

    def http(self, call, method="POST", server=None, **body):
        return http_call(server or self.servers[0], call, self.secret, method, body)[1]

    def cli(self, *arguments, expect=0):
        result = run_cli(self.redis_server, self.database, *arguments, "--json")
        assert result.returncode == expect, result.stderr
        return json.loads(result.stdout)


def http_call(server, call, secret, method="POST", body=None, headers=None):
    """``(status, reply)`` of ``/realtime/api/<call>``; GET sends ``body`` as the query."""
    url = f"{server.http_url}/realtime/api/{call}"
    data = None
    if method == "GET" and body:
        url += "?" + urllib.parse.urlencode(body)
    elif method == "POST":
        data = json.dumps(body or {}).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if secret is not None:
        request.add_header("Authorization", f"Bearer {secret}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def run_cli(redis_server, database, *arguments):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_PATH": database,
        "REDIS_URL": redis_server.url,
        "REALTIME_TEST_SETTINGS": "{}",
    }
    return subprocess.run(
        [sys.executable, "manage.py", "realtime", *arguments],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def admin_secret(make_key):
    return make_key(access="admin")


@pytest.fixture
def call(servers, redis_server, test_database, admin_secret):
    return Surfaces(servers, redis_server, test_database, admin_secret)


@pytest.fixture
def alice(transactional_db, uid):
    return get_user_model().objects.create_user(f"alice-{uid}", password="x")


@pytest.fixture
def bob(transactional_db, uid):
    return get_user_model().objects.create_user(f"bob-{uid}", password="x")


def as_user(connect, server, user, channels=("*",)):
    client = connect(server)
    reply = client.request("auth", {"token": tokens.issue_token(user, "read-write", list(channels))[0]})
    assert reply["ok"], reply
    return client


def closed_with(client, timeout=5.0) -> int:
    """The close code the server sent, waiting for the close."""
    deadline = time.monotonic() + timeout
    with pytest.raises(ConnectionClosed):
        while time.monotonic() < deadline:
            client.recv(timeout=max(0.1, deadline - time.monotonic()))
    return client.close_code


def next_of(client, kind, timeout=5.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        frame = client.next_message(timeout=max(0.1, deadline - time.monotonic()))
        if kind in frame:
            return frame[kind]


def pids(entries) -> set[int]:
    return {entry["pid"] for entry in entries}


def server_pids(servers) -> set[int]:
    return {server.process.pid for server in servers}


# info and channels -----------------------------------------------------------------


@pytest.mark.parametrize("surface", SURFACES)
def test_info_lists_every_server_process_with_its_counts(surface, call, servers, connect, make_key):
    key = make_key(access="read-only")
    for server in servers:
        assert connect(server).auth(key)["ok"]
    reply = {
        "python": lambda: call.python("info"),
        "http": lambda: call.http("info", method="GET"),
        "cli": lambda: call.cli("info"),
    }[surface]()
    # Other test servers may share this Redis: ours are among those that answered.
    assert server_pids(servers) <= pids(reply["processes"]) == pids(reply["answered"])
    assert not server_pids(servers) & pids(reply["missing"])
    ours = [process for process in reply["processes"] if process["pid"] in server_pids(servers)]
    for process in ours:
        assert process["version"] == "0.1.0" and process["uptime"] > 0
        assert process["connections"] >= 1 and process["authenticated"] >= 1
        assert process["protocols"]["native"] == process["connections"]
        assert len(process["id"]) == 16 and process["hostname"]
    assert reply["totals"]["connections"] == sum(p["connections"] for p in reply["processes"])


@pytest.mark.parametrize("surface", SURFACES)
def test_channels_sums_subscribers_over_the_processes(surface, call, servers, connect, make_channel, uid):
    busy, quiet = (
        make_channel(f"ops{uid}/busy", anonymous_read=True),
        make_channel(f"ops{uid}/quiet", anonymous_read=True),
    )
    for server in (servers[0], servers[0], servers[1]):
        assert connect(server).subscribe(busy.name)["ok"]
    assert connect(servers[1]).subscribe(quiet.name)["ok"]
    reply = {
        "python": lambda: call.python("channels", f"ops{uid}/"),
        "http": lambda: call.http("channels", method="GET", prefix=f"ops{uid}/"),
        "cli": lambda: call.cli("channels", f"ops{uid}/"),
    }[surface]()
    assert [(row["channel"], row["subscribers"]) for row in reply["channels"]] == [
        (busy.name, 3),
        (quiet.name, 1),
    ]
    assert reply["total"] == 2 and server_pids(servers) <= pids(reply["answered"])
    limited = call.python("channels", f"ops{uid}/", limit=1)
    assert [row["channel"] for row in limited["channels"]] == [busy.name] and limited["total"] == 2


def test_channels_measures_publication_rates(call, servers, connect, make_channel, make_key, uid):
    channel = make_channel(f"rate-{uid}", anonymous_read=True)
    listener = connect(servers[1])
    assert listener.subscribe(channel.name)["ok"]
    publisher = connect(servers[0])
    assert publisher.auth(make_key())["ok"]
    # Asking starts the measuring, which lasts a minute after the last ask.
    (first,) = call.python("channels", channel.name)["channels"]
    assert first["subscribers"] == 1
    deadline = time.monotonic() + 6.5  # longer than one rate window (5 s)
    sent = 0
    while time.monotonic() < deadline:
        assert publisher.publish(channel.name, "tick", sent)["ok"]
        sent += 1
        time.sleep(0.05)
    (row,) = call.python("channels", channel.name)["channels"]
    assert row["subscribers"] == 1 and row["rate"] is not None and row["rate"] > 1


# disconnect ------------------------------------------------------------------------


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("reconnect", [False, True], ids=["for-good", "reconnect"])
def test_disconnect_closes_every_connection_of_a_user(surface, reconnect, call, servers, connect, alice, bob):
    tabs = [as_user(connect, server, alice) for server in servers]
    other = as_user(connect, servers[1], bob)
    if surface == "python":
        reply = call.python("disconnect", user=alice, reconnect=reconnect)
    elif surface == "http":
        reply = call.http("disconnect", user=alice.pk, reconnect=reconnect)
    else:
        reply = call.cli("disconnect", "--user", str(alice.pk), *(["--reconnect"] if reconnect else []))
    code = CloseCode.DISCONNECTED if reconnect else CloseCode.DISCONNECTED_FOR_GOOD
    assert reply["code"] == code and len(reply["disconnected"]) == 2
    assert [closed_with(tab) for tab in tabs] == [code, code]
    assert other.request("ping")["ok"]


@pytest.mark.parametrize("surface", SURFACES)
def test_disconnect_closes_one_client_by_its_id(surface, call, servers, connect, make_channel, make_key, uid):
    room = make_channel(f"who-{uid}", presence=True)
    key = make_key(access="read-only")
    clients = [connect(server) for server in servers]
    ids = []
    for client in clients:
        assert client.auth(key)["ok"]
        ids.append(client.subscribe(room.name)["client"])
    reply = {
        "python": lambda: call.python("disconnect", client=ids[1]),
        "http": lambda: call.http("disconnect", client=ids[1]),
        "cli": lambda: call.cli("disconnect", "--client", ids[1]),
    }[surface]()
    assert reply["disconnected"] == [ids[1]]
    assert closed_with(clients[1]) == CloseCode.DISCONNECTED_FOR_GOOD
    assert clients[0].request("ping")["ok"]


def test_disconnect_sends_the_reason_where_the_server_sends_one(call, uvicorn_server, connect, alice):
    tab = as_user(connect, uvicorn_server, alice)
    call.python("disconnect", user=alice, reason="spamming the lobby")
    assert closed_with(tab) == CloseCode.DISCONNECTED_FOR_GOOD
    assert tab.ws.close_reason == "spamming the lobby"


# subscribe and unsubscribe ---------------------------------------------------------


@pytest.mark.parametrize("surface", SURFACES)
def test_unsubscribe_ends_a_users_subscription_on_every_process(
    surface, call, servers, connect, make_channel, make_key, alice, bob, uid
):
    room = make_channel(f"unsub-{uid}")
    tabs = [as_user(connect, server, alice) for server in servers]
    other = as_user(connect, servers[0], bob)
    for client in (*tabs, other):
        assert client.subscribe(room.name)["ok"]
    reply = {
        "python": lambda: call.python("unsubscribe", room.name, user=alice),
        "http": lambda: call.http("unsubscribe", channel=room.name, user=str(alice.pk)),
        "cli": lambda: call.cli("unsubscribe", room.name, "--user", str(alice.pk)),
    }[surface]()
    assert len(reply["unsubscribed"]) == 2 and reply["channel"] == room.name
    for tab in tabs:
        assert next_of(tab, "unsubscribed") == {"channel": room.name, "reason": "server"}
    publisher = connect(servers[1])
    assert publisher.auth(make_key())["ok"]
    assert publisher.publish(room.name, "after", 1)["ok"]
    assert next_of(other, "message")["event"] == "after"
    for tab in tabs:
        assert tab.request("ping")["ok"]
        assert not [frame for frame in tab.pending if "message" in frame]


@pytest.mark.parametrize("surface", SURFACES)
def test_subscribe_server_side_subscribes_a_users_connections(
    surface, call, servers, connect, make_channel, make_key, alice, uid
):
    alerts = make_channel(f"alerts-{uid}", history_size=10)
    secret = make_channel(f"secret-{uid}")
    tabs = [as_user(connect, server, alice, [alerts.name]) for server in servers]
    reply = {
        "python": lambda: call.python("subscribe", alerts.name, user=alice),
        "http": lambda: call.http("subscribe", channel=alerts.name, user=alice.pk),
        "cli": lambda: call.cli("subscribe", alerts.name, "--user", str(alice.pk)),
    }[surface]()
    assert len(reply["subscribed"]) == 2 and reply["refused"] == [] and reply["already"] == []
    for tab in tabs:
        notice = next_of(tab, "subscribed")
        assert notice["channel"] == alerts.name and notice["offset"] == 0 and notice["epoch"]
    publisher = connect(servers[0])
    assert publisher.auth(make_key())["ok"]
    assert publisher.publish(alerts.name, "alert", {"level": 3})["ok"]
    for tab in tabs:
        message = next_of(tab, "message")
        assert (message["channel"], message["data"], message["offset"]) == (alerts.name, {"level": 3}, 1)
    again = call.python("subscribe", alerts.name, user=alice)
    assert again["subscribed"] == [] and len(again["already"]) == 2
    # Outside the token's channels: refused, as a subscribe of its own would be.
    refused = call.python("subscribe", secret.name, user=alice)
    assert refused["subscribed"] == [] and {r["err"] for r in refused["refused"]} == {"access_denied"}


# presence, history, broadcast ------------------------------------------------------


@pytest.mark.parametrize("surface", SURFACES)
def test_presence_and_presence_stats(surface, call, servers, connect, make_channel, make_key, alice, uid):
    room = make_channel(f"here-{uid}", presence=True)
    tabs = [as_user(connect, server, alice) for server in servers]
    tab_ids = sorted(tab.subscribe(room.name)["client"] for tab in tabs)
    service = connect(servers[1])
    assert service.auth(make_key(access="read-only"))["ok"]
    service_id = service.subscribe(room.name)["client"]
    if surface == "python":
        members, stats = call.python("presence", room.name), call.python("presence_stats", room.name)
    elif surface == "http":
        members = call.http("presence", method="GET", channel=room.name)
        stats = call.http("presence_stats", channel=room.name)
    else:
        members, stats = call.cli("presence", room.name), call.cli("presence-stats", room.name)
    assert members["channel"] == room.name
    assert {"user": {"id": alice.pk, "name": alice.username}, "clients": tab_ids} in members["members"]
    assert {"user": None, "clients": [service_id]} in members["members"]
    assert {key: stats[key] for key in ("channel", "clients", "users")} == {
        "channel": room.name,
        "clients": 3,
        "users": 1,
    }


@pytest.mark.parametrize("surface", SURFACES)
def test_history_and_history_remove(surface, call, servers, connect, make_channel, make_key, uid):
    news = make_channel(f"log-{uid}", history_size=10)
    publisher = connect(servers[1])
    assert publisher.auth(make_key())["ok"]
    for number in range(3):
        assert publisher.publish(news.name, "n", number)["ok"]
    if surface == "python":
        page = call.python("history", news.name, since=1)
        removed = call.python("history_remove", news.name)
        after = call.python("history", news.name)
    elif surface == "http":
        page = call.http("history", method="GET", channel=news.name, since=1)
        removed = call.http("history_remove", channel=news.name)
        after = call.http("history", channel=news.name)
    else:
        page = call.cli("history", news.name, "--since", "1")
        removed = call.cli("history-remove", news.name)
        after = call.cli("history", news.name)
    assert [p["data"] for p in page["publications"]] == [1, 2]
    assert page["offset"] == 3 and page["complete"] is True
    assert removed["removed"] is True and removed["channel"] == news.name
    assert after["offset"] == 0 and after["publications"] == [] and after["epoch"] != page["epoch"]
    # A client that recovers from the old position is told it was not recovered.
    reader = connect(servers[0])
    assert reader.auth(make_key(access="read-only"))["ok"]
    since = {"offset": 3, "epoch": page["epoch"]}
    assert reader.subscribe(news.name, since=since)["recovered"] is False


@pytest.mark.parametrize("surface", SURFACES)
def test_broadcast_publishes_on_each_channel_and_reports_each(
    surface, call, servers, connect, make_channel, uid
):
    first, second = (
        make_channel(f"b1-{uid}", anonymous_read=True),
        make_channel(f"b2-{uid}", anonymous_read=True),
    )
    listeners = [connect(servers[0]), connect(servers[1])]
    assert listeners[0].subscribe(first.name)["ok"] and listeners[1].subscribe(second.name)["ok"]
    names = [first.name, f"nosuch-{uid}", second.name]
    reply = {
        "python": lambda: call.python("broadcast", names, "news", {"n": 1}),
        "http": lambda: call.http("broadcast", channels=names, event="news", data={"n": 1}),
        "cli": lambda: call.cli("broadcast", ",".join(names), "news", '{"n": 1}'),
    }[surface]()
    assert reply["publications"] == [
        {"channel": first.name, "ok": True},
        {
            "channel": f"nosuch-{uid}",
            "err": "invalid_channel",
            "detail": f"no active channel covers 'nosuch-{uid}'",
        },
        {"channel": second.name, "ok": True},
    ]
    for listener, name in zip(listeners, (first.name, second.name), strict=True):
        assert next_of(listener, "message") == {
            "channel": name,
            "event": "news",
            "data": {"n": 1},
            "time": SERVER_TIME,
        }


# A process that does not answer ----------------------------------------------------


@pytest.fixture
def stopped(servers):
    """SIGSTOP the second server for the test's call, and SIGCONT it afterwards."""
    process = servers[1].process
    yield lambda: process.send_signal(signal.SIGSTOP)
    process.send_signal(signal.SIGCONT)


@pytest.mark.parametrize("surface", SURFACES)
def test_a_process_that_does_not_answer_is_reported_and_drops_the_late_command(
    surface, call, servers, connect, alice, stopped
):
    tabs = [as_user(connect, server, alice) for server in servers]
    stopped()
    started = time.monotonic()
    if surface == "python":
        reply = call.python("disconnect", user=alice, timeout=1)
    elif surface == "http":
        reply = call.http("disconnect", user=alice.pk, timeout=1)
    else:
        result = run_cli(
            call.redis_server,
            call.database,
            "disconnect",
            "--user",
            str(alice.pk),
            "--timeout",
            "1",
            "--json",
        )
        assert result.returncode == 2, result.stderr
        assert f"pid {servers[1].process.pid}" in result.stderr and "did not answer" in result.stderr
        reply = json.loads(result.stdout)
    assert time.monotonic() - started < 8
    assert servers[0].process.pid in pids(reply["answered"])
    assert servers[1].process.pid in pids(reply["missing"]) - pids(reply["answered"])
    assert len(reply["disconnected"]) == 1
    assert closed_with(tabs[0]) == CloseCode.DISCONNECTED_FOR_GOOD
    time.sleep(1.2)  # past the command's deadline
    servers[1].process.send_signal(signal.SIGCONT)
    # The stopped process got the command after its deadline and did not carry it out.
    assert tabs[1].request("ping")["ok"]
    time.sleep(0.5)
    assert tabs[1].request("ping")["ok"]
    assert servers[1].process.pid in pids(call.python("info")["answered"])


# Who may call it -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "status", "code"),
    [
        (None, 401, "invalid_credentials"),
        ("rt_not-a-key", 401, "invalid_credentials"),
        ({"access": "read-only"}, 403, "access_denied"),
        ({"access": "read-write", "channels": "one"}, 403, "access_denied"),
        ({"access": "read-write"}, 200, None),
        ({"access": "admin"}, 200, None),
    ],
    ids=["none", "unknown", "read-only", "read-write-on-one-channel", "read-write-on-all", "admin"],
)
def test_the_http_api_needs_an_admin_key_or_a_read_write_key_on_all_channels(
    key, status, code, servers, make_key, make_channel, uid
):
    if isinstance(key, dict):
        channels = [make_channel(f"scope-{uid}")] if key.pop("channels", None) else ()
        key = make_key(channels=channels, **key)
    got, reply = http_call(servers[0], "info", key, "GET")
    assert got == status, reply
    if code is None:
        assert reply["ok"] is True
    else:
        assert reply["err"] == code


@pytest.mark.parametrize(
    ("call_name", "method", "body", "status", "detail"),
    [
        ("nosuch", "POST", {}, 404, "no server API call 'nosuch'"),
        ("disconnect", "GET", {}, 405, "use POST"),
        ("disconnect", "POST", {}, 400, "say whose connections: user, client, or both"),
        ("disconnect", "POST", {"usr": 1}, 400, "unknown parameter 'usr'"),
        ("channels", "GET", {"limit": "x"}, 400, "limit must be an integer"),
        (
            "channels",
            "POST",
            {"timeout": 0},
            400,
            "timeout must be a number of seconds greater than 0, at most 60",
        ),
        ("presence", "POST", {}, 400, "channel is required"),
        ("presence", "POST", {"channel": "meta/x"}, 400, None),
        ("history", "POST", {"channel": "no-such-channel-anywhere"}, 404, None),
        (
            "info",
            "POST",
            {"node": "0123456789abcdef"},
            400,
            "no live server process has the id '0123456789abcdef'",
        ),
    ],
)
def test_the_http_api_refuses_bad_requests_in_the_sockets_error_format(
    call_name, method, body, status, detail, servers, admin_secret
):
    got, reply = http_call(servers[0], call_name, admin_secret, method, body)
    assert got == status, reply
    assert "err" in reply and "ok" not in reply
    if detail is not None:
        assert reply["detail"] == detail


def test_one_process_alone_answers_when_asked_by_its_id(call, servers, connect):
    for server in servers:
        connect(server).request("ping")
    every = call.python("info")
    target = next(p for p in every["processes"] if p["pid"] == servers[1].process.pid)
    reply = call.http("info", node=target["id"])
    assert [p["pid"] for p in reply["processes"]] == [servers[1].process.pid]
