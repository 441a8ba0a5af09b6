"""The native protocol, in process: RealtimeConsumer driven by realtime.testing.RealtimeCommunicator.

No server, no Redis: the in-memory layer, so publications go through this test's hub.
What needs real sockets, several processes or Redis is in the test_live_* files.
"""

from datetime import timedelta

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.utils import timezone

import realtime
from realtime import tokens
from realtime.permissions import Policy
from tests.matchers import SERVER_TIME

pytestmark = pytest.mark.asyncio


@pytest.fixture
def news(make_channel, uid):
    return make_channel(f"news-{uid}")


# Delivery ------------------------------------------------------------------------------


async def test_subscriber_receives_each_publication_as_one_message_frame(communicator, amake_key, news):
    writer, reader = await communicator(), await communicator()
    assert await writer.auth(await amake_key(access="read-write")) == {"ok": True, "id": 1}
    assert await reader.auth(await amake_key(access="read-only")) == {"ok": True, "id": 1}
    assert await reader.subscribe(news.name) == {"ok": True, "id": 2}

    assert await writer.publish(news.name, "headline", {"text": "hi", "n": [1, 2]}) == {"ok": True, "id": 2}

    assert await reader.next_message() == {
        "message": {
            "channel": news.name,
            "event": "headline",
            "data": {"text": "hi", "n": [1, 2]},
            "time": SERVER_TIME,
        }
    }


async def test_publications_from_python_and_the_http_api_reach_subscribers_too(
    communicator, amake_key, news, async_client
):
    reader = await communicator()
    await reader.auth(await amake_key(access="read-only"))
    await reader.subscribe(news.name)

    await realtime.apublish(news.name, "python", 1)
    response = await async_client.post(
        "/realtime/api/publish",
        {"channel": news.name, "event": "http", "data": 2},
        content_type="application/json",
        headers={"Authorization": f"Bearer {await amake_key()}"},
    )

    assert response.json() == {"ok": True}
    assert [(await reader.next_message())["message"]["data"] for _ in range(2)] == [1, 2]


async def test_publisher_subscribed_to_its_channel_receives_its_own_message(communicator, amake_key, news):
    client = await communicator()
    await client.auth(await amake_key())
    await client.subscribe(news.name)
    assert (await client.publish(news.name, "echo", None))["ok"] is True
    assert await client.next_message() == {
        "message": {"channel": news.name, "event": "echo", "data": None, "time": SERVER_TIME}
    }


async def test_reply_echoes_string_and_integer_ids(communicator, amake_key, news):
    client = await communicator()
    await client.send({"auth": {"secret": await amake_key()}, "id": "login-1"})
    assert await client.recv() == {"ok": True, "id": "login-1"}
    await client.send({"subscribe": {"channel": news.name}, "id": 42})
    assert await client.recv() == {"ok": True, "id": 42}
    await client.send({"subscribe": {"channel": news.name}})
    assert await client.recv() == {"ok": True}


async def test_replies_come_back_in_the_order_the_frames_were_sent(communicator, amake_key, news):
    client = await communicator()
    await client.send({"auth": {"secret": await amake_key()}, "id": 1})
    await client.send({"subscribe": {"channel": news.name}, "id": 2})
    await client.send({"publish": {"channel": news.name, "event": "e", "data": 3}, "id": 3})
    await client.send({"ping": True, "id": 4})
    frames = [await client.recv() for _ in range(5)]
    assert [frame.get("id") for frame in frames if "message" not in frame] == [1, 2, 3, 4]


async def test_ping_replies_ok(communicator):
    client = await communicator()
    assert await client.ping() == {"ok": True, "id": 1}


async def test_unsubscribe_stops_delivery(communicator, amake_key, amake_channel, news, uid):
    marker = await amake_channel(f"marker-{uid}")
    reader, writer = await communicator(), await communicator()
    await reader.auth(await amake_key())
    await writer.auth(await amake_key())
    await reader.subscribe(news.name)
    await reader.subscribe(marker.name)
    assert await reader.unsubscribe(news.name) == {"ok": True, "id": 4}
    await writer.publish(news.name, "e", "dropped")
    await writer.publish(marker.name, "e", "kept")
    assert (await reader.next_message())["message"]["data"] == "kept"


async def test_unsubscribing_from_a_channel_never_subscribed_is_ok(communicator, uid):
    client = await communicator()
    assert await client.unsubscribe(f"never-{uid}") == {"ok": True, "id": 1}


