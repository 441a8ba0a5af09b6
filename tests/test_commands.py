import json
import re
from datetime import timedelta
from io import StringIO

import pytest
from channels.layers import BaseChannelLayer, get_channel_layer
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.utils import timezone

from realtime import keys
from realtime.auth import authenticate_secret
from realtime.errors import InvalidCredentials
from realtime.models import AccessKey, Channel
from tests.matchers import SERVER_TIME


def run(command_line, *more_args):
    out, err = StringIO(), StringIO()
    call_command(*command_line.split(), *more_args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def last_line(output):
    return output.rstrip("\n").splitlines()[-1]


# realtime_key create ----------------------------------------------------------------


@pytest.mark.django_db
def test_key_create_prints_a_secret_that_authenticates_on_its_last_line():
    news = Channel.objects.create(name="news")
    rooms = Channel.objects.create(name="rooms")
    out, _ = run("realtime_key create --name pub --access read-write --channel news --channel rooms")
    secret = last_line(out)
    assert secret.startswith(keys.SECRET_PREFIX)
    principal = authenticate_secret(secret)
    assert principal.name == "pub"
    assert principal.can_write
    assert not principal.all_channels
    assert principal.channel_ids == {news.pk, rooms.pk}
    assert "will not be shown again" in out


@pytest.mark.django_db
def test_key_create_read_only_on_all_channels():
    out, _ = run("realtime_key create --name reader --access read-only --all-channels")
    principal = authenticate_secret(last_line(out))
    assert principal.access == "read-only"
    assert principal.all_channels
    assert "read-only on all channels, never expires" in out


@pytest.mark.django_db
def test_key_create_stores_only_the_hash_of_the_secret():
    out, _ = run("realtime_key create --name k --access read-only --all-channels")
    secret = last_line(out)
    key = AccessKey.objects.get(name="k")
    assert secret not in (key.secret_hash, key.secret_prefix)
    assert key.secret_hash == keys.hash_secret(secret)


@pytest.mark.django_db
def test_key_create_with_expiry_sets_expires_at():
    run("realtime_key create --name k --access read-only --all-channels --expires-in-days 7")
    expires_at = AccessKey.objects.get(name="k").expires_at
    assert abs(expires_at - (timezone.now() + timedelta(days=7))) < timedelta(minutes=1)


@pytest.mark.django_db
def test_key_create_without_a_scope_explains_both_options():
    with pytest.raises(CommandError, match="--channel NAME .* or --all-channels"):
        run("realtime_key create --name k --access read-only")
    assert not AccessKey.objects.exists()


@pytest.mark.django_db
def test_key_create_refuses_both_channels_and_all_channels():
    Channel.objects.create(name="news")
    with pytest.raises(CommandError, match="not both"):
        run("realtime_key create --name k --access read-only --channel news --all-channels")


@pytest.mark.django_db
def test_key_create_refuses_an_unknown_channel():
    Channel.objects.create(name="news")
    with pytest.raises(CommandError, match="unknown channel.*nope"):
        run("realtime_key create --name k --access read-only --channel news --channel nope")
    assert not AccessKey.objects.exists()


@pytest.mark.django_db
def test_key_create_refuses_a_duplicate_name():
    AccessKey.objects.create_key(name="k", access="read-only", all_channels=True)
    with pytest.raises(CommandError, match="already exists"):
        run("realtime_key create --name k --access read-only --all-channels")


@pytest.mark.django_db
def test_key_create_refuses_a_name_the_model_rejects():
    with pytest.raises(CommandError, match="at most 100 characters"):
        run("realtime_key create --access read-only --all-channels --name", "k" * 101)


@pytest.mark.django_db
def test_key_create_refuses_a_non_positive_expiry():
    with pytest.raises(CommandError, match="at least 1"):
        run("realtime_key create --name k --access read-only --all-channels --expires-in-days 0")


@pytest.mark.django_db
def test_key_create_refuses_an_unknown_access():
    with pytest.raises(CommandError, match="invalid choice"):
        run("realtime_key create --name k --access owner --all-channels")


def test_key_command_requires_a_subcommand():
    with pytest.raises(CommandError):
        run("realtime_key")


# realtime_key list / revoke / regenerate -------------------------------------------


@pytest.mark.django_db
def test_key_list_shows_keys_without_secrets():
    news = Channel.objects.create(name="news")
    writer, writer_secret = AccessKey.objects.create_key(name="writer", access="read-write", channels=[news])
    reader, reader_secret = AccessKey.objects.create_key(
        name="reader", access="read-only", all_channels=True, expires_at=timezone.now() - timedelta(days=1)
    )
    reader.is_active = False
    reader.save()
    out, _ = run("realtime_key list")
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "ACCESS", "SCOPE", "ACTIVE", "EXPIRES", "LAST", "USED", "PREFIX"]
    assert rows[0].startswith("reader") and "all channels" in rows[0] and "revoked" in rows[0]
    assert "(expired)" in rows[0]
    assert rows[1].startswith("writer") and "news" in rows[1] and "never" in rows[1]
    assert f"{writer.secret_prefix}…" in rows[1]
    for secret in (writer_secret, reader_secret):
        assert secret not in out
    assert writer.secret_hash not in out


