"""System checks for realtime's settings. Every id is listed in docs/settings.md."""

from __future__ import annotations

import math

from django.conf import settings as django_settings
from django.core.checks import Error, Warning
from django.utils.module_loading import import_string

from .conf import DEFAULTS

NUMBERS = {
    "MAX_MESSAGE_SIZE": int,
    "MAX_SUBSCRIPTIONS": int,
    "MAX_AUTH_FAILURES": int,
    "MAX_INVALID_FRAMES": int,
    "MAX_PENDING_FRAMES": int,
    "RECOVERY_LIMIT": int,
    "PRESENCE_TTL": (int, float),
    "RATE_BURST": int,
    "RATE_LIMIT": (int, float),
    "REVALIDATE_INTERVAL": (int, float),
    "BAYEUX_TIMEOUT": (int, float),
    "BAYEUX_INTERVAL": (int, float),
    "BAYEUX_MAX_INTERVAL": (int, float),
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
    for key, kind in NUMBERS.items():
        value = user.get(key, DEFAULTS[key])
        if isinstance(value, bool) or not isinstance(value, kind) or not 0 <= value < math.inf:
            errors.append(
                Error(
                    f"REALTIME[{key!r}] must be a finite, non-negative number, not {value!r}.",
                    hint=f"The default is {DEFAULTS[key]!r}.",
                    id="realtime.E003",
                )
            )
    origins = user.get("ALLOWED_ORIGINS")
    if origins is not None and (
        not isinstance(origins, (list, tuple, set, frozenset)) or not all(isinstance(o, str) for o in origins)
    ):
        errors.append(
            Error(
                "REALTIME['ALLOWED_ORIGINS'] must be None or a list of strings.",
                hint='For example ["https://example.com", ".example.org"].',
                id="realtime.E005",
            )
        )
    policy = user.get("POLICY", DEFAULTS["POLICY"])
    error = _import_error(policy)
    if error:
        errors.append(
            Error(
                f"REALTIME['POLICY'] {policy!r} cannot be imported: {error}",
                hint="Give the dotted path of a realtime.permissions.Policy subclass.",
                id="realtime.E004",
            )
        )
    errors.extend(_check_services(user.get("BAYEUX_SERVICES", DEFAULTS["BAYEUX_SERVICES"])))
    errors.extend(_check_layer(user))
    return errors


def _check_services(services) -> list:
    if not isinstance(services, dict):
        return [
            Error(
                "REALTIME['BAYEUX_SERVICES'] must be a dict.",
                hint='For example {"/service/echo": "myapp.services.echo"}.',
                id="realtime.E006",
            )
        ]
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
