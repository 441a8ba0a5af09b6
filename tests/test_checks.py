import pytest
from django.core import checks

from realtime.checks import check_settings

IN_MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
PUBSUB = {"default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer"}}
CORE = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer"}}


@pytest.fixture
def production(settings):
    """A correct production configuration: any message from the checks is about the test."""
    settings.DEBUG = False
    settings.CHANNEL_LAYERS = PUBSUB
    settings.REALTIME = {}
    return settings


def ids(messages) -> list[str]:
    return [message.id for message in messages]


def test_a_correct_production_configuration_gives_no_messages(production):
    assert check_settings() == []


def test_default_settings_give_no_errors(settings):
    settings.REALTIME = {}
    assert not [m for m in check_settings() if m.level >= checks.ERROR]


def test_a_missing_realtime_setting_uses_the_defaults(production):
    del production.REALTIME
    assert check_settings() == []


def test_none_realtime_setting_uses_the_defaults(production):
    production.REALTIME = None
    assert check_settings() == []


def test_every_documented_key_with_a_valid_value_gives_no_messages(production):
    production.REALTIME = {
        "MAX_MESSAGE_SIZE": 1024,
        "MAX_SUBSCRIPTIONS": 0,
        "MAX_AUTH_FAILURES": 3,
        "MAX_INVALID_FRAMES": 3,
        "MAX_PENDING_FRAMES": 10,
        "RATE_LIMIT": 2.5,
        "RATE_BURST": 5,
        "REVALIDATE_INTERVAL": 1,
        "ALLOWED_ORIGINS": ["https://example.com", ".example.org", "*"],
        "POLICY": "realtime.permissions.Policy",
        "CHANNEL_LAYER": "default",
        "BAYEUX_TIMEOUT": 20,
        "BAYEUX_INTERVAL": 0.5,
        "BAYEUX_MAX_INTERVAL": 15,
        "BAYEUX_SERVICES": {"/service/echo": "demo_site.bayeux_services.echo"},
    }
    assert check_settings() == []


@pytest.mark.parametrize("value", [[], "MAX_MESSAGE_SIZE=1", 1, ("a", 1)])
def test_e001_realtime_that_is_not_a_dict(production, value):
    production.REALTIME = value
    messages = check_settings()
    assert ids(messages) == ["realtime.E001"]
    assert messages[0].level == checks.ERROR
    assert messages[0].hint


def test_e002_each_unknown_key_is_reported_by_name(production):
    production.REALTIME = {"MAX_MESAGE_SIZE": 1, "REDIS_URL": "redis://"}
    messages = check_settings()
    assert ids(messages) == ["realtime.E002", "realtime.E002"]
    assert "'MAX_MESAGE_SIZE'" in messages[0].msg
    assert "'REDIS_URL'" in messages[1].msg
    assert "MAX_MESSAGE_SIZE" in messages[0].hint


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("MAX_MESSAGE_SIZE", "64k"),
        ("MAX_MESSAGE_SIZE", -1),
        ("MAX_MESSAGE_SIZE", 1.5),
        ("MAX_MESSAGE_SIZE", None),
        ("MAX_SUBSCRIPTIONS", True),
        ("MAX_AUTH_FAILURES", False),
        ("MAX_INVALID_FRAMES", "10"),
        ("MAX_PENDING_FRAMES", -5),
        ("RATE_BURST", 2.5),
        ("RATE_LIMIT", "fast"),
        ("RATE_LIMIT", -0.5),
        ("RATE_LIMIT", True),
        ("REVALIDATE_INTERVAL", -1),
        ("REVALIDATE_INTERVAL", None),
    ],
)
def test_e003_numbers_of_the_wrong_type_or_negative(production, key, value):
    production.REALTIME = {key: value}
    messages = check_settings()
    assert ids(messages) == ["realtime.E003"]
    assert key in messages[0].msg
    assert messages[0].hint


@pytest.mark.parametrize(
    "value", ["https://example.com", b"https://example.com", [1], ["https://example.com", None], 5, True]
)
def test_e005_allowed_origins_that_is_not_a_list_of_strings(production, value):
    production.REALTIME = {"ALLOWED_ORIGINS": value}
    messages = check_settings()
    assert ids(messages) == ["realtime.E005"]
    assert "ALLOWED_ORIGINS" in messages[0].msg


@pytest.mark.parametrize("value", [("https://example.com",), {"https://example.com"}, []])
def test_allowed_origins_may_be_any_collection_of_strings(production, value):
    production.REALTIME = {"ALLOWED_ORIGINS": value}
    assert check_settings() == []


