"""Settings for realtime, read from one ``REALTIME`` dict in the Django settings.

Each setting is declared once, below, with its type, default and rules; that one
declaration gives ``settings.MAX_MESSAGE_SIZE`` its type (for users' type checkers and
ours), ``DEFAULTS``, and the system checks (``realtime.checks``). Values are looked up
on each access, so ``override_settings(REALTIME=...)`` works in tests, and nothing is
read at import time. Every setting is documented in ``docs/settings.md``.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from django.conf import settings as django_settings
from django.core.signals import setting_changed

T = TypeVar("T")

# What a setting's value must be; the check says it in these words.
NON_NEGATIVE_INT = "a finite, non-negative int"
NON_NEGATIVE_NUMBER = "a finite, non-negative number"
POSITIVE_NUMBER = "a finite number greater than 0"
POSITIVE_INT = "a finite int greater than 0"
OPTIONAL_POSITIVE_NUMBER = "None or a finite number greater than 0"
HANDLERS = 'a dict of channel names (or "*") to dotted paths'
DOTTED_PATH = "the dotted path of an importable object"
STRING = "a non-empty string"
PATH = "a URL path starting with /"
ORIGINS = "None or a list of strings"
SERVICES = "a dict"
NETWORKS = "a list of IP addresses or networks (CIDR)"
OPTIONAL_LIMIT = "None (no limit) or a finite, non-negative int"
OPTIONAL_POSITIVE_INT = "None (no limit) or an int greater than 0"
BOOLEAN = "True or False"


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
        elif self.kind == POSITIVE_INT:
            ok = numeric and isinstance(value, int) and value > 0
        elif self.kind == OPTIONAL_POSITIVE_NUMBER:
            ok = value is None or (numeric and 0 < value < math.inf)
        elif self.kind == HANDLERS:
            ok = isinstance(value, dict)
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
        elif self.kind == NETWORKS:
            ok = isinstance(value, (list, tuple, set, frozenset)) and all(_is_network(v) for v in value)
        elif self.kind in (OPTIONAL_LIMIT, OPTIONAL_POSITIVE_INT):
            low = 1 if self.kind == OPTIONAL_POSITIVE_INT else 0
            ok = value is None or (numeric and isinstance(value, int) and value >= low)
        elif self.kind == BOOLEAN:
            ok = isinstance(value, bool)
        else:  # pragma: no cover - a declaration below names an unknown kind
            raise AssertionError(self.kind)
        return None if ok else f"must be {self.kind}, not {value!r}"


def _is_network(value: Any) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except (TypeError, ValueError):
        return False
    return isinstance(value, str)


# The project's REALTIME dict, once read: a setting is read on every publish and every
# delivery decision, and Django's settings object is a LazyObject whose every attribute
# access costs a few calls. Forgotten when Django says a setting changed
# (override_settings): this module's receiver is connected first, so every other
# receiver of setting_changed already reads the new values.
_user_settings: dict[str, Any] | None = None


def _user() -> dict[str, Any]:
    global _user_settings
    value = _user_settings
    if value is None:
        value = getattr(django_settings, "REALTIME", None)
        value = _user_settings = value if isinstance(value, dict) else {}
    return value


def forget_user_settings(setting: str = "REALTIME", **kwargs: Any) -> None:
    """Read ``settings.REALTIME`` again on the next access (it was replaced)."""
    global _user_settings
    if setting == "REALTIME":
        _user_settings = None


setting_changed.connect(forget_user_settings, dispatch_uid="realtime.conf.settings")


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
    # Server-sent events (docs/protocol.md): where realtime.routing.http_urlpatterns mounts
    # the stream (the JS client's fallback and the default CloudEvents source use it);
    # seconds between the heartbeat comments that keep proxies from closing an idle
    # stream; seconds a browser waits before reconnecting (the stream's "retry:").
    SSE_PATH = Setting[str]("/realtime/sse", PATH, "realtime.E009")
    SSE_HEARTBEAT = Setting[float](15.0, POSITIVE_NUMBER)
    SSE_RETRY = Setting[float](3.0, NON_NEGATIVE_NUMBER)
    # Seconds a complete page of a channel's HTTP log may be cached (it never changes):
    # publicly on channels with anonymous read, privately otherwise. 0: revalidate always.
    LOG_MAX_AGE = Setting[int](365 * 24 * 3600, NON_NEGATIVE_INT)
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
    # The server API (docs/operations.md): seconds a call waits for every server process
    # to answer; a process that has not answered by then is reported as missing.
    API_TIMEOUT = Setting[float](2.0, POSITIVE_NUMBER)
    # Addresses (REMOTE_ADDR) that may read /realtime/metrics without credentials, e.g.
    # ["10.0.0.0/8"] for the Prometheus servers. Others need an admin key (or a read-write
    # key on all channels) or a staff session.
    METRICS_ALLOWED_IPS = Setting["list[str]"]([], NETWORKS)

    # Programming realtime from Django (docs/hooks.md). Seconds a connection authenticated
    # with a browser token stays authenticated without a ``refresh`` (None: until it logs
    # out); tokens then carry the end of their session.
    TOKEN_SESSION_TTL = Setting["float | None"](None, OPTIONAL_POSITIVE_NUMBER)
    # Policy decisions each connection keeps (for the channels its patterns deliver and
    # those it publishes on); when full, they are forgotten and asked again.
    DECISION_CACHE_SIZE = Setting[int](1000, NON_NEGATIVE_INT)
    # Lifecycle signals waiting for their receivers, per process, before new ones are
    # dropped; and seconds one signal's receivers may take before they are abandoned.
    SIGNAL_QUEUE_SIZE = Setting[int](10_000, POSITIVE_INT)
    SIGNAL_TIMEOUT = Setting[float](10.0, POSITIVE_NUMBER)
    # Channel row name (or "*" for every channel) -> dotted path of the handler that
    # client publications pass through (realtime.handlers).
    PUBLISH_HANDLERS = Setting["dict[str, str]"]({}, HANDLERS, "realtime.E020")
    # Seconds a publish handler or an RPC method may take (handler_timeout after that).
    HANDLER_TIMEOUT = Setting[float](10.0, POSITIVE_NUMBER)
    # Largest encoded RPC result, in bytes.
    RPC_MAX_RESULT_SIZE = Setting[int](256 * 1024, NON_NEGATIVE_INT)
    # Webhooks (realtime.webhooks): events queued per endpoint and process (the oldest
    # are dropped beyond it), events per POST, seconds per POST, attempts per batch, and
    # the back-off between attempts (doubling from the first delay up to the largest).
    WEBHOOK_QUEUE_SIZE = Setting[int](10_000, POSITIVE_INT)
    WEBHOOK_BATCH_SIZE = Setting[int](100, POSITIVE_INT)
    WEBHOOK_TIMEOUT = Setting[float](5.0, POSITIVE_NUMBER)
    WEBHOOK_MAX_ATTEMPTS = Setting[int](5, POSITIVE_INT)
    WEBHOOK_RETRY_DELAY = Setting[float](1.0, NON_NEGATIVE_NUMBER)
    WEBHOOK_MAX_RETRY_DELAY = Setting[float](60.0, NON_NEGATIVE_NUMBER)

    # Whether a Bayeux handshake over GET (callback-polling, JSONP) may carry an access
    # key's secret. The secret would sit in the URL, where access logs keep it, so only
    # signed tokens (short-lived) are taken there by default.
    BAYEUX_SECRETS_OVER_GET = Setting[bool](False, BOOLEAN)

    # Limits a hostile client meets (docs/deployment.md#hardening). None: no limit.
    # Seconds a WebSocket may stay open without authenticating or subscribing (it may
    # subscribe anonymously to anonymous-read channels) before it is closed (4006); 0: never.
    STALE_TIMEOUT = Setting[float](10.0, NON_NEGATIVE_NUMBER)
    # WebSockets one server process holds at once (4007), and from one client address (4008).
    MAX_CONNECTIONS = Setting["int | None"](10_000, OPTIONAL_LIMIT)
    MAX_CONNECTIONS_PER_ADDRESS = Setting["int | None"](100, OPTIONAL_LIMIT)
    # Subscriptions held at once by every connection and Bayeux session of one address.
    MAX_SUBSCRIPTIONS_PER_ADDRESS = Setting["int | None"](1_000, OPTIONAL_LIMIT)
    # Bayeux sessions one client address may hold in one process.
    MAX_BAYEUX_SESSIONS_PER_ADDRESS = Setting["int | None"](100, OPTIONAL_LIMIT)
    # Broker topics (Redis subscriptions) a process listens to because anonymous clients
    # asked for them; authenticated clients are not held to it.
    MAX_ANONYMOUS_TOPICS = Setting["int | None"](1_000, OPTIONAL_LIMIT)
    # Failed authentications one client address may make per AUTH_FAILURE_WINDOW seconds
    # (a token bucket: the allowance comes back steadily over the window), on every path:
    # auth, the Bayeux handshake, the HTTP endpoints. Beyond it: too_many_auth_failures.
    AUTH_FAILURES_PER_ADDRESS = Setting["int | None"](100, OPTIONAL_POSITIVE_INT)
    AUTH_FAILURE_WINDOW = Setting[float](60.0, POSITIVE_NUMBER)
    # Proxies whose X-Forwarded-For is believed: the client address is then the nearest
    # address in it that is not one of them. Empty: the address the ASGI server gives.
    TRUSTED_PROXIES = Setting["list[str]"]([], NETWORKS, "realtime.E010")
    # Seconds a client has to send a complete request head (an HTTP request or a
    # WebSocket upgrade), under realtime's uvicorn protocol classes (realtime.servers.uvicorn).
    HANDSHAKE_TIMEOUT = Setting[float](10.0, POSITIVE_NUMBER)

    @classmethod
    def declared(cls) -> dict[str, Setting]:
        """Every setting, by name, in declaration order."""
        return {name: value for name, value in vars(cls).items() if isinstance(value, Setting)}

    @staticmethod
    def user_settings() -> dict[str, Any]:
        return dict(_user())


DEFAULTS: dict[str, Any] = {name: setting.default for name, setting in RealtimeSettings.declared().items()}

settings = RealtimeSettings()
