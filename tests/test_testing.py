"""realtime.testing.RealtimeCommunicator itself: what it promises the projects that use it."""

import os
import subprocess
import sys

import pytest
from channels.routing import URLRouter
from channels.security.websocket import OriginValidator
from django.urls import path

from realtime.consumers import RealtimeConsumer
from realtime.routing import websocket_urlpatterns
from realtime.testing import ConnectionClosed, RealtimeCommunicator
from tests.services import ROOT


@pytest.mark.asyncio
async def test_it_serves_the_projects_router_at_a_path(communicator):
    client = await communicator(application=URLRouter(websocket_urlpatterns), path="/realtime/ws")
    assert client.connected
    assert await client.ping() == {"ok": True, "id": 1}


@pytest.mark.asyncio
async def test_it_serves_the_consumer_mounted_elsewhere(communicator):
    router = URLRouter([path("live/socket", RealtimeConsumer.as_asgi())])
    client = await communicator(application=router, path="/live/socket")
    assert await client.ping() == {"ok": True, "id": 1}


@pytest.mark.asyncio
async def test_origin_and_headers_reach_the_application(communicator):
    seen = {}

    async def application(scope, receive, send):
        seen.update(scope["headers"])
        await receive()
        await send({"type": "websocket.accept"})
        await receive()

    await communicator(application=application, origin="https://app.example", headers=[("X-Test", "1")])
    assert seen == {b"origin": b"https://app.example", b"x-test": b"1"}


@pytest.mark.asyncio
async def test_an_application_that_refuses_the_handshake_is_not_connected(communicator):
    validated = OriginValidator(RealtimeConsumer.as_asgi(), ["https://app.example"])
    client = await communicator(application=validated, origin="https://evil.example")
    assert (client.accepted, client.connected, client.close_code) == (False, False, 1000)


@pytest.mark.asyncio
async def test_request_keeps_the_frames_before_its_reply_for_next_message(
    communicator, amake_key, amake_channel, uid
):
    news = await amake_channel(f"news-{uid}")
    client = await communicator()
    await client.auth(await amake_key())
    await client.subscribe(news.name)
    # In one process, a publisher's own publication reaches it before its reply.
    assert await client.publish(news.name, "e", 1) == {"ok": True, "id": 3}
    assert await client.publish(news.name, "e", 2) == {"ok": True, "id": 4}
    assert [(await client.next_message())["message"]["data"] for _ in range(2)] == [1, 2]


@pytest.mark.asyncio
async def test_waiting_for_nothing_times_out_and_leaves_the_connection_open(communicator):
    client = await communicator()
    with pytest.raises(TimeoutError):
        await client.next_message(timeout=0.05)
    assert await client.ping() == {"ok": True, "id": 1}


@pytest.mark.asyncio
async def test_after_the_server_closes_every_call_raises_connection_closed(communicator):
    client = await communicator()
    await client.disconnect()
    assert await client.closed() == 1000
    with pytest.raises(ConnectionClosed) as closed:
        await client.recv()
    assert closed.value.code == 1000
    with pytest.raises(ConnectionClosed):
        await client.ping()


@pytest.mark.asyncio
async def test_leaving_the_async_with_block_closes_and_lets_the_consumer_finish(
    in_memory_layer, transactional_db
):
    async with RealtimeCommunicator() as client:
        assert client.connected
    assert client.communicator.future.done()
    assert (client.connected, client.close_code) == (False, 1000)
    await client.close()  # again: nothing happens


def test_it_imports_without_websockets_and_without_loading_channels():
    code = """
import sys
sys.modules["websockets"] = None  # as if it were not installed
import realtime.testing
loaded = [name for name, module in sys.modules.items() if module and name.startswith(("channels", "daphne"))]
assert not loaded, loaded
"""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