@pytest.mark.django_db
def test_key_list_shortens_long_scopes():
    channels = [Channel.objects.create(name=f"channel-number-{i}") for i in range(5)]
    AccessKey.objects.create_key(name="k", access="read-only", channels=channels)
    out, _ = run("realtime_key list")
    assert "channel-number-0, channel-number-1, channel-number-2 +2" in out
    assert "channel-number-4" not in out


@pytest.mark.django_db
def test_key_list_says_when_there_are_none():
    out, _ = run("realtime_key list")
    assert out.strip() == "No access keys."


@pytest.mark.django_db
def test_key_revoke_stops_the_secret_and_announces_the_change(django_capture_on_commit_callbacks):
    _, secret = AccessKey.objects.create_key(name="k", access="read-only", all_channels=True)
    with django_capture_on_commit_callbacks() as callbacks:
        out, _ = run("realtime_key revoke k")
    assert "Revoked" in out
    assert callbacks, "the post_save signal should schedule notify_changed"
    assert not AccessKey.objects.get(name="k").is_active
    with pytest.raises(InvalidCredentials):
        authenticate_secret(secret)


@pytest.mark.django_db
def test_key_revoke_twice_says_it_already_was():
    AccessKey.objects.create_key(name="k", access="read-only", all_channels=True)
    run("realtime_key revoke k")
    out, _ = run("realtime_key revoke k")
    assert "already revoked" in out


@pytest.mark.django_db
def test_key_revoke_of_an_unknown_key_fails():
    with pytest.raises(CommandError, match="no access key named 'ghost'"):
        run("realtime_key revoke ghost")


@pytest.mark.django_db
def test_key_regenerate_replaces_the_secret():
    key, old = AccessKey.objects.create_key(name="k", access="read-write", all_channels=True)
    out, err = run("realtime_key regenerate k")
    new = last_line(out)
    assert new.startswith(keys.SECRET_PREFIX) and new != old
    assert authenticate_secret(new).key_id == key.pk
    with pytest.raises(InvalidCredentials):
        authenticate_secret(old)
    assert err == ""


@pytest.mark.django_db
def test_key_regenerate_warns_when_the_key_is_revoked():
    AccessKey.objects.create_key(name="k", access="read-write", all_channels=True, is_active=False)
    out, err = run("realtime_key regenerate k")
    assert last_line(out).startswith(keys.SECRET_PREFIX)
    assert "revoked or expired" in err


@pytest.mark.django_db
def test_key_regenerate_of_an_unknown_key_fails():
    with pytest.raises(CommandError, match="no access key named 'ghost'"):
        run("realtime_key regenerate ghost")


# realtime_channel ---------------------------------------------------------------------


@pytest.mark.django_db
def test_channel_create_with_options():
    out, _ = run("realtime_channel create rooms --subchannels --anonymous-read --description Chat")
    channel = Channel.objects.get(name="rooms")
    assert channel.include_subchannels and channel.anonymous_read and channel.is_active
    assert channel.description == "Chat"
    assert "Created channel 'rooms' (covers sub-channels, anonymous read)." in out


@pytest.mark.django_db
def test_channel_create_with_history_and_presence():
    out, _ = run(
        "realtime_channel create chat --history 50 --history-ttl 600 --durable --presence --join-leave"
    )
    assert out.strip() == ("Created channel 'chat' (history 50, 600s, durable, presence with join/leave).")
    channel = Channel.objects.get(name="chat")
    assert (channel.history_size, channel.history_ttl, channel.history_durable) == (50, 600, True)
    assert (channel.presence, channel.join_leave) == (True, True)


