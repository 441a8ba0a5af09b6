"""A server process that meets a dead Redis recovers once Redis is back."""

import pytest
from websockets.exceptions import ConnectionClosed

from tests.services import AsgiServer, RedisServer

pytestmark = [pytest.mark.live]


@pytest.fixture
def lonely_redis(service_dir):
    redis = RedisServer(service_dir).start()
    yield redis
    redis.stop()


@pytest.fixture
def server_on_lonely_redis(service_dir, lonely_redis, test_database):
    server = AsgiServer(service_dir, database=test_database, redis_url=lonely_redis.url).start()
    yield server
    server.stop()


def test_connection_while_redis_is_down_is_closed_with_4005_and_the_process_recovers(
    lonely_redis, server_on_lonely_redis, connect
):
    lonely_redis.stop()
    client = connect(server_on_lonely_redis, timeout=15)
    with pytest.raises(ConnectionClosed):
        client.recv(timeout=15)
    assert client.close_code == 4005

    lonely_redis.start()
    client = connect(server_on_lonely_redis)
    assert client.request("ping")["ok"] is True
