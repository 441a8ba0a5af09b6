"""Process-level caches follow the settings (realtime.changes), as Channels' layers do."""

import pytest

from realtime import auth, registry
from realtime.broker import LayerBroker, LocalBroker, get_broker
from realtime.permissions import Policy, get_policy

PUBSUB = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]},
    }
}
IN_MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


class NobodyPolicy(Policy):
    def can_subscribe(self, principal, channel):
        return False


def test_a_new_channel_layer_gets_a_broker_of_its_own(settings):
    settings.CHANNEL_LAYERS = IN_MEMORY
    local = get_broker()
    assert isinstance(local, LocalBroker)
    assert get_broker() is local  # one broker per layer

    settings.CHANNEL_LAYERS = PUBSUB
    assert isinstance(get_broker(), LayerBroker)

    settings.CHANNEL_LAYERS = IN_MEMORY
    again = get_broker()
    assert isinstance(again, LocalBroker) and again is not local  # a new layer object, a new broker


def test_a_new_policy_path_is_loaded_and_an_old_one_forgotten(settings):
    settings.REALTIME = {"POLICY": "tests.test_changes.NobodyPolicy"}
    assert isinstance(get_policy(), NobodyPolicy)
    settings.REALTIME = {}
    assert type(get_policy()) is Policy


def test_changing_the_settings_drops_cached_keys_and_channels(settings):
    auth.cache.put("digest", "a principal")
    registry.cache.put("news", "a channel")
    settings.REALTIME = {"MAX_SUBSCRIPTIONS": 7}
    assert auth.cache.get("digest", None) is None
    assert registry.cache.get("news", None) is None


@pytest.mark.parametrize("setting", ["SECRET_KEY", "SECRET_KEY_FALLBACKS"])
def test_rotating_the_secret_key_drops_cached_keys(settings, setting):
    auth.cache.put("digest", "a principal")
    setattr(
        settings,
        setting,
        "another-secret-key-0123456789-0123456789-0123456789" if setting == "SECRET_KEY" else [],
    )
    assert auth.cache.get("digest", None) is None


def test_realtime_settings_are_read_once_and_again_when_they_change(settings):
    from realtime.conf import settings as realtime_settings

    settings.REALTIME = {"MAX_SUBSCRIPTIONS": 7}
    assert realtime_settings.MAX_SUBSCRIPTIONS == 7
    settings.REALTIME = {"MAX_SUBSCRIPTIONS": 8}  # override_settings: setting_changed
    assert realtime_settings.MAX_SUBSCRIPTIONS == 8
    settings.REALTIME = {}
    assert realtime_settings.MAX_SUBSCRIPTIONS == 100  # the default
