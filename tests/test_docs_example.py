import pytest

from demo_site.asgi import application  # your project's ASGI application
from realtime.models import AccessKey, Channel
from realtime.testing import RealtimeCommunicator


@pytest.fixture(autouse=True)
def in_memory_layer(settings):
    # One process, no Redis: publications go through this test's own hub.
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture
def secret(transactional_db):
    # transactional_db, not db: the consumer reads the database from another thread.
    Channel.objects.create(name="news")
    _, secret = AccessKey.objects.create_key(name="tests", access="read-write", all_channels=True)
    return secret


@pytest.mark.asyncio
async def test_a_subscriber_receives_what_is_published(secret):
    async with RealtimeCommunicator(application) as reader, RealtimeCommunicator(application) as writer:
        assert await reader.auth(secret) == {"ok": True, "id": 1}
        assert await reader.subscribe("news") == {"ok": True, "id": 2}
        await writer.auth(secret)

        await writer.publish("news", "headline", {"text": "hi"})

        message = (await reader.next_message())["message"]
        assert (message["channel"], message["event"], message["data"]) == ("news", "headline", {"text": "hi"})


@pytest.mark.asyncio
async def test_a_read_only_session_cannot_publish(secret):
    async with RealtimeCommunicator(application) as client:
        await client.auth(secret, access="read-only")
        reply = await client.publish("news", "headline", {"text": "hi"})
        assert reply["err"] == "access_denied"


@pytest.mark.asyncio
async def test_wrong_secrets_close_the_socket_with_4002(transactional_db, settings):
    settings.REALTIME = {"MAX_AUTH_FAILURES": 2}
    async with RealtimeCommunicator(application) as client:
        assert (await client.auth("rt_wrong"))["err"] == "invalid_credentials"
        assert (await client.auth("rt_wrong"))["err"] == "invalid_credentials"
        assert await client.closed() == 4002


@pytest.mark.asyncio
async def test_a_page_from_another_site_is_refused_with_4003(transactional_db, settings):
    settings.REALTIME = {"ALLOWED_ORIGINS": ["https://app.example"]}
    async with RealtimeCommunicator(application, origin="https://evil.example") as client:
        assert await client.closed() == 4003