@pytest.mark.django_db
def test_channel_create_with_history_keeps_the_default_lifetime():
    run("realtime_channel create news --history 10")
    assert Channel.objects.get(name="news").history_ttl == 24 * 3600


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("flags", "error"),
    [
        ("--durable", "--durable needs --history N"),
        ("--join-leave", "--join-leave needs --presence"),
        ("--history-ttl 60", "--history-ttl needs --history N"),
        ("--history -1", "must be 0 or more"),
        ("--history 5 --history-ttl -1", "must be 0 or more"),
    ],
)
def test_channel_create_refuses_options_that_do_not_fit_together(flags, error):
    with pytest.raises(CommandError, match=error):
        run(f"realtime_channel create news {flags}")
    assert not Channel.objects.exists()


@pytest.mark.django_db
def test_channel_create_with_defaults():
    out, _ = run("realtime_channel create news")
    channel = Channel.objects.get(name="news")
    assert not channel.include_subchannels and not channel.anonymous_read
    assert out.strip() == "Created channel 'news'."


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["bad name", "meta/x", "a//b", ""])
def test_channel_create_refuses_an_invalid_name(name):
    with pytest.raises(CommandError, match="invalid channel name"):
        run("realtime_channel create", name)
    assert not Channel.objects.exists()


@pytest.mark.django_db
def test_channel_create_refuses_a_duplicate():
    Channel.objects.create(name="news")
    with pytest.raises(CommandError, match="already exists"):
        run("realtime_channel create news")


@pytest.mark.django_db
def test_channel_list_shows_every_channel():
    Channel.objects.create(name="news", anonymous_read=True, description="Top\nstories")
    Channel.objects.create(name="rooms", include_subchannels=True, is_active=False, presence=True)
    Channel.objects.create(name="tour", history_size=100, history_ttl=3600, history_durable=True)
    out, _ = run("realtime_channel list")
    header, news, rooms, tour = out.splitlines()
    assert header.split() == [
        "NAME", "ACTIVE", "SUB-CHANNELS", "ANONYMOUS", "READ", "HISTORY", "PRESENCE", "DESCRIPTION",
    ]  # fmt: skip
    assert news.split() == ["news", "yes", "no", "yes", "no", "no", "Top", "stories"]
    assert rooms.split() == ["rooms", "no", "yes", "no", "no", "yes"]
    assert tour.split() == ["tour", "yes", "no", "no", "100,", "3600s,", "durable", "no"]


@pytest.mark.django_db
def test_channel_list_says_when_there_are_none():
    out, _ = run("realtime_channel list")
    assert out.strip() == "No channels."


@pytest.mark.django_db
def test_channel_deactivate_and_activate(django_capture_on_commit_callbacks):
    Channel.objects.create(name="news")
    with django_capture_on_commit_callbacks() as callbacks:
        out, _ = run("realtime_channel deactivate news")
    assert callbacks
    assert "now inactive" in out
    assert not Channel.objects.get(name="news").is_active
    out, _ = run("realtime_channel deactivate news")
    assert "already inactive" in out
    out, _ = run("realtime_channel activate news")
    assert "now active" in out
    assert Channel.objects.get(name="news").is_active
    out, _ = run("realtime_channel activate news")
    assert "already active" in out


@pytest.mark.django_db
@pytest.mark.parametrize("subcommand", ["activate", "deactivate"])
def test_channel_activation_of_an_unknown_channel_fails(subcommand):
    with pytest.raises(CommandError, match="no channel named 'ghost'"):
        run("realtime_channel", subcommand, "ghost")


# realtime_publish ---------------------------------------------------------------------


class RecordingLayer(BaseChannelLayer):
    """A channel layer that is not the in-memory one, so realtime treats it as
    multi-process (as it would channels_redis), and that keeps what it is sent."""

    def __init__(self, fail=False, **kwargs):
        super().__init__(**kwargs)
        self.fail = fail
        self.sent = []

    async def group_send(self, group, message):
        if self.fail:
            raise ConnectionError("connection refused")
        self.sent.append(message)


@pytest.fixture
def multi_process(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "tests.test_commands.RecordingLayer"}}
    return get_channel_layer()


def frames_sent(layer):
    return {message["frame"] for message in layer.sent}


@pytest.mark.django_db
def test_publish_with_the_in_memory_layer_refuses_and_says_why(in_memory_layer, monkeypatch):
    calls = []
    monkeypatch.setattr("realtime.management.commands.realtime_publish.publish", lambda *a: calls.append(a))
    Channel.objects.create(name="news")
    with pytest.raises(CommandError, match="in-memory.*REDIS_URL"):
        run("realtime_publish news headline", '{"text": "hello"}')
    assert calls == []


