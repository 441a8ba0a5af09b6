"""A server process that stops in an orderly way leaves the node registry at once, so the
server API does not report it as a process that did not answer."""

import pytest

from realtime import api
from tests.services import AsgiServer, RedisServer

pytestmark = [pytest.mark.live]


@pytest.fixture
def own_redis(service_dir, settings):
    redis = RedisServer(service_dir).start()
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [{"address": redis.url}]},
        }
    }
    yield redis
    redis.stop()


@pytest.mark.parametrize("server", ["uvicorn", "daphne"])
def test_a_stopped_server_is_neither_listed_nor_missing(
    own_redis, service_dir, test_database, connect, server
):
    process = AsgiServer(service_dir, database=test_database, redis_url=own_redis.url, server=server).start()
    try:
        connect(process).request("ping")  # the process's hub starts, and registers
        first = api.info(timeout=5)
        assert len(first["processes"]) == 1 and first["missing"] == []
    finally:
        process.stop()  # SIGTERM

    after = api.info(timeout=1)
    assert after["processes"] == [] and after["missing"] == []
