"""Changes to keys and channels take effect on live connections, on every server process."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from realtime.models import AccessKey, Channel

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("redis_layer")]

# Changes made through the models are announced at once; the rest is caught by the
# periodic revalidation (REVALIDATE_INTERVAL is 2 s on these servers).
WITHIN = 6


def key_named(name):
    return AccessKey.objects.get(name=name)


@pytest.fixture
def news(make_channel, uid):
    return make_channel(f"news-{uid}")


def test_revoked_key_is_logged_out_and_can_no_longer_publish_on_every_process(
    servers, connect, make_key, news
):
    secret = make_key(name="publisher")
    clients = [connect(server) for server in servers]
    for client in clients:
        client.auth(secret)
        client.subscribe(news.name)

    key = key_named("publisher")
    key.is_active = False
    key.save()

    for client in clients:
        assert client.next_message(timeout=WITHIN) == {"logout": {"reason": "key_revoked"}}
        assert client.publish(news.name, "e", 1)["err"] == "access_denied"


def test_deleted_key_is_logged_out(server, connect, make_key):
    secret = make_key(name="doomed")
    client = connect(server)
    client.auth(secret)
    key_named("doomed").delete()
    assert client.next_message(timeout=WITHIN) == {"logout": {"reason": "key_revoked"}}
    assert client.auth(secret)["err"] == "invalid_credentials"


def test_deactivated_channel_unsubscribes_its_subscribers_on_every_process_and_says_why(
    servers, connect, make_key, news
):
    clients = [connect(server) for server in servers]
    for client in clients:
        client.auth(make_key())
        client.subscribe(news.name)

    news.is_active = False
    news.save()

    for client in clients:
        assert client.next_message(timeout=WITHIN) == {
            "unsubscribed": {"channel": news.name, "reason": "channel_unavailable"}
        }
        assert client.subscribe(news.name)["err"] == "invalid_channel"


def test_deleted_channel_unsubscribes_subchannel_subscribers(server, connect, make_key, make_channel, uid):
    rooms = make_channel(f"rooms-{uid}", include_subchannels=True)
    client = connect(server)
    client.auth(make_key())
    client.subscribe(f"{rooms.name}/1")
    rooms.delete()
    assert client.next_message(timeout=WITHIN) == {
        "unsubscribed": {"channel": f"{rooms.name}/1", "reason": "channel_unavailable"}
    }


def test_bulk_update_without_signals_is_caught_by_periodic_revalidation(server, connect, make_key, news):
    client = connect(server)
    client.auth(make_key())
    client.subscribe(news.name)
    Channel.objects.filter(pk=news.pk).update(is_active=False)
    assert client.next_message(timeout=WITHIN) == {
        "unsubscribed": {"channel": news.name, "reason": "channel_unavailable"}
    }


def test_channel_removed_from_a_keys_scope_is_access_revoked(
    server, connect, make_key, make_channel, news, uid
):
    other = make_channel(f"other-{uid}")
    secret = make_key(name="scoped", channels=[news, other])
    client = connect(server)
    client.auth(secret)
    client.subscribe(news.name)
    key_named("scoped").channels.remove(news)
    assert client.next_message(timeout=WITHIN) == {
        "unsubscribed": {"channel": news.name, "reason": "access_revoked"}
    }
    assert client.publish(other.name, "e", 1)["ok"] is True


def test_key_downgraded_to_read_only_can_no_longer_publish(server, connect, make_key, news):
    client = connect(server)
    client.auth(make_key(name="downgraded"))
    AccessKey.objects.filter(name="downgraded").update(access="read-only")
    deadline = timezone.now() + timedelta(seconds=WITHIN)
    while client.publish(news.name, "e", 1).get("ok") and timezone.now() < deadline:
        time.sleep(0.1)
    assert client.publish(news.name, "e", 1)["err"] == "access_denied"
    assert client.subscribe(news.name)["ok"] is True


def test_key_that_expires_while_connected_is_logged_out(server, connect, make_key):
    client = connect(server)
    client.auth(make_key(expires_at=timezone.now() + timedelta(seconds=1)))
    assert client.next_message(timeout=WITHIN) == {"logout": {"reason": "key_revoked"}}


def test_regenerated_secret_ends_sessions_opened_with_the_old_one(server, connect, make_key):
    old_secret = make_key(name="rotated")
    client = connect(server)
    client.auth(old_secret)
    key = key_named("rotated")
    new_secret = key.set_new_secret()
    key.save()
    assert client.next_message(timeout=WITHIN) == {"logout": {"reason": "key_revoked"}}
    assert client.auth(old_secret)["err"] == "invalid_credentials"
    assert client.auth(new_secret)["ok"] is True
