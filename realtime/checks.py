"""System checks for realtime's settings. Every id is listed in docs/settings.md.

The shape of each value is checked from its declaration in ``realtime.conf`` (so the
checks and the settings cannot disagree); dotted paths are also imported here.
"""

from __future__ import annotations

from django.conf import settings as django_settings
from django.core.checks import Error, Warning
from django.utils.module_loading import import_string

from .conf import DEFAULTS, DOTTED_PATH, RealtimeSettings

HINTS = {
    "realtime.E004": "Give the dotted path of a realtime.permissions.Policy subclass.",
    "realtime.E005": 'For example ["https://example.com", ".example.org"].',
    "realtime.E006": 'For example {"/service/echo": "myapp.services.echo"}.',
    "realtime.E008": "Give the dotted path of a function grant(request) -> realtime.tokens.Grant | None.",
    "realtime.E010": 'The proxies\' own addresses, for example ["127.0.0.1", "10.0.0.0/8"].',
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
