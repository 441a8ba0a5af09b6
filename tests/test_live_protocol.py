"""The native protocol, end to end: real daphne processes, real Redis, real sockets.

What the consumer does with each frame is tested in process (test_consumer*.py); here is
what needs real sockets or a second process.
"""

import pytest
from websockets.exceptions import ConnectionClosed

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("redis_layer")]


@pytest.fixture
def news(make_channel, uid):
    return make_channel(f"news-{uid}")


def test_publication_on_one_process_reaches_subscribers_on_the_other(servers, connect, make_key, news):
    first, second = servers
    reader = connect(first)
    reader.auth(make_key(access="read-only"))
    reader.subscribe(news.name)
    writer = connect(second)
    writer.auth(make_key())

    writer.publish(news.name, "e", 1)

    assert reader.next_message()["message"]["data"] == 1


def test_publications_arrive_in_publish_order_across_processes(servers, connect, make_key, news):
    first, second = servers
    readers = [connect(first), connect(second)]
    for reader in readers:
        reader.auth(make_key(access="read-only"))
        reader.subscribe(news.name)
    writer = connect(second)
    writer.auth(make_key())

    for n in range(200):
        writer.send({"publish": {"channel": news.name, "event": "n", "data": n}})

    for reader in readers:
        assert [reader.next_message()["message"]["data"] for _ in range(200)] == list(range(200))


def test_browser_from_a_foreign_origin_is_closed_with_4003(server, connect):
    client = connect(server, origin="https://evil.example")
    with pytest.raises(ConnectionClosed):
        client.recv(timeout=5)
    assert client.close_code == 4003
