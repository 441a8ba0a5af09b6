"""Settings for realtime, read from one ``REALTIME`` dict in the Django settings.

Each setting is declared once, below, with its type, default and rules; that one
declaration gives ``settings.MAX_MESSAGE_SIZE`` its type (for users' type checkers and
ours), ``DEFAULTS``, and the system checks (``realtime.checks``). Values are looked up
on each access, so ``override_settings(REALTIME=...)`` works in tests, and nothing is
read at import time. Every setting is documented in ``docs/settings.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from django.conf import settings as django_settings

T = TypeVar("T")

# What a setting's value must be; the check says it in these words.
NON_NEGATIVE_INT = "a finite, non-negative int"
NON_NEGATIVE_NUMBER = "a finite, non-negative number"
POSITIVE_NUMBER = "a finite number greater than 0"
DOTTED_PATH = "the dotted path of an importable object"
STRING = "a non-empty string"
PATH = "a URL path starting with /"
ORIGINS = "None or a list of strings"
SERVICES = "a dict"


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One key of ``REALTIME``: its default, and what a value must be (``kind``)."""

    default: T
    kind: str
    # The system check id for a value of the wrong kind.
    check_id: str = "realtime.E003"
    name: str = ""

    def __set_name__(self, owner: type, name: str) -> None:
        object.__setattr__(self, "name", name)

    @overload
    def __get__(self, instance: None, owner: type) -> Setting[T]: ...
    @overload
    def __get__(self, instance: object, owner: type) -> T: ...
    def __get__(self, instance, owner):
        if instance is None:
            return self
        return _user().get(self.name, self.default)

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not a valid value of this setting, or None if it is.

        Only the shape is checked here; whether a dotted path imports is
        ``realtime.checks``'s job (importing is not for every access).
        """
        numeric = not isinstance(value, bool) and isinstance(value, (int, float))
        if self.kind == NON_NEGATIVE_INT:
            ok = numeric and isinstance(value, int) and value >= 0
        elif self.kind == NON_NEGATIVE_NUMBER:
            ok = numeric and 0 <= value < math.inf
        elif self.kind == POSITIVE_NUMBER:
            ok = numeric and 0 < value < math.inf
        elif self.kind in (DOTTED_PATH, STRING):
            ok = isinstance(value, str) and bool(value)
        elif self.kind == PATH:
            ok = isinstance(value, str) and value.startswith("/")
        elif self.kind == ORIGINS:
            ok = value is None or (
                isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(o, str) for o in value)
            )
        elif self.kind == SERVICES:
            ok = isinstance(value, dict)
        else:  # pragma: no cover - a declaration below names an unknown kind
            raise AssertionError(self.kind)
        return None if ok else f"must be {self.kind}, not {value!r}"


def _user() -> dict[str, Any]:
    value = getattr(django_settings, "REALTIME", None)
    return value if isinstance(value, dict) else {}


class RealtimeSettings:
    """Attribute access to the merged ``REALTIME`` settings, one typed attribute each."""

    # Largest client frame, and largest encoded publication, in bytes.
    MAX_MESSAGE_SIZE = Setting[int](64 * 1024, NON_NEGATIVE_INT)
    # Subscriptions one connection may hold at once.
    MAX_SUBSCRIPTIONS = Setting[int](100, NON_NEGATIVE_INT)
    # Failed ``auth`` attempts before the connection is closed (close code 4002).
    MAX_AUTH_FAILURES = Setting[int](5, NON_NEGATIVE_INT)
    # Consecutive malformed frames (invalid_data, message_too_large) before the
    # connection is closed (close code 4001). A valid command resets the count.
    MAX_INVALID_FRAMES = Setting[int](10, NON_NEGATIVE_INT)
    # Frames queued for a client that reads too slowly before it is dropped (close code 4004).
    MAX_PENDING_FRAMES = Setting[int](1000, NON_NEGATIVE_INT)
    # Sustained client frames per second per connection, and the burst allowed above it.
    RATE_LIMIT = Setting[float](100.0, NON_NEGATIVE_NUMBER)
    RATE_BURST = Setting[int](200, NON_NEGATIVE_INT)
    # Seconds between the periodic re-checks of live connections against the database
    # (revoked or expired keys, deactivated channels). Changes made through the models
    # are also pushed at once; this catches the rest (bulk updates, expiry, other tools).
    REVALIDATE_INTERVAL = Setting[float](5.0, NON_NEGATIVE_NUMBER)
    # Origins a browser may connect from, as scheme://host[:port] or host patterns
    # (".example.com" matches subdomains, "*" matches any). None means: derived from
    # ALLOWED_HOSTS, the way Channels' AllowedHostsOriginValidator does it.
    ALLOWED_ORIGINS = Setting["list[str] | None"](None, ORIGINS, "realtime.E005")
    # Most publications a subscribe with "since" replays; a longer gap is not recovered
    # (the reply says recovered: false and the client reloads, e.g. from the history).
    RECOVERY_LIMIT = Setting[int](500, NON_NEGATIVE_INT)
    # Seconds a presence entry lives without being renewed (its process renews it every
    # third of this): how long a member of a process that died unannounced stays listed.
    PRESENCE_TTL = Setting[float](30.0, POSITIVE_NUMBER)
    # Seconds realtime waits for Redis on any request (publish, history, presence). A
    # publication carries a deadline this far ahead, which its Lua script checks against
    # Redis's clock: one that Redis gets to later refuses itself, so `unavailable` never
    # turns into a late delivery. Replies to publications wait REDIS_CLOCK_SKEW longer.
    REDIS_TIMEOUT = Setting[float](5.0, POSITIVE_NUMBER)
    # How far apart the server processes' clocks and Redis's may be (NTP keeps them
    # within milliseconds): the margin between a publication's deadline and its reply wait.
    REDIS_CLOCK_SKEW = Setting[float](1.0, NON_NEGATIVE_NUMBER)
    # Replicas that must confirm a publication's writes (history, idempotency record)
    # before it is answered `ok` (Redis WAIT, in the publish's round trip), and how many
    # seconds to wait for them; unconfirmed in time: `unknown_outcome`. 0: do not wait.
    REDIS_WAIT_REPLICAS = Setting[int](0, NON_NEGATIVE_INT)
    REDIS_WAIT_TIMEOUT = Setting[float](0.5, POSITIVE_NUMBER)
    # Seconds a publication's idempotency key is remembered: a publish with the same key
    # on the same channel within it gets the first one's outcome and publishes nothing.
    IDEMPOTENCY_WINDOW = Setting[float](300.0, POSITIVE_NUMBER)
    # Dotted path to the permission policy class.
    POLICY = Setting[str]("realtime.permissions.Policy", DOTTED_PATH, "realtime.E004")
    # Where the WebSocket consumer is mounted (realtime.routing uses /realtime/ws); the
    # template tag builds the URL it gives browsers from it.
    WS_PATH = Setting[str]("/realtime/ws", PATH, "realtime.E009")
    # Seconds a signed browser token can be presented after it is issued.
    TOKEN_TTL = Setting[float](300, POSITIVE_NUMBER)
    # Dotted path to grant(request) -> realtime.tokens.Grant | None: who gets which token.
    TOKEN_GRANT = Setting[str]("realtime.tokens.default_grant", DOTTED_PATH, "realtime.E008")
    # The channel layer alias used to carry publications between processes.
    CHANNEL_LAYER = Setting[str]("default", STRING, "realtime.E009")
    # Bayeux (docs/bayeux.md). Seconds a /meta/connect is held when there is nothing to
    # deliver (advice.timeout); seconds a client waits between connects (advice.interval);
    # seconds a session lives with no connect held and no WebSocket, after which it is
    # forgotten and its client must handshake again.
    BAYEUX_TIMEOUT = Setting[float](30.0, NON_NEGATIVE_NUMBER)
    BAYEUX_INTERVAL = Setting[float](0.0, NON_NEGATIVE_NUMBER)
    BAYEUX_MAX_INTERVAL = Setting[float](10.0, NON_NEGATIVE_NUMBER)
    # Service channel -> dotted path of its handler (realtime.bayeux.services).
    BAYEUX_SERVICES = Setting["dict[str, str]"]({}, SERVICES, "realtime.E006")

    @classmethod
    def declared(cls) -> dict[str, Setting]:
        """Every setting, by name, in declaration order."""
        return {name: value for name, value in vars(cls).items() if isinstance(value, Setting)}

    @staticmethod
    def user_settings() -> dict[str, Any]:
        return dict(_user())


DEFAULTS: dict[str, Any] = {name: setting.default for name, setting in RealtimeSettings.declared().items()}

settings = RealtimeSettings()
