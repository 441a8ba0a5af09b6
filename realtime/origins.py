"""Which browser origins may open a WebSocket.

Browsers always send ``Origin``; a page on another site could otherwise open a socket
that rides on the user's cookies. Clients that send no Origin (servers, scripts) are
let through: they are no browser page, and they get no more than anyone else (a key,
a signed token, or anonymous read; credentials never come from cookies).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings as django_settings
from django.http.request import validate_host

from .conf import settings


def _allowed_hosts() -> list[str]:
    hosts = list(django_settings.ALLOWED_HOSTS)
    if django_settings.DEBUG and not hosts:
        hosts = [".localhost", "127.0.0.1", "[::1]"]
    return hosts


def origin_allowed(origin: str | None) -> bool:
    """True if a connection with this Origin header value may proceed."""
    if origin is None:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:  # unbalanced brackets, or a bracketed host that is no IP address
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    configured = settings.ALLOWED_ORIGINS
    if configured is None:
        return validate_host(host, _allowed_hosts())
    for allowed in configured:
        if allowed == "*" or allowed.rstrip("/") == origin:
            return True
        if "://" not in allowed and validate_host(host, [allowed]):
            return True
    return False


def origin_from_scope(scope: dict) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"origin":
            return value.decode("latin-1")
    return None
