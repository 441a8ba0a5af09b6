"""Real Bayeux client libraries against realtime, unchanged: Faye and CometD (npm, through
driver.mjs) and aiocometd (PyPI). Each talks to a native client through two server
processes sharing Redis."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.bayeux.wire import bayeux_url
from tests.matchers import SERVER_TIME

pytestmark = [pytest.mark.live]

CLIENTS = [
    ("faye", "websocket"),
    ("faye", "long-polling"),
    ("cometd", "websocket"),
    ("cometd", "long-polling"),
    ("cometd", "callback-polling"),
]
IDS = [f"{library}-{transport}" for library, transport in CLIENTS]


def auth(secret: str) -> dict:
    return {"auth": {"secret": secret}}


def receive(drv, channel: str, timeout: float = 8) -> dict:
    return drv.next_event("message", timeout=timeout, predicate=lambda e: e["channel"] == channel)


@pytest.mark.parametrize(("library", "transport"), CLIENTS, ids=IDS)
def test_a_client_with_a_key_handshakes_and_one_with_a_bad_secret_is_refused(
    servers, driver, make_key, library, transport
):
    drv = driver(library)
    reply = drv.request("connect", url=bayeux_url(servers[1]), transport=transport, ext=auth(make_key()))
    assert reply["ok"] is True and len(reply["clientId"]) >= 32
    refused = driver(library).request(
        "connect", url=bayeux_url(servers[1]), transport=transport, ext=auth("rt_wrong")
    )
    assert refused["ok"] is False
    assert refused["error"] == "403:invalid_credentials:handshake_denied"
    assert refused["advice"] == {"reconnect": "none"}


@pytest.mark.parametrize(("library", "transport"), CLIENTS, ids=IDS)
def test_a_client_subscribes_publishes_receives_and_talks_with_a_native_client(
    servers, driver, connect, make_key, make_channel, uid, library, transport
):
    rooms = make_channel(f"rooms-{uid}", include_subchannels=True).name
    native = connect(servers[0])
    native.auth(make_key())
    native.subscribe(f"{rooms}/1")
    drv = driver(library)
    drv.request("connect", url=bayeux_url(servers[1]), transport=transport, ext=auth(make_key()))
    assert drv.request("subscribe", channel=f"/{rooms}/1")["ok"] is True
    assert drv.request("subscribe", channel=f"/{rooms}/*")["ok"] is True

    # Bayeux -> native and to itself: once per subscription callback, one message on the wire.
    ack = drv.request("publish", channel=f"/{rooms}/1", data={"text": "from bayeux"})
    assert ack["ok"] is True
    assert native.next_message()["message"] == {
        "channel": f"{rooms}/1",
        "event": "message",
        "data": {"text": "from bayeux"},
        "time": SERVER_TIME,
    }
    seen = {receive(drv, f"/{rooms}/1")["data"]["text"], receive(drv, f"/{rooms}/*")["data"]["text"]}
    assert seen == {"from bayeux"}

    # native -> Bayeux, across processes: the exact and the wildcard subscription.
    native.publish(f"{rooms}/2", "chat", {"text": "to the wildcard"})
    got = receive(drv, f"/{rooms}/*")
    assert (got["message_channel"], got["data"]) == (f"/{rooms}/2", {"text": "to the wildcard"})
    assert got["ext"] == {"realtime": {"event": "chat", "time": SERVER_TIME}}

    assert drv.request("unsubscribe", channel=f"/{rooms}/*")["ok"] is True
    native.publish(f"{rooms}/2", "chat", "unheard")
    native.publish(f"{rooms}/1", "chat", "heard")
    assert receive(drv, f"/{rooms}/1")["data"] == "heard"
    assert not [e for e in drv.drain_events("message") if e["data"] == "unheard"]
    assert drv.request("disconnect")["ok"] is True


@pytest.mark.parametrize(("library", "transport"), CLIENTS, ids=IDS)
def test_a_refused_subscription_or_publication_reports_the_error(
    servers, driver, make_key, make_channel, uid, library, transport
):
    room = make_channel(f"room-{uid}").name
    drv = driver(library)
    drv.request(
        "connect", url=bayeux_url(servers[0]), transport=transport, ext=auth(make_key(access="read-only"))
    )
    assert (
        drv.request("subscribe", channel=f"/nowhere-{uid}")["error"] == f"404:/nowhere-{uid}:invalid_channel"
    )
    assert drv.request("publish", channel=f"/{room}", data=1)["error"] == f"403:/{room}:access_denied"


@pytest.fixture
def restartable(service_dir, redis_server, test_database):
    from tests.conftest import BAYEUX
    from tests.services import AsgiServer

    server = AsgiServer(service_dir, database=test_database, redis_url=redis_server.url, realtime=BAYEUX)
    yield server.start()
    server.stop()


@pytest.mark.parametrize(("library", "transport"), CLIENTS, ids=IDS)
def test_a_client_whose_session_is_unknown_handshakes_again_and_resubscribes(
    restartable, driver, connect, make_key, make_channel, uid, library, transport
):
    room = make_channel(f"room-{uid}").name
    drv = driver(library)
    drv.request(
        "connect", url=bayeux_url(restartable), transport=transport, ext=auth(make_key()), resubscribe=True
    )
    drv.request("subscribe", channel=f"/{room}")
    drv.drain_events("meta")
    restartable.stop()  # every session of that process is gone
    restartable.start()
    rehandshake = drv.next_event(
        "meta",
        timeout=30,
        predicate=lambda e: e["channel"] == "/meta/handshake" and e["message"]["successful"],
    )
    assert rehandshake["message"]["clientId"]
    resubscribed = drv.next_event("meta", timeout=10, predicate=lambda e: e["channel"] == "/meta/subscribe")
    assert resubscribed["message"]["successful"] is True
    publisher = connect(restartable)
    publisher.auth(make_key())
    publisher.publish(room, "e", "after the restart")
    assert receive(drv, f"/{room}", timeout=10)["data"] == "after the restart"


def test_cometd_remote_calls_reach_the_service_handler(servers, driver, make_key):
    for transport in ("websocket", "long-polling", "callback-polling"):
        drv = driver("cometd")
        drv.request("connect", url=bayeux_url(servers[0]), transport=transport, ext=auth(make_key()))
        reply = drv.request("remote_call", channel="/service/echo", data={"n": transport})
        assert reply["data"] == {"echo": {"n": transport}, "user": None}, transport
        refused = drv.request("remote_call", channel="/service/nothing-here", data=1, timeout=2)
        assert refused["ok"] is False  # acknowledged with no data: CometD's call times out


def test_faye_publishes_to_a_service_and_reads_the_answer(servers, driver, make_key):
    drv = driver("faye")
    drv.request("connect", url=bayeux_url(servers[0]), transport="websocket", ext=auth(make_key()))
    assert drv.request("remote_call", channel="/service/echo", data="hi")["data"] == {
        "echo": "hi",
        "user": None,
    }


# aiocometd (PyPI aiocometd-noloop) -------------------------------------------------------

AIO_TRANSPORTS = ["websocket", "long-polling"]


def aio_client(server, secret: str | None, transport: str):
    import aiocometd_noloop as aiocometd

    class Credentials(aiocometd.AuthExtension):
        async def outgoing(self, payload, headers):
            for message in payload:
                if message["channel"] == "/meta/handshake" and secret is not None:
                    message.setdefault("ext", {})["auth"] = {"secret": secret}

        async def incoming(self, payload, headers=None):
            pass

        async def authenticate(self):
            pass

    kind = aiocometd.ConnectionType(transport)
    return aiocometd.Client(bayeux_url(server), connection_types=[kind], auth=Credentials())


async def first_message(client, timeout=8):
    async def receive_one():
        async for message in client:
            return message

    return await asyncio.wait_for(receive_one(), timeout)


@pytest.mark.parametrize("transport", AIO_TRANSPORTS)
def test_aiocometd_subscribes_publishes_and_talks_with_a_native_client(
    servers, connect, make_key, make_channel, uid, transport
):
    rooms = make_channel(f"rooms-{uid}", include_subchannels=True).name
    native = connect(servers[0])
    native.auth(make_key())
    native.subscribe(f"{rooms}/1")
    secret = make_key()

    async def scenario():
        async with aio_client(servers[1], secret, transport) as client:
            await client.subscribe(f"/{rooms}/**")
            await client.publish(f"/{rooms}/1", {"text": "from aiocometd"})
            mine = await first_message(client)
            await asyncio.to_thread(native.publish, f"{rooms}/2/deep", "chat", "to aiocometd")
            theirs = await first_message(client)
            await client.unsubscribe(f"/{rooms}/**")
            return mine, theirs

    mine, theirs = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert mine["data"] == {"text": "from aiocometd"}
    assert (theirs["channel"], theirs["data"]) == (f"/{rooms}/2/deep", "to aiocometd")
    assert native.next_message()["message"]["data"] == {"text": "from aiocometd"}


@pytest.mark.parametrize("transport", AIO_TRANSPORTS)
def test_aiocometd_with_a_bad_secret_is_refused(server, transport):
    import aiocometd_noloop as aiocometd

    async def scenario():
        async with aio_client(server, "rt_wrong", transport):
            pass

    with pytest.raises(aiocometd.exceptions.AiocometdException) as caught:
        asyncio.run(asyncio.wait_for(scenario(), 20))
    assert "handshake_denied" in json.dumps(caught.value.args, default=str)