async def test_logout_drops_credentials_and_subscriptions_but_keeps_the_socket(communicator, amake_key, news):
    reader, writer = await communicator(), await communicator()
    await reader.auth(await amake_key())
    await writer.auth(await amake_key())
    await reader.subscribe(news.name)
    assert (await reader.logout())["ok"] is True
    assert (await reader.publish(news.name, "e", 1))["err"] == "access_denied"
    await writer.publish(news.name, "e", "after logout")
    with pytest.raises(TimeoutError):
        await reader.next_message(timeout=0.2)
    assert (await reader.auth(await amake_key()))["ok"] is True


async def test_logout_also_drops_subscriptions_to_channels_open_to_anonymous_readers(
    communicator, amake_key, amake_channel, uid
):
    public = await amake_channel(f"public-{uid}", anonymous_read=True)
    reader, writer = await communicator(), await communicator()
    await reader.subscribe(public.name)
    await reader.logout()
    await writer.auth(await amake_key())
    await writer.publish(public.name, "e", "after logout")
    with pytest.raises(TimeoutError):
        await reader.next_message(timeout=0.2)


# Credentials -----------------------------------------------------------------------------


async def test_unknown_secret_is_invalid_credentials(communicator):
    client = await communicator()
    assert await client.auth("rt_not-a-real-secret") == {
        "err": "invalid_credentials",
        "detail": "unknown, revoked or expired key",
        "id": 1,
    }


async def test_expired_key_is_invalid_credentials(communicator, amake_key):
    client = await communicator()
    secret = await amake_key(expires_at=timezone.now() - timedelta(seconds=1))
    assert (await client.auth(secret))["err"] == "invalid_credentials"


async def test_asking_read_write_with_a_read_only_key_is_invalid_credentials(communicator, amake_key):
    client = await communicator()
    reply = await client.auth(await amake_key(access="read-only"), access="read-write")
    assert reply["err"] == "invalid_credentials"


async def test_read_write_key_can_open_a_read_only_session(communicator, amake_key, news):
    client = await communicator()
    assert (await client.auth(await amake_key(), access="read-only"))["ok"] is True
    assert (await client.subscribe(news.name))["ok"] is True
    assert (await client.publish(news.name, "e", 1))["err"] == "access_denied"


async def test_second_auth_is_already_authenticated_until_a_logout(communicator, amake_key):
    client = await communicator()
    secret = await amake_key()
    await client.auth(secret)
    assert await client.auth(secret) == {"err": "already_authenticated", "detail": "log out first", "id": 2}
    await client.logout()
    assert (await client.auth(secret))["ok"] is True


# Signed browser tokens -------------------------------------------------------------------


@pytest.fixture
def alice(transactional_db, uid):
    return User.objects.create_user(f"alice-{uid}")


async def test_token_scope_is_by_channel_name(communicator, amake_channel, alice, uid):
    room, other = (
        await amake_channel(f"rooms-{uid}", include_subchannels=True),
        await amake_channel(f"other-{uid}"),
    )
    client = await communicator()
    assert (await client.auth(token=tokens.issue_token(alice, "read-write", [room.name])[0]))["ok"] is True
    assert (await client.subscribe(f"{room.name}/42"))["ok"] is True
    assert (await client.subscribe(other.name))["err"] == "access_denied"


async def test_a_read_only_token_cannot_publish(communicator, news, alice):
    client = await communicator()
    await client.auth(token=tokens.issue_token(alice, "read-only", [news.name])[0])
    assert (await client.publish(news.name, "e", 1))["err"] == "access_denied"


async def test_expired_or_tampered_token_is_invalid_credentials(communicator, alice):
    client = await communicator()
    expired, _ = tokens.issue_token(alice, ttl=-1)
    assert (await client.auth(token=expired))["err"] == "invalid_credentials"
    assert (await client.auth(token=expired[:-3] + "abc"))["err"] == "invalid_credentials"


async def test_a_token_users_publications_name_them_and_anonymous_ones_name_nobody(communicator, news, alice):
    reader, user, anonymous = await communicator(), await communicator(), await communicator()
    await reader.auth(token=tokens.issue_token(alice, "read-only", [news.name])[0])
    await reader.subscribe(news.name)
    await user.auth(token=tokens.issue_token(alice, "read-write", [news.name])[0])
    await anonymous.auth(token=tokens.issue_token(AnonymousUser(), "read-write", [news.name])[0])

    await user.publish(news.name, "e", {"user": {"id": 0, "name": "forged"}})
    await anonymous.publish(news.name, "e", 2)

    assert (await reader.next_message())["message"] == {
        "channel": news.name,
        "event": "e",
        "data": {"user": {"id": 0, "name": "forged"}},
        "user": {"id": alice.pk, "name": alice.username},
        "time": SERVER_TIME,
    }
    assert await reader.next_message() == {
        "message": {"channel": news.name, "event": "e", "data": 2, "time": SERVER_TIME}
    }


