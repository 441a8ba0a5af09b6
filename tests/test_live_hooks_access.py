"""Authorization that sees the concrete channel, the user and the database (docs/hooks.md)."""

import time

import pytest
from django.contrib.auth.models import Group, User

import realtime
from realtime import tokens
from tests.hooks_support import Recorded
from tests.matchers import SERVER_TIME
from tests.services import AsgiServer

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("redis_layer")]


@pytest.fixture(scope="module")
def policy_server(request, service_dir, redis_server, test_database):
    """A server whose policy is tests.hooks_support.DatabasePolicy (async, asks the database)."""
    realtime_settings = {"POLICY": "tests.hooks_support.DatabasePolicy", "REVALIDATE_INTERVAL": 1}
    server = AsgiServer(
        service_dir, database=test_database, redis_url=redis_server.url, realtime=realtime_settings
    ).start()
    request.addfinalizer(server.stop)
    return server


@pytest.fixture
def recorded(redis_server):
    recorded = Recorded(redis_server.url)
    recorded.clear()
    return recorded


@pytest.fixture
def people(transactional_db, uid):
    return [User.objects.create_user(f"{name}-{uid}") for name in ("alice", "bob")]


def token(user, channels, access="read-only", **kwargs):
    return tokens.issue_token(user, access, channels, **kwargs)[0]


def authed(connect, server, user, channels, access="read-only"):
    client = connect(server)
    reply = client.request("auth", {"token": token(user, channels, access)})
    assert reply["ok"] is True, reply
    return client


def messages(client, count, timeout=5.0):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        frame = client.next_message(timeout=max(0.05, deadline - time.monotonic()))
        if "message" in frame:
            got.append(frame["message"])
    return got


def nothing_more(client, wait=0.5):
    with pytest.raises(TimeoutError):
        frame = client.next_message(timeout=wait)
        pytest.fail(f"unexpected frame {frame}")


# Personal channels ----------------------------------------------------------------------------


def test_a_user_reads_their_own_personal_channel_and_no_one_elses(
    servers, connect, people, make_channel, make_key, uid
):
    make_channel(f"rooms-{uid}", include_subchannels=True)
    users = make_channel(f"users-{uid}", include_subchannels=True, personal=True).name
    alice, bob = people
    # Alice's token grants only the rooms; her personal channel needs no grant.
    mine = authed(connect, servers[0], alice, [f"rooms-{uid}"])
    assert mine.subscribe(f"{users}/{alice.pk}")["ok"] is True
    assert mine.subscribe(f"{users}/{alice.pk}/inbox")["ok"] is True

    refused = mine.subscribe(f"{users}/{bob.pk}")
    assert refused["err"] == "access_denied"
    assert refused["detail"] == f"'{users}/{bob.pk}' is another user's personal channel"
    assert "personal channels" in mine.subscribe(users)["detail"]
    assert mine.subscribe(f"{users}/*")["err"] == "access_denied"
    # A token for everything, even read-write, does not open another user's channel.
    staff = authed(connect, servers[1], bob, ["*"], "read-write")
    assert staff.subscribe(f"{users}/{alice.pk}")["err"] == "access_denied"
    assert staff.publish(f"{users}/{alice.pk}", "mention", {})["err"] == "access_denied"
    anonymous = connect(servers[0])
    assert anonymous.subscribe(f"{users}/{alice.pk}")["detail"] == "authenticate first"
    # Keys are for servers: one whose scope covers the row reads every user's channel.
    backend = connect(servers[1])
    backend.auth(make_key(access="read-only"))
    assert backend.subscribe(f"{users}/{bob.pk}")["ok"] is True

    realtime.publish(f"{users}/{alice.pk}", "mention", {"from": "bob"})
    realtime.publish(f"{users}/{bob.pk}", "mention", {"from": "alice"})

    assert messages(mine, 1)[0] == {
        "channel": f"{users}/{alice.pk}",
        "event": "mention",
        "data": {"from": "bob"},
        "time": SERVER_TIME,
    }
    assert messages(backend, 1)[0]["data"] == {"from": "alice"}
    nothing_more(mine)


def test_a_token_granted_a_sub_channel_may_read_it_under_a_covering_row(
    servers, connect, people, make_channel, uid
):
    grants = make_channel(f"grants-{uid}", include_subchannels=True).name
    alice, _ = people
    client = authed(connect, servers[0], alice, [f"{grants}/2"])
    assert client.subscribe(f"{grants}/2")["ok"] is True
    assert client.subscribe(f"{grants}/2/typing")["ok"] is True
    refused = client.subscribe(f"{grants}/3")
    assert refused == {
        "err": "access_denied",
        "detail": f"'{grants}/3' is outside this token's grant",
        "id": refused["id"],
    }


def test_a_grant_may_name_the_users_own_channel_with_a_placeholder(
    servers, connect, people, make_channel, uid
):
    inbox = make_channel(f"inbox-{uid}", include_subchannels=True).name
    alice, bob = people
    client = authed(connect, servers[0], alice, [f"{inbox}/{{user}}"])
    assert client.subscribe(f"{inbox}/{alice.pk}")["ok"] is True
    assert client.subscribe(f"{inbox}/{bob.pk}")["err"] == "access_denied"


