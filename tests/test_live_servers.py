"""Any ASGI server: the protocol's round trip under uvicorn (with its own protocol classes
and with realtime's), daphne, hypercorn and granian.

Each server process runs demo_site.asgi unchanged, on the suite's Redis. ASGI promises
that ``send`` returns an awaitable, and the four differ: uvicorn's, daphne's and
hypercorn's are coroutines, granian's is a future (``realtime.outbox``).
"""

import pytest
from websockets.exceptions import ConnectionClosed

import realtime
from realtime.conf import settings as realtime_settings
from tests.matchers import SERVER_TIME
from tests.services import AsgiServer

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("redis_layer")]

# uvicorn-realtime: uvicorn with realtime's protocol classes, whose pre-framed writes
# carry the fan-out (realtime.servers.uvicorn).
SERVERS = ["uvicorn", "uvicorn-realtime", "daphne", "hypercorn", "granian"]


@pytest.fixture(scope="session")
def uvicorn_realtime_server(request, service_dir, redis_server, test_database):
    server = AsgiServer(
        service_dir, database=test_database, redis_url=redis_server.url, server="uvicorn-realtime"
    )
    request.addfinalizer(server.stop)
    return server.start()


@pytest.fixture(scope="session")
def hypercorn_server(request, service_dir, redis_server, test_database):
    server = AsgiServer(service_dir, database=test_database, redis_url=redis_server.url, server="hypercorn")
    request.addfinalizer(server.stop)
    return server.start()


@pytest.fixture(scope="session")
def granian_server(request, service_dir, redis_server, test_database):
    server = AsgiServer(service_dir, database=test_database, redis_url=redis_server.url, server="granian")
    request.addfinalizer(server.stop)
    return server.start()


@pytest.fixture(params=SERVERS)
def any_server(request):
    # daphne is the suite's default server (`server`); the others have fixtures of their own.
    name = "server" if request.param == "daphne" else f"{request.param.replace('-', '_')}_server"
    server = request.getfixturevalue(name)
    assert server.server == request.param
    return server


def wait_for_close(client) -> int:
    with pytest.raises(ConnectionClosed):
        while True:
            client.recv(timeout=5)
    return client.close_code


def test_auth_subscribe_publish_and_receive(any_server, connect, make_key, make_channel, uid):
    news = make_channel(f"news-{uid}")
    client = connect(any_server)
    assert client.auth(make_key())["ok"] is True
    assert client.subscribe(news.name)["ok"] is True

    assert client.publish(news.name, "from", "the client")["ok"] is True
    assert client.next_message()["message"]["data"] == "the client"

    # From this process, through Redis, as a view or a worker would.
    realtime.publish(news.name, "from", "the server")
    assert client.next_message()["message"] == {
        "channel": news.name,
        "event": "from",
        "data": "the server",
        "time": SERVER_TIME,
    }

    # Many frames in a row arrive complete and in order, whatever the server's send returns.
    for n in range(50):
        realtime.publish(news.name, "count", n)
    assert [client.next_message()["message"]["data"] for _ in range(50)] == list(range(50))

    assert client.unsubscribe(news.name)["ok"] is True
    assert client.logout()["ok"] is True


def test_an_error_reply_keeps_the_connection(any_server, connect, uid):
    client = connect(any_server)
    assert client.subscribe(f"secret-{uid}")["err"] == "access_denied"
    assert client.request("ping")["ok"] is True


def test_garbage_closes_the_connection_with_4001(any_server, connect):
    client = connect(any_server)
    for _ in range(realtime_settings.MAX_INVALID_FRAMES):
        client.send_raw("garbage")
    assert wait_for_close(client) == 4001


def test_a_foreign_browser_origin_is_closed_with_4003(any_server, connect):
    client = connect(any_server, origin="https://evil.example")
    assert wait_for_close(client) == 4003