# Access ---------------------------------------------------------------------------------


async def test_read_only_key_cannot_publish(communicator, amake_key, news):
    client = await communicator()
    await client.auth(await amake_key(access="read-only"))
    assert await client.publish(news.name, "e", 1) == {
        "err": "access_denied",
        "detail": "read-only access cannot publish",
        "id": 2,
    }


async def test_unauthenticated_client_can_neither_subscribe_nor_publish(communicator, news):
    client = await communicator()
    assert (await client.subscribe(news.name))["err"] == "access_denied"
    assert (await client.publish(news.name, "e", 1))["err"] == "access_denied"


async def test_anonymous_client_may_read_a_channel_open_to_anonymous_readers(
    communicator, amake_key, amake_channel, uid
):
    public = await amake_channel(f"public-{uid}", anonymous_read=True)
    anonymous, writer = await communicator(), await communicator()
    assert (await anonymous.subscribe(public.name))["ok"] is True
    assert (await anonymous.publish(public.name, "e", 1))["err"] == "access_denied"
    await writer.auth(await amake_key())
    await writer.publish(public.name, "e", 2)
    assert (await anonymous.next_message())["message"]["data"] == 2


async def test_anonymous_client_learns_nothing_about_unknown_channels(communicator, uid):
    client = await communicator()
    assert (await client.subscribe(f"nothing-{uid}"))["err"] == "access_denied"


async def test_logging_in_keeps_access_to_channels_open_to_anonymous_readers(
    communicator, amake_key, amake_channel, uid
):
    public = await amake_channel(f"public-{uid}", anonymous_read=True)
    scoped_elsewhere = await amake_channel(f"private-{uid}")
    client = await communicator()
    await client.auth(await amake_key(channels=[scoped_elsewhere]))
    assert (await client.subscribe(public.name))["ok"] is True
    assert (await client.publish(public.name, "e", 1))["err"] == "access_denied"


async def test_subscriptions_made_before_auth_are_kept(communicator, amake_key, amake_channel, uid):
    public = await amake_channel(f"public-{uid}", anonymous_read=True)
    client = await communicator()
    await client.subscribe(public.name)
    await client.auth(await amake_key())
    await client.publish(public.name, "e", "still subscribed")
    assert (await client.next_message())["message"]["data"] == "still subscribed"


async def test_scoped_key_works_on_its_channels_and_their_subchannels_only(
    communicator, amake_key, amake_channel, uid
):
    rooms = await amake_channel(f"rooms-{uid}", include_subchannels=True)
    other = await amake_channel(f"other-{uid}")
    client = await communicator()
    await client.auth(await amake_key(channels=[rooms]))
    assert (await client.subscribe(f"{rooms.name}/42"))["ok"] is True
    assert (await client.publish(f"{rooms.name}/42/typing", "e", 1))["ok"] is True
    assert (await client.subscribe(other.name))["err"] == "access_denied"
    assert (await client.publish(other.name, "e", 1))["err"] == "access_denied"


# Channel names and channels ----------------------------------------------------------------


async def test_channel_without_subchannel_option_does_not_cover_names_below_it(communicator, amake_key, news):
    client = await communicator()
    await client.auth(await amake_key())
    assert (await client.subscribe(f"{news.name}/sub"))["err"] == "invalid_channel"


@pytest.mark.parametrize("name", ["", "a//b", "/lead", "trail/", "sp ace", "meta/x", "wild/*/x", "x" * 201])
@pytest.mark.parametrize("command", ["subscribe", "unsubscribe", "publish", "history", "presence"])
async def test_badly_formed_channel_names_are_invalid_channel_name(communicator, amake_key, command, name):
    client = await communicator()
    await client.auth(await amake_key())
    body = {"channel": name, "event": "e", "data": 1} if command == "publish" else {"channel": name}
    assert (await client.request(command, body))["err"] == "invalid_channel_name"


