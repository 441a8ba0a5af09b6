"""System checks for realtime's settings. Every id is listed in docs/settings.md.

The shape of each value is checked from its declaration in ``realtime.conf`` (so the
checks and the settings cannot disagree); dotted paths are also imported here.
"""

from __future__ import annotations

from django.conf import settings as django_settings
from django.core.checks import Error, Warning
from django.utils.module_loading import import_string

from .conf import DEFAULTS, DOTTED_PATH, RealtimeSettings
from .errors import InvalidChannelName
from .names import validate_channel_name

HINTS = {
    "realtime.E004": "Give the dotted path of a realtime.permissions.Policy subclass.",
    "realtime.E005": 'For example ["https://example.com", ".example.org"].',
    "realtime.E006": 'For example {"/service/echo": "myapp.services.echo"}.',
    "realtime.E008": "Give the dotted path of a function grant(request) -> realtime.tokens.Grant | None.",
    "realtime.E010": 'The proxies\' own addresses, for example ["127.0.0.1", "10.0.0.0/8"].',
    "realtime.E020": 'For example {"rooms": "chat.realtime.on_message", "*": "chat.realtime.audit"}.',
}


def check_settings(app_configs=None, **kwargs):
    errors = []
    user = getattr(django_settings, "REALTIME", None)
    if user is None:
        user = {}
    if not isinstance(user, dict):
        return [Error("REALTIME must be a dict.", hint="See docs/settings.md.", id="realtime.E001")]
    for key in sorted(set(user) - set(DEFAULTS)):
        errors.append(
            Error(
                f"REALTIME has an unknown key {key!r}.",
                hint=f"Known keys: {', '.join(sorted(DEFAULTS))}.",
                id="realtime.E002",
            )
        )
    for key, setting in RealtimeSettings.declared().items():
        value = user.get(key, setting.default)
        hint = HINTS.get(setting.check_id, f"The default is {setting.default!r}.")
        problem = setting.problem(value)
        if problem is None and setting.kind == DOTTED_PATH:
            problem = _import_error(value)
            if problem is not None:
                problem = f"{value!r} cannot be imported: {problem}"
        if problem is not None:
            errors.append(Error(f"REALTIME[{key!r}] {problem}.", hint=hint, id=setting.check_id))
        elif key == "BAYEUX_SERVICES":
            errors.extend(_check_services(value))
        elif key == "PUBLISH_HANDLERS":
            errors.extend(_check_publish_handlers(value))
    errors.extend(_check_layer(user))
    return errors


def _check_services(services: dict) -> list:
    errors = []
    for channel, path in services.items():
        if not isinstance(channel, str) or not channel.startswith("/service/") or channel.endswith("/"):
            errors.append(
                Error(
                    f"REALTIME['BAYEUX_SERVICES'] has a key {channel!r} that is no service channel.",
                    hint="Keys are channels under /service/, such as /service/echo.",
                    id="realtime.E006",
                )
            )
        error = _import_error(path)
        if error:
            errors.append(
                Error(
                    f"The handler {path!r} of {channel!r} cannot be imported: {error}",
                    hint="Give the dotted path of a function that takes a "
                    "realtime.bayeux.services.ServiceRequest.",
                    id="realtime.E007",
                )
            )
    return errors


def _check_publish_handlers(handlers: dict) -> list:
    errors = []
    for channel, path in handlers.items():
        try:
            if channel != "*":
                validate_channel_name(channel)
        except (InvalidChannelName, TypeError):
            errors.append(
                Error(
                    f"REALTIME['PUBLISH_HANDLERS'] has a key {channel!r} that is no channel name.",
                    hint='Keys are channel row names, such as "rooms", or "*" for every channel.',
                    id="realtime.E020",
                )
            )
        error = _import_error(path)
        if error:
            errors.append(
                Error(
                    f"The publish handler {path!r} of {channel!r} cannot be imported: {error}",
                    hint="Give the dotted path of a function that takes a "
                    "realtime.handlers.ClientPublication.",
                    id="realtime.E021",
                )
            )
    return errors


