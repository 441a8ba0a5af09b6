"""Wildcard subscriptions: rooms/* and rooms/**, each publication once per client."""

import pytest

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("redis_layer")]


def received(client, count, timeout=5):
    return [client.next_message(timeout=timeout)["message"]["channel"] for _ in range(count)]


def assert_nothing_more(client):
    with pytest.raises(TimeoutError):
        client.next_message(timeout=0.5)


@pytest.fixture
def rooms(make_channel, uid):
    return make_channel(f"rooms-{uid}", include_subchannels=True)


@pytest.fixture
def writer(servers, connect, make_key):
    client = connect(servers[1])
    client.auth(make_key())
    return client


def test_single_star_matches_direct_subchannels_and_double_star_every_depth(
    servers, connect, make_key, rooms, writer
):
    star, stars = connect(servers[0]), connect(servers[0])
    for client, pattern in ((star, f"{rooms.name}/*"), (stars, f"{rooms.name}/**")):
        client.auth(make_key(access="read-only"))
        assert client.subscribe(pattern)["ok"] is True

    for name in (f"{rooms.name}/1", f"{rooms.name}/1/typing", f"{rooms.name}/2"):
        writer.publish(name, "e", name)

    assert received(star, 2) == [f"{rooms.name}/1", f"{rooms.name}/2"]
    assert received(stars, 3) == [f"{rooms.name}/1", f"{rooms.name}/1/typing", f"{rooms.name}/2"]
    assert_nothing_more(star)


@pytest.mark.parametrize("server_index", [0, 1])
def test_a_client_gets_each_publication_once_however_many_subscriptions_match(
    servers, connect, make_key, rooms, writer, server_index
):
    client = connect(servers[server_index])
    client.auth(make_key(access="read-only"))
    for name in (f"{rooms.name}/1", f"{rooms.name}/*", f"{rooms.name}/**", "**"):
        assert client.subscribe(name)["ok"] is True

    for n in range(20):
        writer.publish(f"{rooms.name}/1", "n", n)

    assert [client.next_message()["message"]["data"] for _ in range(20)] == list(range(20))
    assert_nothing_more(client)


def test_pattern_subscribers_on_both_processes_beside_exact_ones(servers, connect, make_key, rooms, writer):
    clients = []
    for server in servers:
        for name in (f"{rooms.name}/7", f"{rooms.name}/**"):
            client = connect(server)
            client.auth(make_key(access="read-only"))
            client.subscribe(name)
            clients.append(client)
    writer.publish(f"{rooms.name}/7", "e", 1)
    for client in clients:
        assert received(client, 1) == [f"{rooms.name}/7"]
        assert_nothing_more(client)


def test_publishing_to_a_pattern_is_refused(writer, rooms):
    assert writer.publish(f"{rooms.name}/*", "e", 1)["err"] == "invalid_channel_name"


def test_scoped_key_may_use_patterns_inside_its_scope_only(
    server, connect, make_key, rooms, make_channel, uid
):
    other = make_channel(f"other-{uid}", include_subchannels=True)
    client = connect(server)
    client.auth(make_key(channels=[rooms]))
    assert client.subscribe(f"{rooms.name}/**")["ok"] is True
    assert client.subscribe(f"{other.name}/*")["err"] == "access_denied"
    assert client.subscribe("**")["err"] == "access_denied"
    assert client.subscribe(f"nothing-{uid}/*")["err"] == "invalid_channel"


def test_anonymous_pattern_subscriber_only_gets_channels_it_may_read(
    servers, connect, make_channel, uid, writer
):
    news = make_channel(f"news-{uid}", include_subchannels=True, anonymous_read=True)
    make_channel(f"news-{uid}/staff")  # a row of its own, not open to anonymous readers
    anonymous = connect(servers[0])
    assert anonymous.subscribe("**")["err"] == "access_denied"
    assert anonymous.subscribe(f"{news.name}/*")["ok"] is True

    writer.publish(f"{news.name}/staff", "e", "secret")
    writer.publish(f"{news.name}/sport", "e", "public")

    assert received(anonymous, 1) == [f"{news.name}/sport"]
    assert_nothing_more(anonymous)


def test_unsubscribing_a_pattern_stops_its_deliveries(server, connect, make_key, rooms, writer):
    client = connect(server)
    client.auth(make_key())
    client.subscribe(f"{rooms.name}/*")
    client.subscribe(f"{rooms.name}/marker")
    assert client.unsubscribe(f"{rooms.name}/*")["ok"] is True
    writer.publish(f"{rooms.name}/1", "e", 1)
    writer.publish(f"{rooms.name}/marker", "e", 2)
    assert received(client, 1) == [f"{rooms.name}/marker"]


def test_deactivating_the_prefix_channel_revokes_a_scoped_pattern(server, connect, make_key, rooms):
    client = connect(server)
    client.auth(make_key(channels=[rooms]))
    client.subscribe(f"{rooms.name}/*")
    rooms.is_active = False
    rooms.save()
    assert client.next_message(timeout=6) == {
        "unsubscribed": {"channel": f"{rooms.name}/*", "reason": "access_revoked"}
    }


def test_single_process_without_redis_delivers_pattern_publications_once(
    memory_server, connect, make_key, rooms
):
    client = connect(memory_server)
    client.auth(make_key())
    client.subscribe(f"{rooms.name}/1")
    client.subscribe(f"{rooms.name}/**")
    client.publish(f"{rooms.name}/1", "e", 1)
    client.publish(f"{rooms.name}/2/x", "e", 2)
    assert received(client, 2) == [f"{rooms.name}/1", f"{rooms.name}/2/x"]
    assert_nothing_more(client)