@pytest.mark.django_db
def test_publish_through_a_multi_process_layer_hands_the_publication_to_it(multi_process):
    Channel.objects.create(name="rooms", include_subchannels=True)
    out, err = run("realtime_publish rooms/42 typing", '{"user": "ann", "n": [1, 2]}')
    assert (out, err) == ("published\n", "")
    (frame,) = frames_sent(multi_process)
    assert json.loads(frame) == {
        "message": {
            "channel": "rooms/42",
            "event": "typing",
            "data": {"user": "ann", "n": [1, 2]},
            "time": SERVER_TIME,
        }
    }


def test_publish_refuses_bad_json(multi_process):
    with pytest.raises(CommandError, match="not valid JSON"):
        run("realtime_publish news e {oops")
    assert multi_process.sent == []


@pytest.mark.django_db
def test_publish_to_an_unknown_channel_fails_with_its_error_code(multi_process):
    with pytest.raises(CommandError, match="^invalid_channel: no active channel covers 'nowhere'"):
        run("realtime_publish nowhere e 1")
    assert multi_process.sent == []


@pytest.mark.django_db
def test_publish_to_an_invalid_channel_name_fails_with_its_error_code(multi_process):
    with pytest.raises(CommandError, match="^invalid_channel_name: "):
        run("realtime_publish", "bad name", "e", "1")


@pytest.mark.django_db
def test_publish_to_an_inactive_channel_fails(multi_process):
    Channel.objects.create(name="news", is_active=False)
    with pytest.raises(CommandError, match="^invalid_channel"):
        run("realtime_publish news e 1")
    assert multi_process.sent == []


@pytest.mark.django_db
def test_publish_reports_an_unavailable_broker(settings):
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "tests.test_commands.RecordingLayer", "CONFIG": {"fail": True}}
    }
    Channel.objects.create(name="news")
    with pytest.raises(CommandError, match="^unavailable: the broker is unreachable: connection refused"):
        run("realtime_publish news e", json.dumps({"a": 1}))


# seed_demo -----------------------------------------------------------------------------


@pytest.fixture
def debug(settings):
    settings.DEBUG = True


@pytest.mark.django_db
def test_seed_demo_creates_channels_superuser_and_keys(debug):
    out, _ = run("seed_demo")
    news, rooms, metrics = (Channel.objects.get(name=name) for name in ("news", "rooms", "metrics"))
    assert news.anonymous_read and news.description
    assert rooms.include_subchannels
    assert metrics.anonymous_read
    users = Channel.objects.get(name="users")
    assert users.personal and users.include_subchannels and not users.anonymous_read
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.check_password("admin")
    assert "demo only" in out
    assert "will not be shown again" in out
    secrets = dict(re.findall(r"^ +(\S+) \(.*\): (rt_\S+)$", out, re.MULTILINE))
    assert authenticate_secret(secrets["demo-publisher"]).access == "read-write"
    assert authenticate_secret(secrets["demo-reader"]).access == "read-only"
    assert authenticate_secret(secrets["demo-reader"]).all_channels


@pytest.mark.django_db
def test_seed_demo_is_idempotent_and_never_shows_secrets_again(debug):
    run("seed_demo")
    news = Channel.objects.get(name="news")
    news.description = "edited in the admin"
    news.save()
    out, _ = run("seed_demo")
    assert Channel.objects.count() == 4
    assert AccessKey.objects.count() == 2
    assert get_user_model().objects.count() == 2
    demo = get_user_model().objects.get(username="demo")
    assert not demo.is_staff and demo.check_password("demo")
    assert Channel.objects.get(name="news").description == "edited in the admin"
    assert "rt_" not in out
    assert "python manage.py realtime_key regenerate demo-publisher" in out
    assert "python manage.py realtime_key regenerate demo-reader" in out


@pytest.mark.django_db
def test_seed_demo_leaves_an_existing_superuser_alone(debug, admin_user):
    out, _ = run("seed_demo")
    assert get_user_model().objects.filter(is_superuser=True).count() == 1
    assert "one exists" in out


@pytest.mark.django_db
def test_seed_demo_creates_no_well_known_superuser_without_debug(settings):
    settings.DEBUG = False
    out, _ = run("seed_demo")
    assert not get_user_model().objects.exists()
    assert "createsuperuser" in out
    assert AccessKey.objects.count() == 2
