"""Limits, counters and close codes, in process, with tiny limits (tests.conftest.STRICT)."""

import asyncio

import pytest

from realtime.testing import ConnectionClosed
from tests.conftest import STRICT
from tests.services import free_port

pytestmark = pytest.mark.asyncio


@pytest.fixture(autouse=True)
def strict(settings):
    settings.REALTIME = STRICT


@pytest.fixture
def news(make_channel, uid):
    return make_channel(f"news-{uid}")


# Sizes -------------------------------------------------------------------------------------


async def test_frame_over_the_size_limit_is_message_too_large(communicator):
    client = await communicator()
    await client.send(
        {"publish": {"channel": "x", "event": "e", "data": "a" * STRICT["MAX_MESSAGE_SIZE"]}, "id": 1}
    )
    assert await client.recv() == {"err": "message_too_large", "detail": "frames are limited to 1024 bytes"}
    assert (await client.ping())["ok"] is True


async def test_multibyte_text_is_measured_in_bytes(communicator, amake_key, news):
    client = await communicator()
    await client.auth(await amake_key())
    assert (await client.publish(news.name, "e", "é" * 450))["ok"] is True
    await client.send({"publish": {"channel": news.name, "event": "e", "data": "é" * 600}})  # 1200 bytes
    assert (await client.recv())["err"] == "message_too_large"


async def test_a_publication_over_the_size_limit_is_message_too_large(
    communicator, amake_key, news, settings
):
    settings.REALTIME = {**STRICT, "MAX_MESSAGE_SIZE": 200}
    client = await communicator()
    await client.auth(await amake_key())
    # 1e5 is 3 bytes in the frame and 8 (100000.0) in the publication: the frame fits, it does not.
    data = ",".join(["1e5"] * 20)
    await client.send_raw(f'{{"publish":{{"channel":"{news.name}","event":"e","data":[{data}]}},"id":2}}')
    assert await client.recv() == {
        "err": "message_too_large",
        "detail": "publications are limited to 200 bytes",
        "id": 2,
    }


# Subscriptions -----------------------------------------------------------------------------


async def test_subscriptions_beyond_the_limit_are_too_many_subscriptions(
    communicator, amake_key, amake_channel, uid
):
    rooms = await amake_channel(f"rooms-{uid}", include_subchannels=True)
    client = await communicator()
    await client.auth(await amake_key())
    for n in range(STRICT["MAX_SUBSCRIPTIONS"]):
        assert (await client.subscribe(f"{rooms.name}/{n}"))["ok"] is True
    assert (await client.subscribe(f"{rooms.name}/0"))["ok"] is True  # already held: no new one
    assert (await client.subscribe(f"{rooms.name}/*"))["err"] == "too_many_subscriptions"  # patterns count
    assert await client.subscribe(f"{rooms.name}/extra") == {
        "err": "too_many_subscriptions",
        "detail": "at most 3 subscriptions",
        "id": 7,
    }
    await client.unsubscribe(f"{rooms.name}/0")
    assert (await client.subscribe(f"{rooms.name}/extra"))["ok"] is True


async def test_logout_frees_every_subscription(communicator, amake_key, amake_channel, uid):
    rooms = await amake_channel(f"rooms-{uid}", include_subchannels=True)
    client = await communicator()
    secret = await amake_key()
    await client.auth(secret)
    for n in range(STRICT["MAX_SUBSCRIPTIONS"]):
        await client.subscribe(f"{rooms.name}/{n}")
    await client.logout()
    await client.auth(secret)
    for n in range(STRICT["MAX_SUBSCRIPTIONS"]):
        assert (await client.subscribe(f"{rooms.name}/new-{n}"))["ok"] is True


# Malformed frames: 4001 --------------------------------------------------------------------


async def test_a_client_that_keeps_sending_garbage_is_closed_with_4001_after_the_last_reply(communicator):
    client = await communicator()
    for _ in range(STRICT["MAX_INVALID_FRAMES"]):
        await client.send_raw("garbage")
        assert (await client.recv())["err"] == "invalid_data"
    assert await client.closed() == 4001
    assert not client.connected


async def test_frames_too_large_count_as_malformed_too(communicator):
    client = await communicator()
    await client.send_raw("x" * (STRICT["MAX_MESSAGE_SIZE"] + 1))
    await client.send_raw(b"binary")
    await client.send_raw("{")
    assert [(await client.recv())["err"] for _ in range(3)] == [
        "message_too_large",
        "invalid_data",
        "invalid_data",
    ]
    assert await client.closed() == 4001


async def test_a_valid_command_resets_the_garbage_count(communicator):
    client = await communicator()
    for _ in range(3):
        for _ in range(STRICT["MAX_INVALID_FRAMES"] - 1):
            await client.send_raw("garbage")
            assert (await client.recv())["err"] == "invalid_data"
        assert (await client.ping())["ok"] is True
    assert client.connected


async def test_other_errors_neither_count_as_garbage_nor_reset_the_count(communicator, uid):
    client = await communicator()
    publish = {"publish": {"channel": f"news-{uid}", "event": "e", "data": 1}}
    for _ in range(STRICT["MAX_INVALID_FRAMES"] - 1):
        await client.send_raw("garbage")
    for _ in range(STRICT["MAX_INVALID_FRAMES"]):
        await client.send(publish)  # access_denied: not authenticated
    await client.send_raw("garbage")
    errors = [(await client.recv())["err"] for _ in range(2 * STRICT["MAX_INVALID_FRAMES"])]
    assert errors == ["invalid_data"] * 2 + ["access_denied"] * 3 + ["invalid_data"]
    assert await client.closed() == 4001