def _check_layer(user) -> list:
    alias = user.get("CHANNEL_LAYER", DEFAULTS["CHANNEL_LAYER"])
    layers = getattr(django_settings, "CHANNEL_LAYERS", {}) or {}
    backend = (layers.get(alias) or {}).get("BACKEND", "")
    if backend.endswith("InMemoryChannelLayer") or not backend:
        if not django_settings.DEBUG:
            return [
                Warning(
                    "realtime runs without a multi-process channel layer.",
                    hint="Publications reach only this process. Configure channels_redis "
                    "(CHANNEL_LAYERS) to run several server processes or publish from workers.",
                    id="realtime.W001",
                )
            ]
    elif backend == "channels_redis.core.RedisChannelLayer":
        return [
            Warning(
                "realtime works best on channels_redis.pubsub.RedisPubSubChannelLayer.",
                hint="The core layer drops group messages silently when a process inbox is "
                "full (capacity) and forgets members after group_expiry.",
                id="realtime.W002",
            )
        ]
    return []


def _import_error(path) -> str | None:
    """Why ``path`` cannot be imported with ``import_string``, or None if it can."""
    try:
        if not isinstance(path, str):
            raise ImportError("it is not a dotted path")
        import_string(path)
    except ImportError as error:
        return str(error) or type(error).__name__
    return None


def check_serving(app_configs=None, **kwargs):
    """realtime.W003: ``runserver`` would not serve realtime's WebSockets.

    Django's own ``runserver`` (and the one of ``django.contrib.staticfiles``) serves WSGI,
    so a WebSocket gets an HTTP 404 and nothing says why. daphne's replaces it when
    ``daphne`` comes before ``django.contrib.staticfiles``, and it serves ASGI_APPLICATION.
    Only with DEBUG on: nobody serves production with runserver.
    """
    if not django_settings.DEBUG:
        return []
    apps = list(django_settings.INSTALLED_APPS)
    staticfiles = "django.contrib.staticfiles"
    hint = (
        'For development with runserver: pip install daphne, put "daphne" first in INSTALLED_APPS '
        'and set ASGI_APPLICATION = "<project>.asgi.application" (README: "Add it to your project"). '
        "If you develop under another ASGI server (uvicorn --reload), silence realtime.W003."
    )
    if "daphne" not in apps:
        problem = "'daphne' is not in INSTALLED_APPS"
    elif staticfiles in apps and apps.index("daphne") > apps.index(staticfiles):
        problem = "'daphne' comes after 'django.contrib.staticfiles' in INSTALLED_APPS, whose runserver wins"
    elif not getattr(django_settings, "ASGI_APPLICATION", None):
        problem = "ASGI_APPLICATION is not set, so daphne's runserver refuses to start"
    else:
        return []
    return [
        Warning(
            f"manage.py runserver will not serve realtime's WebSockets: {problem}.",
            hint=hint,
            id="realtime.W003",
        )
    ]


def check_urls(app_configs=None, **kwargs):
    """realtime.W004: the HTTP views are not mounted, so the template tag cannot render."""
    from django.urls import NoReverseMatch, reverse

    try:
        reverse("realtime:token")
    except NoReverseMatch:
        return [
            Warning(
                "realtime's URLs are not mounted: {% realtime %} (its token URL), the HTTP publish "
                "endpoint, the event log and Bayeux long-polling are unreachable.",
                hint='Add path("realtime/", include("realtime.urls")) to your ROOT_URLCONF.',
                id="realtime.W004",
            )
        ]
    return []


def check_static(app_configs=None, **kwargs):
    """realtime.W005: the template tag's scripts (realtime.js, connect.js) have no URL."""
    if not getattr(django_settings, "STATIC_URL", None):
        problem = "STATIC_URL is not set"
    elif "django.contrib.staticfiles" not in django_settings.INSTALLED_APPS:
        problem = "django.contrib.staticfiles is not in INSTALLED_APPS"
    else:
        return []
    return [
        Warning(
            f"{problem}, so {{% realtime %}} cannot load realtime/realtime.js and realtime/connect.js.",
            hint='Add django.contrib.staticfiles and STATIC_URL = "static/"; serve them in development '
            "with staticfiles_urlpatterns() (runserver does it itself) and in production with "
            "collectstatic or WhiteNoise (docs/deployment.md).",
            id="realtime.W005",
        )
    ]
