import pytest

from realtime.auth import Principal
from realtime.errors import InvalidCredentials
from realtime.models import Channel
from realtime.permissions import Policy, get_policy
from realtime.registry import ChannelInfo, resolve, resolve_many

# Resolution ------------------------------------------------------------------------------


def channel(name, **fields) -> Channel:
    return Channel.objects.create(name=name, **fields)


@pytest.mark.django_db
def test_an_exact_row_resolves_to_itself():
    news = channel("news", anonymous_read=True)
    assert resolve("news") == ChannelInfo(news.pk, "news", False, True)


@pytest.mark.django_db
def test_a_name_without_any_row_resolves_to_none():
    channel("news")
    assert resolve("sports") is None


@pytest.mark.django_db
def test_a_row_does_not_cover_a_name_that_only_starts_like_it():
    channel("room", include_subchannels=True)
    assert resolve("rooms/1") is None


@pytest.mark.django_db
def test_an_ancestor_that_covers_sub_channels_resolves_every_name_below_it():
    rooms = channel("rooms", include_subchannels=True)
    assert resolve("rooms/42").id == rooms.pk
    assert resolve("rooms/42/typing").id == rooms.pk
    assert resolve("rooms/42").name == "rooms"


@pytest.mark.django_db
def test_an_ancestor_without_include_subchannels_does_not_cover():
    channel("rooms", include_subchannels=False)
    assert resolve("rooms/42") is None
    assert resolve("rooms") is not None


@pytest.mark.django_db
def test_the_exact_row_wins_over_a_covering_ancestor():
    channel("rooms", include_subchannels=True, anonymous_read=False)
    vip = channel("rooms/vip", anonymous_read=True)
    assert resolve("rooms/vip") == ChannelInfo(vip.pk, "rooms/vip", False, True)


@pytest.mark.django_db
def test_the_exact_row_wins_even_without_include_subchannels():
    channel("rooms", include_subchannels=True)
    lobby = channel("rooms/lobby", include_subchannels=False)
    assert resolve("rooms/lobby").id == lobby.pk
    # ...but it does not cover its own sub-channels, so those fall through to rooms.
    assert resolve("rooms/lobby/typing").name == "rooms"


@pytest.mark.django_db
def test_the_nearest_covering_ancestor_wins():
    channel("rooms", include_subchannels=True)
    vip = channel("rooms/vip", include_subchannels=True)
    assert resolve("rooms/vip/1/typing").id == vip.pk
    assert resolve("rooms/other/1").name == "rooms"


@pytest.mark.django_db
def test_an_inactive_exact_row_resolves_to_none():
    channel("rooms", include_subchannels=True)
    channel("rooms/closed", is_active=False)
    assert resolve("rooms/closed") is None


@pytest.mark.django_db
def test_an_inactive_nearest_ancestor_closes_everything_below_it():
    channel("rooms", include_subchannels=True)
    channel("rooms/vip", include_subchannels=True, is_active=False)
    assert resolve("rooms/vip/1") is None
    assert resolve("rooms/other") is not None


@pytest.mark.django_db
def test_an_inactive_top_row_closes_sub_channels_without_rows_of_their_own():
    channel("rooms", include_subchannels=True, is_active=False)
    lobby = channel("rooms/lobby")
    assert resolve("rooms/42") is None
    assert resolve("rooms/lobby").id == lobby.pk


@pytest.mark.django_db
def test_an_inactive_row_that_does_not_cover_is_skipped():
    rooms = channel("rooms", include_subchannels=True)
    channel("rooms/vip", include_subchannels=False, is_active=False)
    assert resolve("rooms/vip/1").id == rooms.pk


@pytest.mark.django_db
def test_resolve_many_resolves_several_names_at_once(django_assert_num_queries):
    news = channel("news")
    rooms = channel("rooms", include_subchannels=True)
    channel("closed", is_active=False)
    names = ["news", "rooms/1", "rooms/2/typing", "closed", "missing", "news/sub"]

    with django_assert_num_queries(1):
        resolved = resolve_many(names)

    assert set(resolved) == set(names)
    assert resolved["news"].id == news.pk
    assert resolved["rooms/1"].id == rooms.pk
    assert resolved["rooms/2/typing"].id == rooms.pk
    assert resolved["closed"] is None
    assert resolved["missing"] is None
    assert resolved["news/sub"] is None


@pytest.mark.django_db
def test_resolve_many_of_nothing_is_empty():
    assert resolve_many([]) == {}


@pytest.mark.django_db
def test_resolve_many_with_more_names_than_one_query_chunk():
    channel("rooms", include_subchannels=True)
    names = [f"rooms/{i}" for i in range(1200)]
    resolved = resolve_many(names)
    assert len(resolved) == 1200
    assert {info.name for info in resolved.values()} == {"rooms"}


@pytest.mark.django_db
def test_resolve_many_accepts_any_iterable_and_repeated_names():
    channel("news")
    resolved = resolve_many(iter(["news", "news"]))
    assert list(resolved) == ["news"]


# Principal ------------------------------------------------------------------------------


def principal(access="read-write", channel_ids=(), all_channels=False) -> Principal:
    return Principal(
        key_id=1,
        name="key",
        access=access,
        all_channels=all_channels,
        channel_ids=frozenset(channel_ids),
    )