async def test_a_channel_that_is_not_a_string_is_invalid_data(communicator, amake_key):
    client = await communicator()
    await client.auth(await amake_key())
    assert (await client.subscribe(7))["err"] == "invalid_data"


async def test_publishing_to_a_pattern_is_invalid_channel_name(communicator, amake_key, amake_channel, uid):
    rooms = await amake_channel(f"rooms-{uid}", include_subchannels=True)
    client = await communicator()
    await client.auth(await amake_key())
    assert (await client.publish(f"{rooms.name}/*", "e", 1))["err"] == "invalid_channel_name"


async def test_unknown_and_inactive_channels_are_invalid_channel(communicator, amake_key, amake_channel, uid):
    await amake_channel(f"closed-{uid}", is_active=False)
    client = await communicator()
    await client.auth(await amake_key())
    assert await client.subscribe(f"unknown-{uid}") == {
        "err": "invalid_channel",
        "detail": f"no active channel covers 'unknown-{uid}'",
        "id": 2,
    }
    assert (await client.subscribe(f"closed-{uid}"))["err"] == "invalid_channel"
    assert (await client.publish(f"closed-{uid}", "e", 1))["err"] == "invalid_channel"


# Malformed frames ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "",
        "[1, 2]",
        '"just a string"',
        "{}",
        '{"explode": true}',
        '{"subscribe": {"channel": "a"}, "publish": {}}',
        '{"subscribe": "news"}',
        '{"publish": {"channel": "news", "event": "e"}}',
        '{"publish": {"channel": "news", "event": 5, "data": 1}}',
        '{"auth": {"secret": 123}}',
        '{"auth": {"secret": "x", "access": "admin"}}',
        '{"auth": {"secret": "x", "token": "y"}}',
        '{"logout": "yes"}',
        '{"history": {"channel": "news", "limit": 0}}',
        '{"subscribe": {"channel": "news"}, "id": true}',
        '{"subscribe": {"channel": "news"}, "id": NaN}',
        '{"publish": {"channel": "news", "event": "e", "data": Infinity}}',
    ],
)
async def test_malformed_frames_get_invalid_data_and_the_connection_keeps_working(communicator, frame):
    client = await communicator()
    await client.send_raw(frame)
    assert (await client.recv())["err"] == "invalid_data"
    assert (await client.ping())["ok"] is True


async def test_binary_frames_get_invalid_data_not_a_crash(communicator):
    client = await communicator()
    await client.send_raw(b"\x00\xff binary")
    assert await client.recv() == {
        "err": "invalid_data",
        "detail": "binary frames are not supported; send JSON text",
    }
    assert (await client.ping())["ok"] is True


async def test_errors_for_frames_with_a_readable_id_carry_it(communicator):
    client = await communicator()
    await client.send({"explode": True, "id": "x1"})
    assert await client.recv() == {"err": "invalid_data", "detail": "unknown command 'explode'", "id": "x1"}


async def test_errors_for_frames_without_a_readable_id_carry_none(communicator):
    client = await communicator()
    await client.send_raw('{"ping": true, "id": 1.5}')
    assert "id" not in await client.recv()


async def test_lone_surrogates_are_refused_and_never_reach_subscribers(communicator, amake_key, news):
    reader, writer = await communicator(), await communicator()
    await reader.auth(await amake_key())
    await reader.subscribe(news.name)
    await writer.auth(await amake_key())
    lone = '{"publish": {"channel": "CHANNEL", "event": "e", "data": "\\ud800"}, "id": 1}'
    await writer.send_raw(lone.replace("CHANNEL", news.name))
    assert (await writer.recv())["err"] == "invalid_data"
    await writer.send_raw('{"logout": true, "id": "\\udfff"}')
    assert (await writer.recv())["err"] == "invalid_data"
    await writer.publish(news.name, "e", "fine")
    assert (await reader.next_message())["message"]["data"] == "fine"


class BrokenPolicy(Policy):
    def can_subscribe(self, principal, channel):
        raise RuntimeError("a bug in the project's policy")


async def test_an_unexpected_error_is_internal_error_with_the_id_and_the_connection_goes_on(
    communicator, amake_key, news, settings, caplog
):
    settings.REALTIME = {"POLICY": f"{__name__}.BrokenPolicy"}
    client = await communicator()
    await client.auth(await amake_key())
    assert await client.subscribe(news.name) == {"err": "internal_error", "id": 2}
    assert "unexpected error handling a frame" in caplog.text
    assert (await client.ping())["ok"] is True