def test_the_refusal_says_whose_scope_it_was(servers, connect, make_key, people, make_channel, uid):
    mine, other = make_channel(f"mine-{uid}"), make_channel(f"other-{uid}").name
    keyed = connect(servers[0])
    keyed.auth(make_key(access="read-only", channels=[mine]))
    assert keyed.subscribe(other)["detail"] == f"'{other}' is outside this key's scope"
    assert keyed.publish(mine.name, "e", 1)["detail"] == "read-only access cannot publish"
    tokened = authed(connect, servers[0], people[0], [mine.name], "read-write")
    assert tokened.subscribe(other)["detail"] == f"'{other}' is outside this token's grant"
    assert tokened.publish(other, "e", 1)["detail"] == f"'{other}' is outside this token's grant"


# A policy that is async and asks the database --------------------------------------------------


def test_an_async_policy_decides_by_the_concrete_channel_and_the_users_groups(
    policy_server, connect, people, make_channel, uid
):
    teams = make_channel(f"teams-{uid}", include_subchannels=True).name
    alice, _ = people
    red = Group.objects.create(name=f"{teams}/red")
    alice.groups.add(red)
    client = authed(connect, policy_server, alice, [teams])

    assert client.subscribe(f"{teams}/red")["ok"] is True
    refused = client.subscribe(f"{teams}/blue")
    assert refused["err"] == "access_denied"
    assert refused["detail"] == f"the project's policy does not let these credentials use '{teams}/blue'"

    # Revalidation asks again: out of the group, out of the channel.
    alice.groups.remove(red)
    frame = client.next_message(timeout=5)
    assert frame == {"unsubscribed": {"channel": f"{teams}/red", "reason": "access_revoked"}}


def test_a_publish_storm_asks_the_policy_once_per_connection_and_channel(
    policy_server, connect, people, make_channel, recorded, uid
):
    room = f"{make_channel(f'rooms-{uid}', include_subchannels=True).name}/lobby"
    alice, bob = people
    publisher = authed(connect, policy_server, alice, [f"rooms-{uid}"], "read-write")
    listener = authed(connect, policy_server, bob, [f"rooms-{uid}"])
    assert listener.subscribe(f"rooms-{uid}/*")["ok"] is True

    for n in range(50):
        assert publisher.publish(room, "n", n)["ok"] is True

    # Every publication arrives, in order, through the pattern; the first was held while the
    # policy was asked about the channel, not dropped.
    assert [m["data"] for m in messages(listener, 50)] == list(range(50))
    # Asked once each, and again at each revalidation (every second here): not 50 times.
    assert 1 <= recorded.count(f"write:{room}") < 10
    assert 1 <= recorded.count(f"read:{room}") < 10


def test_a_pattern_never_delivers_a_channel_the_policy_refuses(
    policy_server, connect, people, make_channel, uid
):
    rooms = make_channel(f"rooms-{uid}", include_subchannels=True).name
    alice, _ = people
    listener = authed(connect, policy_server, alice, [rooms])
    assert listener.subscribe(f"{rooms}/*")["ok"] is True
    assert listener.subscribe(f"{rooms}/secret")["err"] == "access_denied"

    for channel in ("secret", "open", "secret", "open"):
        realtime.publish(f"{rooms}/{channel}", "e", channel)

    assert [m["channel"] for m in messages(listener, 2)] == [f"{rooms}/open", f"{rooms}/open"]
    nothing_more(listener)


def test_revalidation_asks_again_about_channels_a_pattern_reached(
    policy_server, connect, people, make_channel, uid
):
    teams = make_channel(f"teams-{uid}", include_subchannels=True).name
    alice, _ = people
    red, green = Group.objects.create(name=f"{teams}/red"), Group.objects.create(name=f"{teams}/green")
    alice.groups.add(red, green)
    listener = authed(connect, policy_server, alice, [teams])
    assert listener.subscribe(f"{teams}/*")["ok"] is True
    realtime.publish(f"{teams}/red", "e", "red")
    realtime.publish(f"{teams}/blue", "e", "blue")
    realtime.publish(f"{teams}/green", "e", "green")
    assert [m["data"] for m in messages(listener, 2)] == ["red", "green"]

    alice.groups.remove(red)
    # Rounds of (red, green) until a round delivers green alone: once revalidation has
    # asked the policy again about red (within a second or two here), red stops arriving.
    deadline = time.monotonic() + 10
    for round_ in range(1000):
        realtime.publish(f"{teams}/red", "e", f"red-{round_}")
        realtime.publish(f"{teams}/green", "e", f"green-{round_}")
        got = []
        while f"green-{round_}" not in got:
            got += [m["data"] for m in messages(listener, 1)]
        if got == [f"green-{round_}"]:
            break
        assert time.monotonic() < deadline, "red was still delivered after revalidation"
        time.sleep(0.2)
    assert listener.subscribe(f"{teams}/red")["err"] == "access_denied"