def test_principal_can_write_only_with_read_write_access():
    assert principal("read-write").can_write
    assert not principal("read-only").can_write


def info(channel_id, name="c"):
    return ChannelInfo(id=channel_id, name=name, include_subchannels=False, anonymous_read=False)


def test_scoped_principal_covers_only_its_channels():
    scoped = principal(channel_ids={1, 2})
    assert scoped.covers(info(1))
    assert scoped.covers(info(2))
    assert not scoped.covers(info(3))


def test_all_channel_principal_covers_every_channel():
    assert principal(all_channels=True).covers(info(12345))


def test_token_principal_covers_channels_by_name():
    token = Principal(
        key_id=None, name="", access="read-only", all_channels=False, channel_names=frozenset({"rooms"})
    )
    assert token.covers(info(7, "rooms"))
    assert not token.covers(info(8, "news"))


@pytest.mark.parametrize("access", [None, "read-write"])
def test_limited_to_the_same_or_no_access_is_the_same_principal(access):
    key = principal("read-write")
    assert key.limited_to(access) is key


def test_limited_to_read_only_on_a_read_write_key_drops_write():
    limited = principal("read-write", channel_ids={1}).limited_to("read-only")
    assert limited.access == "read-only"
    assert not limited.can_write
    assert limited.channel_ids == frozenset({1})


@pytest.mark.parametrize("access", [None, "read-only"])
def test_limited_to_the_access_of_a_read_only_key_keeps_it(access):
    key = principal("read-only")
    assert key.limited_to(access) is key


def test_asking_read_write_on_a_read_only_key_raises_invalid_credentials():
    with pytest.raises(InvalidCredentials):
        principal("read-only").limited_to("read-write")


# Policy ---------------------------------------------------------------------------------

PUBLIC = ChannelInfo(id=1, name="news", include_subchannels=False, anonymous_read=True)
PRIVATE = ChannelInfo(id=2, name="rooms", include_subchannels=True, anonymous_read=False)

policy = Policy()


def test_anonymous_may_subscribe_only_to_anonymous_read_channels():
    assert policy.can_subscribe(None, PUBLIC)
    assert not policy.can_subscribe(None, PRIVATE)


def test_anonymous_may_never_publish():
    assert not policy.can_publish(None, PUBLIC)
    assert not policy.can_publish(None, PRIVATE)


def test_read_only_key_may_subscribe_but_not_publish():
    reader = principal("read-only", all_channels=True)
    assert policy.can_subscribe(reader, PRIVATE)
    assert not policy.can_publish(reader, PRIVATE)
    assert not policy.can_publish(reader, PUBLIC)


def test_read_write_key_may_subscribe_and_publish():
    writer = principal("read-write", all_channels=True)
    assert policy.can_subscribe(writer, PRIVATE)
    assert policy.can_publish(writer, PRIVATE)
    assert policy.can_publish(writer, PUBLIC)


def test_scoped_key_may_act_only_on_its_channels():
    scoped = principal("read-write", channel_ids={PRIVATE.id})
    assert policy.can_subscribe(scoped, PRIVATE)
    assert policy.can_publish(scoped, PRIVATE)
    assert not policy.can_publish(scoped, PUBLIC)


def test_scoped_key_may_read_anonymous_read_channels_outside_its_scope_but_not_publish():
    scoped = principal("read-write", channel_ids={PRIVATE.id})
    assert policy.can_subscribe(scoped, PUBLIC)
    assert not policy.can_publish(scoped, PUBLIC)


def test_read_write_limited_to_read_only_may_not_publish():
    limited = principal("read-write", all_channels=True).limited_to("read-only")
    assert policy.can_subscribe(limited, PRIVATE)
    assert not policy.can_publish(limited, PRIVATE)


@pytest.mark.django_db
def test_a_key_scoped_to_a_covering_channel_may_act_on_its_sub_channels():
    rooms = channel("rooms", include_subchannels=True)
    scoped = principal("read-write", channel_ids={rooms.pk})
    room = resolve("rooms/42")
    assert policy.can_subscribe(scoped, room)
    assert policy.can_publish(scoped, room)


@pytest.mark.django_db
def test_a_sub_channel_with_its_own_row_needs_its_own_grant():
    rooms = channel("rooms", include_subchannels=True)
    channel("rooms/vip")
    scoped = principal("read-write", channel_ids={rooms.pk})
    assert not policy.can_subscribe(scoped, resolve("rooms/vip"))


class ReadOnlyMayType(Policy):
    def can_publish(self, principal, channel):
        if principal is not None and channel.name.endswith("/typing"):
            return principal.covers(channel)
        return super().can_publish(principal, channel)


def test_get_policy_loads_the_default_policy(settings):
    settings.REALTIME = {}
    assert type(get_policy()) is Policy


def test_get_policy_loads_the_configured_policy(settings):
    settings.REALTIME = {"POLICY": f"{__name__}.ReadOnlyMayType"}
    custom = get_policy()
    assert isinstance(custom, ReadOnlyMayType)
    typing = ChannelInfo(id=3, name="rooms/typing", include_subchannels=False, anonymous_read=False)
    assert custom.can_publish(principal("read-only", all_channels=True), typing)
