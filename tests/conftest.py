import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from django.db import connection

from realtime.models import AccessKey, Channel
from realtime.testing import RealtimeClient, RealtimeCommunicator
from tests.hostile import hardened, hardened_daphne  # noqa: F401 (the hostile-client tests' servers)
from tests.services import AsgiServer, RedisServer

# Limits small enough to reach quickly in tests.
STRICT = {
    "MAX_MESSAGE_SIZE": 1024,
    "MAX_SUBSCRIPTIONS": 3,
    "MAX_AUTH_FAILURES": 3,
    "MAX_INVALID_FRAMES": 3,
    "RATE_LIMIT": 5,
    "RATE_BURST": 10,
}

# Bayeux: connects held 5 s, sessions forgotten 3 s after their last connect, and the
# demo's service handlers. The client tests run callback-polling (JSONP over GET) with
# key secrets, which realtime refuses by default (tests/test_live_hostile_bayeux.py).
BAYEUX = {
    "BAYEUX_TIMEOUT": 5,
    "BAYEUX_MAX_INTERVAL": 3,
    "BAYEUX_SECRETS_OVER_GET": True,
    "BAYEUX_SERVICES": {
        "/service/echo": "demo_site.bayeux_services.echo",
        "/service/whoami": "demo_site.bayeux_services.whoami",
    },
}


# Fixtures that start a process (Redis, a server, Node, Chromium) or install npm packages.
# A test that uses one must be marked live, so that `pytest -m "not live"` stays fast and
# needs nothing but Python: see pytest_collection_modifyitems.
LIVE_FIXTURES = frozenset(
    {
        "redis_server",
        "servers",
        "server",
        "strict_server",
        "fuzz_server",
        "memory_server",
        "uvicorn_server",
        "slow_reader_server",
        "node_clients",  # tests/bayeux/conftest.py
        "browser",  # tests/browser/conftest.py
    }
)


@pytest.hookimpl(tryfirst=True)  # before -m deselects anything
def pytest_collection_modifyitems(config, items):
    unmarked = [
        item.nodeid
        for item in items
        if LIVE_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("live") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "These tests start real services but are not marked live (add "
            "`pytestmark = [pytest.mark.live]`):\n  " + "\n  ".join(unmarked)
        )


@pytest.fixture(scope="session")
def django_db_modify_db_settings(tmp_path_factory):
    """Keep the test database in a file, so real server processes can share it."""
    from django.conf import settings

    path = tmp_path_factory.mktemp("db") / "test.sqlite3"
    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = str(path)


@pytest.fixture(scope="session")
def service_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def redis_server(service_dir):
    server = RedisServer(service_dir).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def test_database(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        return connection.settings_dict["NAME"]


def _start(request, service_dir, **kwargs):
    server = AsgiServer(service_dir, **kwargs).start()
    request.addfinalizer(server.stop)
    return server


@pytest.fixture(scope="session")
def servers(request, service_dir, redis_server, test_database):
    """Two daphne processes sharing one Redis: they should behave as one server."""
    realtime = {"REVALIDATE_INTERVAL": 2, "PRESENCE_TTL": 3, **BAYEUX}
    return [
        _start(request, service_dir, database=test_database, redis_url=redis_server.url, realtime=realtime)
        for _ in range(2)
    ]


@pytest.fixture(scope="session")
def server(servers):
    return servers[0]


@pytest.fixture(scope="session")
def strict_server(request, service_dir, redis_server, test_database):
    """A server with tiny limits, so tests can reach every one of them."""
    return _start(request, service_dir, database=test_database, redis_url=redis_server.url, realtime=STRICT)


@pytest.fixture(scope="session")
def fuzz_server(request, service_dir, redis_server, test_database):
    """A server without rate limits, for generated input."""
    realtime = {"RATE_LIMIT": 1_000_000, "RATE_BURST": 1_000_000, "MAX_AUTH_FAILURES": 1_000_000}
    return _start(request, service_dir, database=test_database, redis_url=redis_server.url, realtime=realtime)


@pytest.fixture(scope="session")
def memory_server(request, service_dir, test_database):
    """The embedded default: one process, in-memory layer, no Redis."""
    return _start(request, service_dir, database=test_database, realtime={"REVALIDATE_INTERVAL": 1})


@pytest.fixture(scope="session")
def uvicorn_server(request, service_dir, redis_server, test_database):
    """The same application under uvicorn: realtime must not depend on daphne."""
    return _start(request, service_dir, database=test_database, redis_url=redis_server.url, server="uvicorn")


@pytest.fixture(scope="session", params=["uvicorn", "uvicorn-realtime"])
def slow_reader_server(request, service_dir, test_database):
    """uvicorn (which applies socket backpressure) with a short queue for slow readers; with
    its own classes and with realtime's, whose pre-framed writes must give way to ``send``
    (and its back-pressure) when a socket buffer is full."""
    realtime = {"MAX_PENDING_FRAMES": 20, "RATE_LIMIT": 1_000_000, "RATE_BURST": 1_000_000}
    return _start(request, service_dir, database=test_database, realtime=realtime, server=request.param)


@pytest.fixture
def redis_layer(settings, redis_server):
    """Make this test process publish through the same Redis as the servers."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [{"address": redis_server.url}]},
        }
    }


@pytest.fixture
def connect():
    """Open RealtimeClients to a server; all are closed when the test ends."""
    clients = []

    def open_client(server, **kwargs):
        client = RealtimeClient(server.ws_url, **kwargs)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()


@pytest.fixture
def in_memory_layer(settings):
    """Channels' in-memory layer, whatever REDIS_URL says: realtime then uses its LocalBroker."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest_asyncio.fixture
async def communicator(in_memory_layer, transactional_db):
    """Open RealtimeCommunicators to the consumer in this test's process and event loop
    (no server, no Redis); all are closed when the test ends."""
    opened = []

    async def open_client(**kwargs):
        client = RealtimeCommunicator(**kwargs)
        opened.append(client)
        await client.connect()
        return client

    yield open_client
    for client in opened:
        await client.close()


@pytest.fixture
def make_channel(transactional_db):
    def make(name, **fields):
        return Channel.objects.create(name=name, **fields)

    return make


@pytest.fixture
def make_key(transactional_db):
    """Create an access key and return its secret."""

    def make(name=None, access="read-write", channels=(), **fields):
        make.count += 1
        name = name or f"key-{make.count}"
        if not channels:
            fields.setdefault("all_channels", True)
        _, secret = AccessKey.objects.create_key(name=name, access=access, channels=channels, **fields)
        return secret

    make.count = 0
    return make


# For async tests: the ORM is synchronous. Not thread-sensitive, because a thread-sensitive
# call marks its context with asgiref's deadlock guard, the on_commit announcement of the new
# row carries that context into the hub, and the hub's revalidation then fails (logged).
@pytest.fixture
def amake_channel(make_channel):
    return sync_to_async(make_channel, thread_sensitive=False)


@pytest.fixture
def amake_key(make_key):
    return sync_to_async(make_key, thread_sensitive=False)


@pytest.fixture
def uid():
    """A short unique suffix, so names never meet a server's cache from another test."""
    import secrets

    return secrets.token_hex(4)


@pytest.fixture(autouse=True)
def fresh_caches():
    """Signals clear the process caches on commit; rolled-back test transactions never commit."""
    from realtime import auth, registry

    auth.cache.clear()
    registry.cache.clear()