@pytest.mark.parametrize("path", ["realtime.permissions.Nope", "nope.Policy", "Policy", ""])
def test_e004_policy_that_cannot_be_imported(production, path):
    production.REALTIME = {"POLICY": path}
    messages = check_settings()
    assert ids(messages) == ["realtime.E004"]
    assert repr(path) in messages[0].msg
    assert messages[0].hint


@pytest.mark.parametrize("path", [None, 42, ["realtime.permissions.Policy"]])
def test_e004_policy_that_is_not_a_dotted_path(production, path):
    production.REALTIME = {"POLICY": path}
    assert ids(check_settings()) == ["realtime.E004"]


@pytest.mark.parametrize("services", [[], "x", None])
def test_e006_bayeux_services_that_is_not_a_dict(production, services):
    production.REALTIME = {"BAYEUX_SERVICES": services}
    assert ids(check_settings()) == ["realtime.E006"]


@pytest.mark.parametrize("channel", ["/rooms/echo", "service/echo", "/service/", 7])
def test_e006_bayeux_services_keys_are_service_channels(production, channel):
    production.REALTIME = {"BAYEUX_SERVICES": {channel: "demo_site.bayeux_services.echo"}}
    assert ids(check_settings()) == ["realtime.E006"]


@pytest.mark.parametrize("path", ["demo_site.bayeux_services.nope", "nope.echo", None])
def test_e007_a_bayeux_service_handler_that_cannot_be_imported(production, path):
    production.REALTIME = {"BAYEUX_SERVICES": {"/service/echo": path}}
    messages = check_settings()
    assert ids(messages) == ["realtime.E007"]
    assert "/service/echo" in messages[0].msg


def test_several_problems_are_all_reported(production):
    production.REALTIME = {"UNKNOWN": 1, "MAX_SUBSCRIPTIONS": -1, "POLICY": "nope.Nope"}
    assert ids(check_settings()) == ["realtime.E002", "realtime.E003", "realtime.E004"]


def test_w001_in_memory_layer_without_debug(production):
    production.CHANNEL_LAYERS = IN_MEMORY
    messages = check_settings()
    assert ids(messages) == ["realtime.W001"]
    assert messages[0].level == checks.WARNING
    assert "channels_redis" in messages[0].hint


def test_w001_no_channel_layer_without_debug(production):
    production.CHANNEL_LAYERS = {}
    assert ids(check_settings()) == ["realtime.W001"]


def test_w001_channel_layers_setting_missing_without_debug(production):
    del production.CHANNEL_LAYERS
    assert ids(check_settings()) == ["realtime.W001"]


def test_w001_configured_alias_that_is_not_defined(production):
    production.REALTIME = {"CHANNEL_LAYER": "realtime"}
    assert ids(check_settings()) == ["realtime.W001"]


def test_configured_alias_is_the_layer_that_is_checked(production):
    production.CHANNEL_LAYERS = {**IN_MEMORY, "realtime": PUBSUB["default"]}
    production.REALTIME = {"CHANNEL_LAYER": "realtime"}
    assert check_settings() == []


def test_in_memory_layer_is_fine_with_debug(production):
    production.DEBUG = True
    production.CHANNEL_LAYERS = IN_MEMORY
    assert check_settings() == []


def test_w002_core_redis_layer(production):
    production.CHANNEL_LAYERS = CORE
    messages = check_settings()
    assert ids(messages) == ["realtime.W002"]
    assert messages[0].level == checks.WARNING
    assert messages[0].hint


def test_w002_core_redis_layer_also_with_debug(production):
    production.DEBUG = True
    production.CHANNEL_LAYERS = CORE
    assert ids(check_settings()) == ["realtime.W002"]


def test_other_layers_give_no_warning(production):
    production.CHANNEL_LAYERS = {"default": {"BACKEND": "myproject.layers.KafkaLayer"}}
    assert check_settings() == []


def test_check_is_registered_with_django(production):
    production.REALTIME = {"UNKNOWN": 1}
    assert "realtime.E002" in ids(checks.run_checks())


@pytest.mark.parametrize("path", ["demo_site.realtime_grants.nope", "nope.grant", "", None])
def test_e008_token_grant_that_cannot_be_imported(production, path):
    production.REALTIME = {"TOKEN_GRANT": path}
    messages = check_settings()
    assert ids(messages) == ["realtime.E008"]
    assert "TOKEN_GRANT" in messages[0].msg
    assert "grant(request)" in messages[0].hint