async def test_frames_sent_after_disconnect_are_ignored(communicator):
    client = await communicator()
    await client.send({"disconnect": True, "id": 1})
    await client.send({"ping": True, "id": 2})
    assert await client.recv() == {"ok": True, "id": 1}
    with pytest.raises(ConnectionClosed) as closed:
        await client.recv()
    assert closed.value.code == 1000


async def test_other_clients_are_unaffected_by_a_misbehaving_one(communicator, amake_key, news):
    good, bad = await communicator(), await communicator()
    await good.auth(await amake_key())
    await good.subscribe(news.name)
    for _ in range(STRICT["MAX_INVALID_FRAMES"]):
        await bad.send_raw("{")
    assert await bad.closed() == 4001
    assert (await good.publish(news.name, "e", "still here"))["ok"] is True
    assert (await good.next_message())["message"]["data"] == "still here"


# Failed auth: 4002 -------------------------------------------------------------------------


async def test_repeated_failed_auth_closes_the_connection_with_4002(communicator):
    client = await communicator()
    for _ in range(STRICT["MAX_AUTH_FAILURES"]):
        await client.send({"auth": {"secret": "rt_wrong"}})
        assert (await client.recv())["err"] == "invalid_credentials"
    assert await client.closed() == 4002


async def test_the_failed_auth_count_is_never_reset(communicator):
    client = await communicator()
    for _ in range(STRICT["MAX_AUTH_FAILURES"] - 1):
        assert (await client.auth("rt_wrong"))["err"] == "invalid_credentials"
        assert (await client.ping())["ok"] is True
        assert (await client.logout())["ok"] is True
    assert (await client.auth("rt_wrong"))["err"] == "invalid_credentials"
    assert await client.closed() == 4002


async def test_failed_auth_is_not_garbage(communicator):
    client = await communicator()
    for _ in range(STRICT["MAX_INVALID_FRAMES"] - 1):
        await client.send_raw("garbage")
    for _ in range(STRICT["MAX_AUTH_FAILURES"] - 1):
        await client.send({"auth": {"secret": "rt_wrong"}})
    errors = [(await client.recv())["err"] for _ in range(4)]
    assert errors == ["invalid_data"] * 2 + ["invalid_credentials"] * 2
    assert (await client.ping())["ok"] is True


# Rate limit ----------------------------------------------------------------------------------


async def test_frames_faster_than_the_rate_limit_are_refused_with_their_ids_then_accepted_again(
    communicator, settings
):
    settings.REALTIME = {**STRICT, "RATE_LIMIT": 2}  # slow refills: no token comes back meanwhile
    client = await communicator()
    frames = STRICT["RATE_BURST"] + 5
    for n in range(frames):
        await client.send({"ping": True, "id": n})
    replies = [await client.recv() for _ in range(frames)]
    assert [reply["id"] for reply in replies] == list(range(frames))
    assert sum("ok" in reply for reply in replies) == STRICT["RATE_BURST"]
    assert replies[-1] == {"err": "rate_limited", "detail": "slow down", "id": frames - 1}
    await asyncio.sleep(0.55)  # one token back
    assert (await client.ping())["ok"] is True


async def test_rate_limited_frames_do_not_reset_the_garbage_count(communicator, settings):
    settings.REALTIME = {**STRICT, "RATE_LIMIT": 2}
    client = await communicator()
    for n in range(STRICT["RATE_BURST"]):
        await client.send({"ping": True, "id": n})
    for _ in range(STRICT["MAX_INVALID_FRAMES"] - 1):
        await client.send_raw("garbage")
    await client.send({"ping": True, "id": "refused"})
    await client.send_raw("garbage")
    replies = [await client.recv() for _ in range(STRICT["RATE_BURST"] + STRICT["MAX_INVALID_FRAMES"] + 1)]
    assert {"err": "rate_limited", "detail": "slow down", "id": "refused"} in replies
    assert await client.closed() == 4001


# Origins: 4003 ---------------------------------------------------------------------------------


async def test_browser_from_a_foreign_origin_is_closed_with_4003_before_any_frame(communicator, settings):
    settings.REALTIME = {"ALLOWED_ORIGINS": ["https://app.example"]}
    client = await communicator(origin="https://evil.example")
    assert client.accepted
    assert await client.closed() == 4003
    assert not client.pending


@pytest.mark.parametrize("origin", ["https://app.example", "https://app.example:443", None])
async def test_browser_from_an_allowed_origin_or_a_client_without_one_may_connect(
    communicator, settings, amake_key, origin
):
    settings.REALTIME = {"ALLOWED_ORIGINS": ["app.example"]}
    client = await communicator(origin=origin)
    assert (await client.auth(await amake_key()))["ok"] is True


async def test_origins_default_to_allowed_hosts(communicator, settings):
    settings.ALLOWED_HOSTS = [".example.com"]
    allowed = await communicator(origin="https://www.example.com")
    assert (await allowed.ping())["ok"] is True
    refused = await communicator(origin="https://example.org")
    assert await refused.closed() == 4003


# disconnect: 1000; no broker: 4005 -------------------------------------------------------------


async def test_disconnect_replies_ok_then_closes_normally(communicator):
    client = await communicator()
    assert await client.disconnect() == {"ok": True, "id": 1}
    assert await client.closed() == 1000


async def test_a_connection_opened_while_the_broker_is_unreachable_is_closed_with_4005(
    communicator, settings
):
    nowhere = f"redis://127.0.0.1:{free_port()}"  # nothing listens there
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [{"address": nowhere, "socket_connect_timeout": 1}]},
        }
    }
    client = await communicator()
    assert await client.closed() == 4005
