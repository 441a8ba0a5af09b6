"""Settings for realtime, read from one ``REALTIME`` dict in the Django settings.

Every value has a documented default (``docs/settings.md``). Values are looked up on
each access, so ``override_settings(REALTIME=...)`` works in tests, and nothing is read
at import time.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings

DEFAULTS: dict[str, Any] = {
    # Largest client frame, and largest encoded publication, in bytes.
    "MAX_MESSAGE_SIZE": 64 * 1024,
    # Subscriptions one connection may hold at once.
    "MAX_SUBSCRIPTIONS": 100,
    # Failed ``auth`` attempts before the connection is closed (close code 4002).
    "MAX_AUTH_FAILURES": 5,
    # Consecutive malformed frames (invalid_data, message_too_large) before the
    # connection is closed (close code 4001). A valid command resets the count.
    "MAX_INVALID_FRAMES": 10,
    # Frames queued for a client that reads too slowly before it is dropped (close code 4004).
    "MAX_PENDING_FRAMES": 1000,
    # Sustained client frames per second per connection, and the burst allowed above it.
    "RATE_LIMIT": 100.0,
    "RATE_BURST": 200,
    # Seconds between the periodic re-checks of live connections against the database
    # (revoked or expired keys, deactivated channels). Changes made through the models
    # are also pushed at once; this catches the rest (bulk updates, expiry, other tools).
    "REVALIDATE_INTERVAL": 5.0,
    # Origins a browser may connect from, as scheme://host[:port] or host patterns
    # (".example.com" matches subdomains, "*" matches any). None means: derived from
    # ALLOWED_HOSTS, the way Channels' AllowedHostsOriginValidator does it.
    "ALLOWED_ORIGINS": None,
    # Most publications a subscribe with "since" replays; a longer gap is not recovered
    # (the reply says recovered: false and the client reloads, e.g. from the history).
    "RECOVERY_LIMIT": 500,
    # Seconds a presence entry lives without being renewed (its process renews it every
    # third of this): how long a member of a process that died unannounced stays listed.
    "PRESENCE_TTL": 30.0,
    # Dotted path to the permission policy class.
    "POLICY": "realtime.permissions.Policy",
    # Where the WebSocket consumer is mounted (realtime.routing uses /realtime/ws); the
    # template tag builds the URL it gives browsers from it.
    "WS_PATH": "/realtime/ws",
    # Seconds a signed browser token can be presented after it is issued.
    "TOKEN_TTL": 300,
    # Dotted path to grant(request) -> realtime.tokens.Grant | None: who gets which token.
    "TOKEN_GRANT": "realtime.tokens.default_grant",
    # The channel layer alias used to carry publications between processes.
    "CHANNEL_LAYER": "default",
    # Bayeux (docs/bayeux.md). Seconds a /meta/connect is held when there is nothing to
    # deliver (advice.timeout); seconds a client waits between connects (advice.interval);
    # seconds a session lives with no connect held and no WebSocket, after which it is
    # forgotten and its client must handshake again.
    "BAYEUX_TIMEOUT": 30.0,
    "BAYEUX_INTERVAL": 0.0,
    "BAYEUX_MAX_INTERVAL": 10.0,
    # Service channel -> dotted path of its handler (realtime.bayeux.services).
    "BAYEUX_SERVICES": {},
}


class RealtimeSettings:
    """Attribute access to the merged ``REALTIME`` settings."""

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Unknown realtime setting: {name}")
        user = getattr(django_settings, "REALTIME", None) or {}
        return user.get(name, DEFAULTS[name])

    @staticmethod
    def user_settings() -> dict[str, Any]:
        return dict(getattr(django_settings, "REALTIME", None) or {})


settings = RealtimeSettings()