@pytest.mark.parametrize(
    ("key", "value"), [("WS_PATH", "realtime/ws"), ("WS_PATH", None), ("CHANNEL_LAYER", 1)]
)
def test_e009_paths_and_aliases_that_are_not_strings_of_the_right_form(production, key, value):
    production.REALTIME = {key: value}
    messages = [m for m in check_settings() if m.id == "realtime.E009"]
    assert len(messages) == 1
    assert key in messages[0].msg


@pytest.mark.parametrize(("key", "value"), [("PRESENCE_TTL", 0), ("TOKEN_TTL", 0), ("TOKEN_TTL", "5m")])
def test_e003_lifetimes_must_be_greater_than_zero(production, key, value):
    production.REALTIME = {key: value}
    messages = check_settings()
    assert ids(messages) == ["realtime.E003"]
    assert "greater than 0" in messages[0].msg


def test_every_setting_is_typed_and_checked_from_one_declaration():
    from realtime.conf import DEFAULTS, RealtimeSettings, Setting, settings

    declared = RealtimeSettings.declared()
    assert set(declared) == set(DEFAULTS)
    for name, setting in declared.items():
        assert isinstance(setting, Setting)
        assert setting.problem(setting.default) is None, name
        assert getattr(settings, name) == setting.default


# Serving, URLs and static files: the mistakes of a new host project --------------------

from realtime.checks import check_serving, check_static, check_urls  # noqa: E402

APPS = ["daphne", "django.contrib.admin", "django.contrib.staticfiles", "realtime"]


@pytest.fixture
def development(settings):
    """A correct development configuration: daphne's runserver serves the ASGI app."""
    settings.DEBUG = True
    settings.INSTALLED_APPS = APPS
    settings.ASGI_APPLICATION = "demo_site.asgi.application"
    return settings


def test_a_correct_development_configuration_gives_no_serving_message(development):
    assert check_serving() == []


def test_w003_runserver_without_daphne_serves_http_only(development):
    development.INSTALLED_APPS = APPS[1:]
    messages = check_serving()
    assert ids(messages) == ["realtime.W003"]
    assert "'daphne' is not in INSTALLED_APPS" in messages[0].msg
    assert "ASGI_APPLICATION" in messages[0].hint


def test_w003_daphne_after_staticfiles_loses_runserver(development):
    development.INSTALLED_APPS = ["django.contrib.staticfiles", "daphne", "realtime"]
    messages = check_serving()
    assert ids(messages) == ["realtime.W003"]
    assert "after 'django.contrib.staticfiles'" in messages[0].msg


def test_w003_daphne_without_asgi_application(development):
    del development.ASGI_APPLICATION
    messages = check_serving()
    assert ids(messages) == ["realtime.W003"]
    assert "ASGI_APPLICATION is not set" in messages[0].msg


def test_w003_not_without_debug(development):
    development.DEBUG = False
    development.INSTALLED_APPS = APPS[1:]
    assert check_serving() == []


def test_w004_realtime_urls_not_mounted(settings):
    settings.ROOT_URLCONF = "tests.test_checks"
    messages = check_urls()
    assert ids(messages) == ["realtime.W004"]
    assert 'include("realtime.urls")' in messages[0].hint


def test_w004_not_when_the_urls_are_mounted(settings):
    assert check_urls() == []


def test_w004_is_registered_with_the_url_checks(settings):
    settings.ROOT_URLCONF = "tests.test_checks"
    assert "realtime.W004" in ids(checks.run_checks(tags=[checks.Tags.urls]))


urlpatterns = []  # a ROOT_URLCONF without realtime's URLs, for W004


def test_w005_static_url_missing(settings):
    settings.STATIC_URL = None
    messages = check_static()
    assert ids(messages) == ["realtime.W005"]
    assert messages[0].msg.startswith("STATIC_URL is not set")
    assert "collectstatic" in messages[0].hint


def test_w005_staticfiles_not_installed(settings):
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "django.contrib.staticfiles"]
    messages = check_static()
    assert ids(messages) == ["realtime.W005"]
    assert "django.contrib.staticfiles" in messages[0].msg


def test_w005_not_when_static_files_are_configured(settings):
    assert check_static() == []


def test_the_demo_settings_pass_every_realtime_check(settings):
    settings.DEBUG = True  # as make run has it (pytest-django turns it off)
    messages = checks.run_checks(include_deployment_checks=False)
    assert [message for message in messages if message.id.startswith("realtime.")] == []
